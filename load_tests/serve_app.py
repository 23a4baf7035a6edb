"""Start the real application from serve_config.yaml on a local Ray, the way `serve run` does: for the tests
and the load tests (one home for both).

Only the model folder and the HTTP port are changed; everything else (resources, autoscaling, batching,
user_config) comes from the shipped serve_config.yaml, so tests and load tests exercise what users run.

Why `serve_start` + `deploy_apps` (Ray's `_private.api`) and not `serve.run(build_app(args))`: those two calls
are what `serve run serve_config.yaml` itself does, so the YAML's per-deployment settings (autoscaling,
user_config, queue limits) are applied by Serve's controller exactly as for users; `serve.run` on the built
app would drop them. `serve deploy`'s path (the dashboard's REST API) is tested in tests/test_cluster.py.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

import httpx
import ray
from ray import serve
from ray.serve._private import api as serve_private_api  # what `serve run config.yaml` itself calls
from ray.serve.config import ProxyLocation
from ray.serve.schema import ServeDeploySchema

from load_tests.local_ray import free_port  # noqa: F401  (re-exported: the tests take it from here)
from pipeline.core.settings import read_serve_config

APP_NAME = "recognizer"


def shipped_config(model_dir: Path | str | None = None, port: int | None = None) -> dict:
    """serve_config.yaml as shipped, on 127.0.0.1 (`port`: another HTTP port; `model_dir`: other models), with
    a new empty catalog in a temporary folder: tests and load tests never touch the repository's catalog_data/."""
    config = read_serve_config()
    config["applications"][0]["args"]["catalog_dir"] = tempfile.mkdtemp(prefix="catalog-")
    config["http_options"]["host"] = "127.0.0.1"
    if port is not None:
        config["http_options"]["port"] = port
    if model_dir is not None:
        config["applications"][0]["args"]["model_dir"] = str(model_dir)
    return config


def init_local_ray(num_cpus: float | None = 2) -> None:
    """The local Ray that tests and load tests start (num_cpus None: the machine's cores, as `serve run`).
    Replicas report metrics every second instead of every 10 s, so tests and benchmarks read fresh values."""
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    ray.init(num_cpus=num_cpus, include_dashboard=False, namespace="serve", log_to_driver=False)


class ServeApp:
    """A running application: `url`, `config` (as deployed) and `redeploy(config)` for live changes."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{config['http_options']['port']}"

    def deploy(self, config: dict) -> None:
        schema = ServeDeploySchema.model_validate(config)
        self.client.deploy_apps(schema, _blocking=False)
        self.config = copy.deepcopy(config)

    def start(self, timeout_s: float = 240) -> ServeApp:
        if not ray.is_initialized():
            init_local_ray()
        schema = ServeDeploySchema.model_validate(self.config)
        self.client = serve_private_api.serve_start(
            http_options=schema.http_options.model_dump(), proxy_location=ProxyLocation.EveryNode
        )
        self.deploy(self.config)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            status = serve.status().applications.get(APP_NAME)
            if status is not None and status.status == "RUNNING":
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(f"application failed: {status.message}")
            time.sleep(1)
        raise TimeoutError(f"application not ready after {timeout_s}s: {status}")

    def stop(self) -> None:
        serve.shutdown()
        ray.shutdown()
