"""The parent's side of load_tests.control: starts that process and sends it commands (JSON lines).

No gevent and no Ray here, so both the locust runs (gevent-patched) and the benchmark (plain threads) use it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from load_tests.local_ray import apply_local_ray_env
from load_tests.sampler import read_samples
from pipeline.core.paths import REPO_ROOT


class Control:
    """The control process: starts with the app ready (or connected), answers kill/stop commands."""

    def __init__(self, out_dir: Path, *, url: str | None, ray_address: str | None, model_dir: str | None,
                 num_cpus: float | str, upscale_delay: float | None, downscale_delay: float | None,
                 start_timeout_s: float = 600) -> None:
        self.samples_path = out_dir / "samples.jsonl"
        self.samples_path.unlink(missing_ok=True)
        command = [sys.executable, "-m", "load_tests.control", "--samples", str(self.samples_path), "--num-cpus", str(num_cpus)]
        if ray_address:
            command += ["--ray-address", ray_address]
        if model_dir:
            command += ["--model-dir", model_dir]
        if upscale_delay is not None:
            command += ["--upscale-delay", str(upscale_delay)]
        if downscale_delay is not None:
            command += ["--downscale-delay", str(downscale_delay)]
        self.log = open(out_dir / "control.log", "w")
        # Token auth as `make serve` has it; a fresh local cluster also binds its node to 127.0.0.1 (a driver
        # joining a running cluster must not: its node address would be loopback). docs/security.md.
        env = apply_local_ray_env(dict(os.environ), local_node=not ray_address)
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=env)
        self.url, self.config, self.start_timeout_s = url, None, start_timeout_s
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def wait_ready(self) -> None:
        """Blocks until the app answers /readyz (a fresh app) or the cluster is connected (a running one)."""
        ready = self._wait_event("ready", self.start_timeout_s)
        self.url = self.url or ready["url"]
        self.config = ready["config"]
        self.ray_address = ready.get("ray_address")
        self.metrics_urls = ready.get("metrics_urls", [])  # each node's Prometheus endpoint (Serve's batch metrics)
        if not self.url:
            self.stop()
            raise ValueError("a running app needs its URL (--url)")

    def _wait_event(self, name: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"control process sent no '{name}' in {timeout_s:.0f}s: see {self.log.name}") from None
            if line is None:
                raise RuntimeError(f"control process exited (code {self.process.wait()}): see {self.log.name}")
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    return event

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def kill(self, deployment: str) -> dict:
        self.process.stdin.write(json.dumps({"cmd": "kill", "deployment": deployment}) + "\n")
        self.process.stdin.flush()
        return self._wait_event("killed", 60)

    def deploy(self, user_config: dict[str, dict], env_vars: dict[str, str] | None = None, args: dict | None = None) -> dict:
        """Live user_config changes, e.g. {"Detector": {"max_batch_size": 4}}, and changes to the app's
        runtime_env env_vars or args (which restart the replicas); returns once the app is ready."""
        command = {"cmd": "deploy", "user_config": user_config, "env_vars": env_vars or {}, "args": args or {}}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._wait_event("deployed", 300)

    def stop(self) -> list[dict]:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=120)
            except Exception:
                self.process.kill()  # our own child, by its handle
                self.process.wait()
        self.log.close()
        return read_samples(self.samples_path) if self.samples_path.exists() else []
