"""A local autoscaling Ray cluster on this machine, with Ray's `fake_multinode` node provider (Ray's docs, "Testing
Autoscaling Locally"): a head started with the whole autoscaler config (the PyPI wheel has no example.yaml), worker
nodes that are real raylets the autoscaler starts and stops here, every node on 127.0.0.1 with token auth; and what
is where on it (nodes, replicas, the requests each node's replicas handled). load_tests.elastic runs its peak on it."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from load_tests.local_ray import LOCAL_RAY_ENV, free_port
from load_tests.server_process import stop_group
from pipeline.core.paths import REPO_ROOT

APP_NAME = "recognizer"
HEAD_CPUS = 1
WORKER_TYPE = "cpu_worker"
WORKER_CPUS = 1
MAX_WORKERS = 3
IDLE_TIMEOUT_MINUTES = 0.2  # a worker node with nothing placed on it is removed after 12 s
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node: the photos in flight, not 30% of the machine's memory each
REQUEST_METRIC = "ray_serve_deployment_request_counter"
FAKE_NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # how the fake_multinode provider gives each raylet its node id


def autoscaling_config(gcs_port: int) -> dict:
    """The whole autoscaler config (the PyPI wheel has no example.yaml to start from)."""
    return {
        "cluster_name": "elastic",
        "max_workers": MAX_WORKERS,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": f"127.0.0.1:{gcs_port}",  # else the machine's interface address: loopback only here
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": HEAD_CPUS, "catalog_volume": 1}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": {"CPU": WORKER_CPUS, "object_store_memory": OBJECT_STORE_BYTES},
                          "node_config": {}, "min_workers": 0, "max_workers": MAX_WORKERS},
        },
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class Cluster:
    """A head started with `ray start --head --block` and the autoscaling config, and what runs on it."""

    tmp: Path
    gcs_port: int
    dashboard_port: int
    http_port: int
    head: subprocess.Popen
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def serve_deploy(self, config: dict) -> None:
        path = self.tmp / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        result = subprocess.run([str(self.bin_dir / "serve"), "deploy", str(path), "--address", self.dashboard],
                                capture_output=True, text=True, timeout=180, cwd=REPO_ROOT, check=False)
        if result.returncode:
            raise RuntimeError(f"serve deploy failed: {result.stdout[-2000:]}{result.stderr[-3000:]}")

    def serve_details(self) -> dict:
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        return ServeSubmissionClient(self.dashboard).get_serve_details()

    def stop(self) -> None:
        """The head's process group, then anything else started for this cluster (the worker nodes' raylets and
        workers name its temporary folder on their command lines)."""
        if self.head.poll() is None:
            stop_group(self.head, 30)
        mine = [p for p in psutil.process_iter(["cmdline"]) if str(self.tmp) in " ".join(p.info["cmdline"] or [])]
        for process in mine:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(mine, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_cluster() -> Cluster:
    tmp = Path(tempfile.mkdtemp(prefix="el-", dir="/tmp"))  # short: Ray's socket paths live under it
    os.environ.update(LOCAL_RAY_ENV | {"RAY_TMPDIR": str(tmp), "RAY_metrics_report_interval_ms": "1000"})
    os.environ.pop("RAY_ADDRESS", None)
    bin_dir = Path(sys.executable).parent
    try:
        subprocess.run([str(bin_dir / "ray"), "get-auth-token", "--generate"], capture_output=True, check=True)  # once
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    gcs_port, dashboard_port, http_port = free_port(), free_port(), free_port()
    config_path = tmp / "autoscaling.yaml"
    config_path.write_text(yaml.safe_dump(autoscaling_config(gcs_port), sort_keys=False))
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         f"--num-cpus={HEAD_CPUS}", "--num-gpus=0", "--resources", json.dumps({"catalog_volume": 1}),
         f"--autoscaling-config={config_path}", f"--temp-dir={tmp}", f"--object-store-memory={OBJECT_STORE_BYTES}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}", "--disable-usage-stats"],
        env=os.environ | {"RAY_FAKE_CLUSTER": "1"}, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True, cwd=REPO_ROOT,
    )
    cluster = Cluster(tmp, gcs_port, dashboard_port, http_port, head, bin_dir)
    try:
        import ray

        deadline = time.monotonic() + 120
        while True:
            try:
                ray.init(address=f"127.0.0.1:{gcs_port}", namespace="elastic", log_to_driver=False)
                break
            except Exception:  # the GCS is not up yet
                if time.monotonic() > deadline or head.poll() is not None:
                    raise RuntimeError(f"the head did not start: {(tmp / 'head.log').read_text()[-3000:]}") from None
                time.sleep(1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def alive_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def is_head(node: dict) -> bool:
    return bool(node.get("Resources", {}).get("catalog_volume"))


def replicas_by_node(details: dict) -> list[dict]:
    """Every replica of the app: deployment, id, node id, state."""
    app = details.get("applications", {}).get(APP_NAME) or {}
    return [{"deployment": name, "replica": r["replica_id"], "node": r.get("node_id") or "", "state": r["state"],
             "pid": r.get("pid")}
            for name, deployment in app.get("deployments", {}).items() for r in deployment.get("replicas", [])]


def node_request_counts(metrics_port: int) -> Counter:
    """Requests the replicas on one node have handled, by deployment: its metrics agent's Prometheus endpoint
    (Serve's `ray_serve_deployment_request_counter`), which exports only that node's processes."""
    counts: Counter = Counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=5)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode("utf-8", "replace")
        connection.close()
    except OSError:
        return counts
    for line in text.splitlines():
        if line.startswith(REQUEST_METRIC) and f'application="{APP_NAME}"' in line:
            deployment = re.search(r'deployment="([^"]+)"', line)
            if deployment:
                counts[deployment.group(1)] += float(line.rsplit(" ", 1)[1])
    return counts


def status_without_token(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def wait_running(cluster: Cluster, timeout_s: float) -> None:
    deadline, status = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            app = cluster.serve_details().get("applications", {}).get(APP_NAME)
        except Exception:
            app = None
        status = app and app["status"]
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"application {status}: {app['message']}")
        time.sleep(1)
    raise TimeoutError(f"application not RUNNING after {timeout_s}s: {status}")


