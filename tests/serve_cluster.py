"""A multi-node Serve cluster on this machine (`ray.cluster_utils.Cluster`) and what tests/test_cluster.py asks
of it: deploy through the dashboard's REST API as `serve deploy` does, wait for the app, add or lose a GPU node,
and where each replica runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from load_tests.serve_app import APP_NAME
from pipeline.core.paths import REPO_ROOT

REPORT = REPO_ROOT / "artifacts" / "cluster" / "placement.md"
WORKER_CPUS = 4  # room for the model replicas, the pending-replica check's included (its CPU must not be what it lacks)
WORKER_GPUS = 1


@dataclass
class ServeCluster:
    cluster: object  # ray.cluster_utils.Cluster
    tmp: Path
    dashboard: str  # http://127.0.0.1:<port>: where `serve deploy` sends the config
    url: str  # the HTTP port (every node's proxy binds it, SO_REUSEPORT)
    config: dict
    node_names: dict[str, str] = field(default_factory=dict)  # node id -> head, worker-1, worker-2
    deploy_s: float = 0.0
    reports: list[str] = field(default_factory=list)

    def add_gpu_node(self):
        node = self.cluster.add_node(num_cpus=WORKER_CPUS, num_gpus=WORKER_GPUS)
        self.node_names[node.node_id] = f"worker-{sum(n.startswith('worker') for n in self.node_names.values()) + 1}"
        return node

    def deploy(self, config: dict) -> None:
        """`serve deploy <file> --address <dashboard>` in a subprocess: the CLI users run, its REST call included."""
        path = self.tmp / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
        result = subprocess.run(
            [sys.executable, "-m", "ray.serve.scripts", "deploy", str(path), "--address", self.dashboard],
            capture_output=True, text=True, timeout=180, env=env, cwd=REPO_ROOT, check=False,
        )
        assert result.returncode == 0, f"serve deploy failed: {result.stdout[-2000:]}{result.stderr[-3000:]}"
        self.config = config

    def details(self) -> dict:
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        return ServeSubmissionClient(self.dashboard).get_serve_details()  # GET /api/serve/applications/, with the token

    def app(self) -> dict | None:
        return self.details().get("applications", {}).get(APP_NAME)

    def wait_running(self, timeout_s: float = 300) -> None:
        deadline, app = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            app = self.app()
            if app and app["status"] == "RUNNING":
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            if app and app["status"] in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise AssertionError(f"application {app['status']}: {app['message']}")
            time.sleep(1)
        raise TimeoutError(f"application not RUNNING after {timeout_s}s: {app and (app['status'], app['message'])}")

    def actor_pids(self, node_id: str) -> list[int]:
        """The process ids of the Serve actors alive on a node (its proxy and the replicas placed there)."""
        from ray.util.state import list_actors

        return [actor.pid for actor in list_actors(self.cluster.address, filters=[("ray_namespace", "=", "serve")],
                                                   detail=True, limit=1000)
                if actor.node_id == node_id and actor.state == "ALIVE" and actor.pid]

    def replicas(self) -> list[dict]:
        """Every replica of the app: deployment, replica, node (head / worker-N), CPU, GPU, state.

        The state is Serve's (RUNNING, STARTING, ...), or PENDING while Ray has placed no actor for it; CPU and GPU
        are what the replica's actor asked Ray for (its required resources)."""
        from ray.util.state import list_actors

        actors = {}
        for actor in list_actors(self.cluster.address, filters=[("ray_namespace", "=", "serve")], detail=True, limit=1000):
            if actor.state != "DEAD":
                actors[actor.name] = actor  # a replica's actor name is known before Ray has placed it
        rows = []
        for name, deployment in (self.app() or {}).get("deployments", {}).items():
            for replica in deployment.get("replicas", []):
                actor = actors.get(replica.get("actor_name") or f"SERVE_REPLICA::{APP_NAME}#{name}#{replica['replica_id']}")
                resources = actor.required_resources if actor else {}
                state = replica["state"]
                if actor is not None and actor.state == "PENDING_CREATION":
                    state = "PENDING"
                rows.append({
                    "deployment": name, "replica": replica["replica_id"],
                    "node": self.node_names.get(replica.get("node_id") or (actor.node_id if actor else None) or "", "-"),
                    "CPU": resources.get("CPU", 0.0), "GPU": resources.get("GPU", 0.0), "state": state,
                })
        order = ("Recognizer", "Detector", "Classifier", "Catalog")
        return sorted(rows, key=lambda r: (order.index(r["deployment"]), r["node"], r["replica"]))

    def report(self, title: str, rows: list[dict], note: str = "") -> str:
        lines = [f"### {title}", "", "| deployment | replica | node | CPU | GPU | state |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['deployment']} | {r['replica']} | {r['node']} | {r['CPU']:g} | {r['GPU']:g} | {r['state']} |" for r in rows]
        text = "\n".join(lines + ([""] + [note] if note else [])) + "\n"
        print("\n" + text, flush=True)
        self.reports.append(text)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text("## tests/test_cluster.py: replica placement\n\n" + "\n".join(self.reports))
        return text

    def replica_logs(self) -> dict[str, str]:
        """Serve's replica log files (the nodes share this machine's session folder): file name -> text."""
        logs = {}
        for path in self.tmp.glob("ray/session_*/logs/serve/replica_*.log*"):
            logs[path.name] = path.read_text(errors="replace")
        return logs


def model_args(config: dict) -> dict:
    return config["applications"][0]["args"]


def deployment_entry(config: dict, name: str) -> dict:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def wait_for_dashboard(url: str, timeout_s: float = 60) -> None:
    """The dashboard's HTTP server answers (401 without the token is an answer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/api/version", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"dashboard at {url} not up after {timeout_s}s")
