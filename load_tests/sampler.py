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


def _value(enum_or_str) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def serve_status_snapshot(app_name: str = "recognizer") -> dict:
    """One sample: {"t": wall time, "app": status, "deployments": {name: {...}}}, each deployment with
    - "status", and "replicas": {state: n} (STARTING, RUNNING, STOPPING, ...);
    - "target": the replicas the autoscaler wants (Serve's DeploymentDetails.target_num_replicas);
    - "pending": STARTING replicas not yet on any node (Ray has not placed the actor: no room, or its worker
      is still starting); the other STARTING ones are placed and loading their model;
    - "resources": what one replica asks Ray for ({"CPU": 0.4, ...}).

    The details come from Serve's controller, as `serve.status()` gets them (it keeps only the state counts),
    and as the dashboard's /api/serve/applications/ and `serve status` show them.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client(raise_if_no_controller_running=False)
    details = ServeInstanceDetails(**client.get_serve_details()) if client is not None else None
    app = details.applications.get(app_name) if details is not None else None
    deployments = {}
    if app is not None:
        for name, deployment in app.deployments.items():
            states: dict[str, int] = {}
            pending = 0
            for replica in deployment.replicas:
                state = _value(replica.state)
                states[state] = states.get(state, 0) + 1
                pending += state == "STARTING" and not replica.node_id
            deployments[name] = {
                "status": _value(deployment.status),
                "replicas": states,
                "target": int(deployment.target_num_replicas),
                "pending": pending,
                "resources": {k: float(v) for k, v in (deployment.required_resources or {}).items()},
            }
    return {"t": time.time(), "app": _value(app.status) if app else "MISSING", "deployments": deployments}


def cluster_snapshot(gcs_address: str | None = None) -> dict:
    """Logical CPU/GPU of the cluster, what is free, and the resource requests Ray could not place yet
    ("unplaced": [{"bundle": {"CPU": 0.4}, "count": 1}], from the GCS's autoscaler state, as `ray status`
    shows under "Pending"; None when that state cannot be read)."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    out = {"total": {r: float(total.get(r, 0.0)) for r in ("CPU", "GPU")},
           "available": {r: float(free.get(r, 0.0)) for r in ("CPU", "GPU")}, "unplaced": None}
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(gcs_address or ray.get_runtime_context().gcs_address)
        out["unplaced"] = [{"bundle": dict(b.bundle), "count": int(b.count)}
                           for demand in status.resource_demands.ray_task_actor_demand for b in demand.bundles_by_count]
    except Exception:  # an older or remote GCS without it: the pending replica counts still tell
        pass
    return out


def _deployment(sample: dict, deployment: str) -> dict:
    return sample["deployments"].get(deployment, {})


def replica_count(sample: dict, deployment: str) -> int:
    """Replicas of a deployment that are starting or serving (pending ones included)."""
    states = _deployment(sample, deployment).get("replicas", {})
    return sum(n for state, n in states.items() if state not in GONE_STATES)


def running_count(sample: dict, deployment: str) -> int:
    return _deployment(sample, deployment).get("replicas", {}).get("RUNNING", 0)


def target_count(sample: dict, deployment: str) -> int:
    """The replicas the autoscaler wanted (samples without a target: the replicas there were)."""
    target = _deployment(sample, deployment).get("target")
    return replica_count(sample, deployment) if target is None else target


def pending_count(sample: dict, deployment: str) -> int:
    """Replicas not placed on a node yet (STARTING with no node)."""
    return _deployment(sample, deployment).get("pending", 0)


def starting_count(sample: dict, deployment: str) -> int:
    """Replicas placed and starting (loading their model): STARTING minus the pending ones."""
    states = _deployment(sample, deployment).get("replicas", {})
    return max(0, states.get("STARTING", 0) - pending_count(sample, deployment))


def unplaced_for(sample: dict, deployment: str) -> int | None:
    """Requests the cluster could not place that have this deployment's replica shape (None: not known).
    Deployments with the same shape (Detector and Classifier both 0.4 CPU) share the count."""
    cluster = sample.get("cluster") or {}
    if cluster.get("unplaced") is None:
        return None
    shape = _deployment(sample, deployment).get("resources") or {}

    def same(bundle: dict) -> bool:
        return all(abs(bundle.get(r, 0.0) - shape.get(r, 0.0)) < 1e-6 for r in ("CPU", "GPU")) and bool(shape)

    return sum(item["count"] for item in cluster["unplaced"] if same(item["bundle"]))


class Sampler:
    """Calls `snapshot()` every `interval_s` in a thread and appends each sample to a JSON-lines file."""

    def __init__(self, path: Path, snapshot: Callable[[], dict] = serve_status_snapshot, interval_s: float = 1.0) -> None:
        self.path, self.snapshot, self.interval_s = Path(path), snapshot, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-status-sampler", daemon=True)
        self.errors = 0

    def start(self) -> Sampler:
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
