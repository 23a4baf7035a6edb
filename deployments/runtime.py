"""What a replica learns about the resources Ray gave it, so model threads match its CPU share."""

from __future__ import annotations

import logging
import math

import ray

logger = logging.getLogger("ray.serve")


def replica_cpu_threads() -> int:
    """Threads for torch/TensorFlow: the replica's CPU share rounded up (a 0.5-CPU replica gets 1)."""
    if not ray.is_initialized():  # outside a Ray worker: plain scripts, tests
        return 1
    share = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, math.ceil(share))


def warn_gpu_fallback(deployment: str, gpus: list[str], framework: str) -> None:
    """Logs, at once, that Ray gave this replica GPUs its framework cannot use, so it runs on CPU. Written out
    now: Serve's throughput mode buffers replica logs (1,000 lines), which would hide it for a long time."""
    logger.warning("%s: Ray assigned GPU %s to this replica but %s sees no GPU: falling back to CPU",
                   deployment, ",".join(gpus), framework)
    for handler in logger.handlers:
        handler.flush()


def replica_gpu_ids() -> list[str]:
    """GPUs Ray assigned to this replica (empty on CPU-only nodes and when num_gpus is 0)."""
    if not ray.is_initialized():
        return []
    return list(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
