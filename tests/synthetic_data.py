"""Tiny image sets made in the tests: coloured rectangles on noise, as YOLO folders and labelled photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (210, 40, 40), "green": (40, 210, 40), "blue": (40, 40, 210)}


def make_yolo_folder(root: Path, count: int = 12, size: int = 80, seed: int = 0) -> Path:
    """root/images/train/*.jpg with one or two rectangles each, root/labels/train/*.txt over several categories
    (like Freiburg's 25), one background image without a label file."""
    rng = np.random.default_rng(seed)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
        lines = []
        for _ in range(0 if i == count - 1 else 1 + i % 2):
            w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
            x, y = (int(v) for v in rng.integers(0, size - max(w, h), 2))
            category = int(rng.integers(0, 25))
            pixels[y:y + h, x:x + w] = list(COLOURS.values())[category % 3]
            lines.append(f"{category} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        Image.fromarray(pixels).save(root / "images" / "train" / f"img{i:03d}.jpg", quality=95)
        if lines:
            (root / "labels" / "train" / f"img{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_labelled_photos(root: Path, per_class: int = 2, size: int = 72, seed: int = 1) -> Path:
    """Folder per class (red, green, blue): each photo is noise tinted by its class colour."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-25, 25, (size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{i}.jpg", quality=95)
    return root
