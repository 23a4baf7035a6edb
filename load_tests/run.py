"""One load run: the Ray-side control process (load_tests.control) plus locust as a library, in this process.

`import load_tests.run` imports locust, which monkey-patches this process with gevent: import it first (the
entry points do), and never use Ray here — that is what the control process is for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent
from locust.env import Environment
from locust.runners import STATE_STOPPED

from load_tests.control_process import Control
from load_tests.locustfile import PeakShape, RecognitionUser, Requests
from pipeline.core.settings import read_serve_config

__all__ = ["Control", "RunResult", "autoscaling", "run_load"]


@dataclass
class RunResult:
    url: str
    config: dict | None  # the config deployed (None for a running app we only connected to)
    t0: float  # wall time the load started
    end: float
    records: list[dict]
    samples: list[dict]
    kills: list[dict] = field(default_factory=list)


def run_load(control: Control, stages: list[tuple[float, int]], photos: list[tuple[str, bytes]], *,
             kills: list[tuple[float, str]] = (), client_timeout_s: float = 30.0) -> RunResult:
    """Drive `stages` ((until_s, users), ...) against the app; kill a replica of each deployment at its time."""
    Requests.prepare(photos)
    RecognitionUser.network_timeout = client_timeout_s
    environment = Environment(user_classes=[RecognitionUser], shape_class=PeakShape(stages), host=control.url,
                              stop_timeout=client_timeout_s + 5)  # users finish their request when the load stops
    runner = environment.create_local_runner()
    t0 = time.time()
    runner.start_shape()
    done_kills = []

    def killer(at: float, deployment: str) -> None:
        gevent.sleep(max(0.0, t0 + at - time.time()))
        done_kills.append(control.kill(deployment))

    killers = [gevent.spawn(killer, at, deployment) for at, deployment in kills]
    while runner.state != STATE_STOPPED or runner.shape_greenlet is not None:
        gevent.sleep(0.5)
    end = time.time()
    gevent.joinall(killers, timeout=60)
    runner.quit()
    gevent.sleep(2)  # a last status sample after the load
    samples = control.stop()
    return RunResult(control.url, control.config, t0, end, [r.to_dict() for r in Requests.records], samples, done_kills)


def autoscaling(config: dict | None) -> dict[str, dict]:
    """Each deployment's autoscaling_config, from the deployed config (or serve_config.yaml for a running app)."""
    if config is None:
        config = read_serve_config()
    return {d["name"]: d.get("autoscaling_config", {}) for d in config["applications"][0]["deployments"]}
