"""Replica counts and states of every deployment, sampled from the Serve status API once a second.

The sampler runs in a process connected to the Ray cluster (`ray.serve.status()`), never in the locust
process: locust monkey-patches sockets and threads with gevent, which Ray's driver does not survive.
Each sample is one JSON line, so a run's samples can be read back, charted and checked after the fact.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

GONE_STATES = {"STOPPING", "STOPPED"}
"""Replicas on their way out; every other state (STARTING, RUNNING, ...) counts toward the deployment's size."""


def serve_status_snapshot(app_name: str = "recognizer") -> dict:
    """One sample: {"t": wall time, "app": status, "deployments": {name: {"status", "replicas": {state: n}}}}."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    deployments = {}
    if app is not None:
        for name, deployment in app.deployments.items():
            deployments[name] = {
                "status": str(getattr(deployment.status, "value", deployment.status)),
                "replicas": {str(getattr(state, "value", state)): int(n) for state, n in deployment.replica_states.items()},
            }
    return {"t": time.time(), "app": str(getattr(app.status, "value", app.status)) if app else "MISSING", "deployments": deployments}


def replica_count(sample: dict, deployment: str) -> int:
    """Replicas of a deployment that are starting or serving (what the autoscaler asked for, roughly)."""
    states = sample["deployments"].get(deployment, {}).get("replicas", {})
    return sum(n for state, n in states.items() if state not in GONE_STATES)


def running_count(sample: dict, deployment: str) -> int:
    return sample["deployments"].get(deployment, {}).get("replicas", {}).get("RUNNING", 0)


class Sampler:
    """Calls `snapshot()` every `interval_s` in a thread and appends each sample to a JSON-lines file."""

    def __init__(self, path: Path, snapshot: Callable[[], dict] = serve_status_snapshot, interval_s: float = 1.0) -> None:
        self.path, self.snapshot, self.interval_s = Path(path), snapshot, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-status-sampler", daemon=True)
        self.errors = 0

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    out.write(json.dumps(self.snapshot()) + "\n")
                    out.flush()
                except Exception:  # a status call can fail while a replica dies; the next second tries again
                    self.errors += 1
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
