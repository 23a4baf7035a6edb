"""The held-back split of a YOLO-format photo folder, by file name: the detector validates on it
(pipeline.train.yolo_detector), and the catalog's evaluation and the load tests take their unseen photos from it."""

from __future__ import annotations

import hashlib


def is_validation(name: str, fraction: float, seed: int) -> bool:
    """Deterministic split by file name: the same image lands on the same side on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
