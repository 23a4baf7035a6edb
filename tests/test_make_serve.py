"""The app as `make serve` runs it: `serve run` of the shipped serve_config.yaml (only the HTTP port and the model
folder changed; the proxy on 0.0.0.0 as shipped) with the Makefile's environment.

- No open control plane: every TCP socket the Ray processes listen on, and what it answers from
  outside without the cluster's token. Beyond loopback only the HTTP port may answer; the table is printed
  (`pytest -s tests/test_make_serve.py`). The `serve` CLI works with the token and is refused without it.
- The error contract outside the app: the proxy's own 408 and 503 (text/plain) and the app's JSON ones,
  got from the running app and told apart by the load-test client's reader (load_tests/outcomes.py); a killed
  ingress replica's in-flight requests and what a client retrying them gets.
Traffic goes to 127.0.0.1 only, in loops bounded in count and time.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from PIL import Image

from load_tests.control_process import Control
from load_tests.local_ray import LOCAL_RAY_ENV
from load_tests.outcomes import APP, BACKPRESSURE, PROXY, PROXY_TIMEOUT, classify, read_answer
from load_tests.serve_app import free_port
from pipeline.core.paths import REPO_ROOT as REPO
from pipeline.core.settings import read_serve_config
from pipeline.core.yolo_offline import offline_environment
from tests.listening_surface import Listener, listeners_of, probe
from tests.tiny_models import SHIPPED_MODEL_DIR

MODEL_DIR = os.environ.get("MODEL_LABEL_DIR") or str(SHIPPED_MODEL_DIR)
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 300

MAKEFILE_RAY_EXPORT = re.compile(r"^export\s+(RAY_\w+)\s*\??:?=\s*(\S+)\s*$", re.MULTILINE)


def makefile_ray_env() -> dict[str, str]:
    """The RAY_* names the Makefile exports to `make serve` and `make test`."""
    return dict(MAKEFILE_RAY_EXPORT.findall((REPO / "Makefile").read_text()))


def test_make_serve_the_tests_and_the_load_tests_start_ray_alike():
    assert makefile_ray_env() == LOCAL_RAY_ENV == {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# The app, started by `serve run` -----------------------------------------------------------------------------


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    config_path: Path
    log_path: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def ray_processes(self) -> dict[int, psutil.Process]:
        root = psutil.Process(self.process.pid)
        return {p.pid: p for p in [root, *root.children(recursive=True)]}

    def dashboard_url(self) -> str:
        found = re.search(r"dashboard at \S*?(http://[\d.]+:\d+)", re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace")))
        return found.group(1) if found else "http://127.0.0.1:8265"

    def gcs_address(self) -> str:
        """Where the GCS of this Ray listens (it picks a free port: `serve run` logs none)."""
        ports = [listener.port for listener in listeners_of(self.ray_processes()) if listener.process == "gcs_server"]
        assert len(ports) == 1, ports
        return f"127.0.0.1:{ports[0]}"


def start_served(folder: Path, ray_env: dict[str, str], extra_env: dict[str, str] | None = None) -> Served:
    """`serve run` of the shipped config on a free port, with `ray_env` for Ray (the Makefile's, for the tests) and
    `extra_env` for the replicas (an admin key); the catalog in `folder`/catalog. Returns once /readyz answers 200."""
    port = free_port()
    config = read_serve_config()
    config["http_options"]["port"] = port  # host stays 0.0.0.0: the proxy faces the network, as shipped
    config["applications"][0]["args"]["model_dir"] = MODEL_DIR
    config["applications"][0]["args"]["catalog_dir"] = str(folder / "catalog")  # not the repository's catalog_data/
    config_path = folder / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # What `make serve` runs with: the Makefile's exports, none of this process's other RAY_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | ray_env
    env |= offline_environment(REPO / ".yolo") | (extra_env or {})
    log_path = folder / "serve_run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(BIN / "serve"), "run", str(config_path)], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(process, port, config_path, log_path, env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"`serve run` exited with {process.returncode}:\n{served.log_tail()}")
            try:
                if httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200:
                    return served
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {START_TIMEOUT_S}s:\n{served.log_tail()}")
            time.sleep(2)
    except BaseException:
        stop(served)
        raise


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    served = start_served(tmp_path_factory.mktemp("make_serve"), makefile_ray_env())
    try:
        yield served
    finally:
        stop(served)


def stop(served: Served) -> None:
    """Ctrl-C, as a user stops `make serve` (Serve and the local Ray it started shut down); then, only what is
    still left of the processes it started, each by its pid."""
    started = list(served.ray_processes().values()) if served.process.poll() is None else []
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGINT)
        try:
            served.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()
    _, left = psutil.wait_procs(started, timeout=15)
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass


# What listens, and what it answers without the token --------------------------------------------------------

def ray_token() -> str | None:
    """The token `make serve`'s Ray uses (`ray get-auth-token`: ~/.ray/auth_token); None when there is none."""
    done = subprocess.run([str(BIN / "ray"), "get-auth-token"], capture_output=True, text=True, timeout=60, check=False,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | makefile_ray_env())
    return done.stdout.strip() or None if done.returncode == 0 else None


def listener_table(served: Served) -> list[Listener]:
    """Every TCP listener of `serve run` and its Ray processes, those beyond loopback probed; printed."""
    token = ray_token()
    assert token or served.env.get("RAY_AUTH_MODE") != "token", "token auth on, but `ray get-auth-token` has none"
    listeners = listeners_of(served.ray_processes())
    for listener in listeners:
        if listener.loopback:
            listener.verdict = "loopback only"
        elif listener.port == served.port and listener.process == "ray::ProxyActor":
            listener.verdict = "the HTTP port: public by design"
        else:
            probe(listener, token)
    print(f"\nTCP listeners of `serve run` and the Ray processes it started ({len(listeners)}):")
    print("\n".join(listener.row() for listener in listeners))
    return listeners


@pytest.mark.cluster
@pytest.mark.models
def test_beyond_loopback_only_the_http_port_answers_without_the_token(served):
    listeners = listener_table(served)

    names = {listener.process for listener in listeners}
    assert {"gcs_server", "raylet", "ray::ProxyActor", "ray::DashboardAgent"} <= names, names  # the scan saw Ray
    http = [listener for listener in listeners if listener.port == served.port]
    assert [(listener.address, listener.process) for listener in http] == [("0.0.0.0", "ray::ProxyActor")]
    open_doors = [listener.row() for listener in listeners if not listener.acceptable]
    assert not open_doors, "\n".join(open_doors)
    # The node is bound to loopback: Ray's own servers (GCS, raylet, dashboard and its job API, agents, metrics)
    # listen nowhere else; what does (the HTTP port, Serve's replica-to-replica gRPC) was probed above.
    control_plane = [listener for listener in listeners if not listener.process.startswith(("ray::ServeReplica", "ray::ProxyActor"))]
    assert all(listener.loopback for listener in control_plane), [listener.row() for listener in control_plane if not listener.loopback]


@pytest.mark.cluster
@pytest.mark.models
def test_the_serve_cli_and_the_job_api_want_the_token(served):
    dashboard = served.dashboard_url()
    status = subprocess.run([str(BIN / "serve"), "status", "-a", dashboard], env=served.env, capture_output=True, check=False,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "recognizer" in status.stdout and "RUNNING" in status.stdout

    refused = subprocess.run([str(BIN / "serve"), "status", "-a", dashboard], env=served.env | {"RAY_AUTH_MODE": "disabled"},
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "Unauthorized: Missing authentication token" in refused.stderr, refused.stderr[-2000:]

    deploy = subprocess.run([str(BIN / "serve"), "deploy", str(served.config_path), "-a", dashboard], env=served.env,
                            capture_output=True, text=True, timeout=120, check=False)  # the same config again: a no-op
    assert deploy.returncode == 0, deploy.stderr[-2000:]

    job = httpx.post(f"{dashboard}/api/jobs/", json={"entrypoint": "echo never run"}, timeout=10)
    assert job.status_code == 401, job.text  # the job API runs any command: not without the token
    listed = httpx.get(f"{dashboard}/api/jobs/", headers={"Authorization": f"Bearer {ray_token()}"}, timeout=10)
    assert listed.status_code == 200


# The proxy's own answers and the app's, told apart ------------------------------------------------------------


def raw_request(port: int, headers: dict[str, str], body: bytes, *, timeout_s: float = 30.0,
                started: threading.Event | None = None) -> tuple[int, dict[str, str], bytes, float]:
    """POST /v1/recognize over a plain socket: sends the headers and `body` (which may be less than the
    Content-Length declared, to keep the request waiting on its body), then reads the answer until the server
    closes or its Content-Length is in. Returns status, headers (lower-case names), body, seconds taken."""
    began = time.monotonic()
    head = "POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head.encode() + body)
        if started is not None:
            started.set()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1."):
            return 0, {}, data, time.monotonic() - began
        answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        chunked = "chunked" in answer_headers.get("transfer-encoding", "").lower()
        length = int(answer_headers.get("content-length", -1))
        while not (rest.endswith(b"0\r\n\r\n") if chunked else 0 <= length <= len(rest)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = dechunk(rest) if chunked else rest[:length] if length >= 0 else rest
        return int(lines[0].split()[1]), answer_headers, body, time.monotonic() - began


def dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2:]
    return body


def jpeg(width: int = 640, height: int = 480) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.cluster
@pytest.mark.models
def test_the_proxys_timeout_is_text_the_apps_is_json_and_a_client_tells_them_apart(served):
    waiting = {"Content-Type": "image/jpeg", "Content-Length": "100000"}  # 10 bytes sent of 100,000 declared
    # Ray Serve's proxy honours a per-request timeout header; 1 s runs out before the app's 2 s body deadline.
    status, headers, body, took = raw_request(served.port, waiting | {"x-request-timeout-seconds": "1"}, b"\xff\xd8" + b"\0" * 8)
    answer = read_answer(status, body, headers)
    assert status == 408 and headers["content-type"].startswith("text/plain") and b"timed out after 1.0s" in body, body
    assert (answer.source, answer.code, answer.retry, answer.retry_after_s) == (PROXY, "proxy_timeout", True, 1.0)
    assert classify(status, body, None, headers) == PROXY_TIMEOUT and took < 10

    status, headers, body, took = raw_request(served.port, waiting, b"\xff\xd8" + b"\0" * 8)
    answer = read_answer(status, body, headers)
    assert status == 408 and headers["content-type"] == "application/json" and headers["connection"] == "close", body
    assert (answer.source, answer.code, answer.retry) == (APP, "request_timeout", True)
    assert classify(status, body, None, headers) == "http_408" and took < 10


@pytest.mark.cluster
@pytest.mark.models
def test_a_killed_ingress_replica_fails_its_requests_with_text_500s_and_a_retry_is_answered(served, tmp_path):
    """The load tests' own fault injection (load_tests.control, joined to this cluster with its token) kills the
    only Recognizer replica while requests wait on their bodies in it; each gets the proxy's text/plain 500,
    and the same request sent again is answered once Serve has replaced the replica."""
    control = Control(tmp_path, url=served.url, ray_address=served.gcs_address(), model_dir=None, num_cpus=1,
                      upscale_delay=None, downscale_delay=None, start_timeout_s=120)
    try:
        control.wait_ready()
        mib = 1024 * 1024
        # 8 MiB of a declared 9 MiB (under the 10 MiB limit): the app reads them at once and then waits for the rest
        # for ~10 s (its deadline is 2 s + 1 s per MiB received), so the kill, sent 1 s after the bodies, lands while
        # the requests are in the replica with 9 s to spare (3 MiB gave 4 s: tight on a slow 2-core machine).
        headers = {"Content-Type": "image/jpeg", "Content-Length": str(9 * mib)}
        sent = [threading.Event() for _ in range(3)]
        with ThreadPoolExecutor(len(sent)) as pool:
            futures = [pool.submit(raw_request, served.port, headers, b"\xff\xd8" + b"\0" * (8 * mib - 2), started=event)
                       for event in sent]
            assert all(event.wait(10) for event in sent)
            time.sleep(1.0)
            killed = control.kill("Recognizer")
            answers = [future.result(timeout=60) for future in futures]
        assert killed["actor"], killed
    finally:
        control.stop()

    print(f"\nin flight when {killed['actor']} was killed:")
    for status, answer_headers, body, took in answers:
        outcome = read_answer(status, body, answer_headers)
        print(f"  {status} {answer_headers.get('content-type')} {body[:60]!r} after {took:.1f}s -> {outcome}")
    read = [read_answer(status, body, answer_headers) for status, answer_headers, body, _ in answers]
    assert any(a.status == 500 and a.source == PROXY and a.code == "replica_failed" for a in read), read
    assert all(a.retry for a in read), read  # 500 from the dead replica, or the app's 408 if the kill came late

    # The client retries (every endpoint is idempotent): bounded, as read_answer says.
    photo, began, tries = jpeg(), time.monotonic(), []
    while time.monotonic() - began < 120:
        response = httpx.post(f"{served.url}/v1/recognize", content=photo, headers={"content-type": "image/jpeg"}, timeout=90)
        answer = read_answer(response.status_code, response.content, response.headers)
        tries.append((response.status_code, answer.code))
        if response.status_code == 200:
            break
        assert answer.retry, tries
        time.sleep(answer.retry_after_s or 1.0)
    print(f"  retried: {tries} in {time.monotonic() - began:.1f}s")
    assert tries[-1][0] == 200, tries


@pytest.mark.cluster
@pytest.mark.models
def test_under_overload_the_proxy_sheds_with_text_503s_and_retry_after(served):
    """More requests at once than the ingress replicas hold (16 each; one, maybe two by now) plus the proxy's queue
    for them (32): the rest get the proxy's own 503, text/plain, with the Retry-After of serve_config.yaml's
    backpressure_config. Each request waits on its body and carries a 3 s proxy timeout: over in seconds."""
    headers = {"Content-Type": "image/jpeg", "Content-Length": "100000", "x-request-timeout-seconds": "3"}
    burst = 80
    with ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(lambda _: raw_request(served.port, headers, b"\xff\xd8" + b"\0" * 8, timeout_s=30), range(burst)))
    read = [(read_answer(status, body, h), h, body) for status, h, body, _ in answers]
    counts = Counter((a.status, a.source, a.code, h.get("retry-after")) for a, h, _ in read)
    print(f"\n{burst} at once: (status, source, code, Retry-After) -> n")
    for key, n in sorted(counts.items(), key=str):
        print(f"  {key} -> {n}")
    shed = [(a, h, body) for a, h, body in read if a.status == 503]
    assert shed, counts
    for answer, answer_headers, body in shed:
        assert answer_headers["content-type"].startswith("text/plain") and b"backpressure" in body
        assert answer_headers["retry-after"] == "1" and (answer.source, answer.code, answer.retry_after_s) == (PROXY, "overloaded", 1.0)
        assert classify(503, body, None, answer_headers) == BACKPRESSURE
    assert all(a.retry for a, _, _ in read), counts  # 503s, and 408s from the app or the proxy: all retryable
