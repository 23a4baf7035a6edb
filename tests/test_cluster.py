"""The service on more than one machine, on Ray's own multi-node harness (`ray.cluster_utils.Cluster`).

One cluster for every assertion (a module fixture), all on this machine: a CPU-only head and a worker node that
declares one GPU (a logical one: this machine has none, so the model replicas fall back to CPU and log it).
serve_config.yaml goes on it the way `serve deploy serve_config.yaml` sends it: the `serve deploy` CLI, in a
subprocess, against the head's dashboard REST API, with token auth on (RAY_AUTH_MODE=token, the token in
~/.ray/auth_token). Only the HTTP host (127.0.0.1) and port (a free one) differ from the shipped file.

What it checks: with `accelerator: auto`, Detector and Classifier replicas land on the GPU node with their GPU
fractions, the Catalog on the head (its volume's node) and the Recognizer with no GPU; at most 1/fraction model
replicas share the GPU and the next one
stays pending; the answers are those of the in-process recognition; losing the GPU node's raylet under load
hangs no request (each is answered, or refused with a status a client retries; only a request in flight on the
lost node's own proxy loses its connection) and a new GPU node brings the app back.

The cluster is isolated from other Ray instances on this machine: its own RAY_TMPDIR (so the
`ray_current_cluster` address file that the harness writes does not redirect anyone else's `ray.init()`), a
free dashboard port, dashboard agent port and HTTP port. The placement tables are printed (`pytest -s`) and
written to artifacts/cluster/placement.md.
"""

from __future__ import annotations

import base64
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from load_tests.outcomes import OK, classify, read_answer
from load_tests.serve_app import free_port, shipped_config
from tests.serve_cluster import WORKER_CPUS, WORKER_GPUS, ServeCluster, deployment_entry, model_args, wait_for_dashboard

pytestmark = [pytest.mark.cluster, pytest.mark.models]  # the shipped models, served on the cluster


HEAD_CPUS = 2  # logical CPUs: Serve's controller and proxies take none, the Recognizer 0.2 a replica
CLIENT_TIMEOUT_S = 75.0  # above http_options.request_timeout_s (60 s): the proxy gives up first
MODEL_DEPLOYMENTS = ("Detector", "Classifier")
FALLBACK_LOG = "falling back to CPU"


# --- the cluster ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def serve_cluster():
    saved_tmpdir = os.environ.get("RAY_TMPDIR")
    tmp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths live under it
    os.environ["RAY_TMPDIR"] = str(tmp)
    import ray
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # left over by an earlier module: this driver joins the cluster below instead
        ray.shutdown()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)  # as ray.init does: ~/.ray/auth_token
    cluster = None
    try:
        started = time.monotonic()
        dashboard_port = free_port()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": HEAD_CPUS, "num_gpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "resources": {"catalog_volume": 1},  # the head holds the catalog's volume, as deploy/rayservice.yaml's
            "dashboard_port": dashboard_port, "dashboard_agent_listen_port": free_port(),
        })
        config = shipped_config(port=free_port())
        context = ServeCluster(cluster, tmp, f"http://127.0.0.1:{dashboard_port}",
                               f"http://127.0.0.1:{config['http_options']['port']}", config)
        context.node_names[cluster.head_node.node_id] = "head"
        context.add_gpu_node()
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="test_cluster", log_to_driver=False)
        wait_for_dashboard(context.dashboard)
        context.deploy(config)
        context.wait_running()
        context.deploy_s = time.monotonic() - started
        print(f"\ncluster up and serve_config.yaml deployed through the dashboard in {context.deploy_s:.0f}s", flush=True)
        yield context
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if saved_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved_tmpdir
        shutil.rmtree(tmp, ignore_errors=True)


# --- placement ------------------------------------------------------------------------------------------------

def test_gpu_fractions_go_to_the_gpu_node_the_catalog_to_its_volume_and_the_ingress_takes_no_gpu(serve_cluster):
    args = model_args(serve_cluster.config)
    rows = serve_cluster.replicas()
    serve_cluster.report("serve_config.yaml deployed (accelerator: auto)", rows,
                         f"head: {HEAD_CPUS} CPU; worker-1: {WORKER_CPUS} CPU + {WORKER_GPUS} GPU (logical; no CUDA here)")
    by_deployment = {name: [r for r in rows if r["deployment"] == name] for name in ("Recognizer", *MODEL_DEPLOYMENTS, "Catalog")}
    assert all(by_deployment.values()), rows
    assert [row["node"] for row in by_deployment["Catalog"]] == ["head"], rows  # beside its volume
    # The Recognizer asks for CPU only, so Ray places it on either node: Serve starts the replicas in build order
    # (Detector, Classifier, Catalog, then the ingress) and Ray's SPREAD policy moves on to the next node after
    # each; with the Catalog pinned to the head, the ingress now lands on the GPU node's spare CPU. It takes no GPU.
    for row in by_deployment["Recognizer"]:
        assert (row["node"] in ("head", "worker-1"), row["GPU"], row["state"]) == (True, 0, "RUNNING"), row
        assert row["CPU"] == pytest.approx(args["recognizer_num_cpus"])
    for name in MODEL_DEPLOYMENTS:
        for row in by_deployment[name]:
            assert (row["node"], row["state"]) == ("worker-1", "RUNNING"), row
            assert row["GPU"] == pytest.approx(args[f"{name.lower()}_num_gpus"])
            assert row["CPU"] == pytest.approx(args[f"{name.lower()}_num_cpus"])


def test_each_model_replica_logs_its_cpu_fallback(serve_cluster):
    """Ray gave each model replica a GPU share, but there is no CUDA here: each says so in its log."""
    logs = serve_cluster.replica_logs()
    running = [r for r in serve_cluster.replicas() if r["deployment"] in MODEL_DEPLOYMENTS and r["state"] == "RUNNING"]
    assert running
    for row in running:
        text = next((t for name, t in logs.items() if row["replica"] in name), "")
        assert FALLBACK_LOG in text, f"{row['deployment']} replica {row['replica']} did not log its CPU fallback"
        assert f"{row['deployment']}: Ray assigned GPU" in text


def test_one_gpu_holds_one_over_fraction_model_replicas_and_the_next_waits(serve_cluster):
    """Detector replicas raised past what the GPU holds (a variant of the config, deployed the same way): the GPU
    fills up to 1 (1/0.25 = 4 model replicas with the shipped fractions) and the one more stays PENDING."""
    shipped = serve_cluster.config
    args = model_args(shipped)
    classifiers = sum(1 for r in serve_cluster.replicas() if r["deployment"] == "Classifier" and r["state"] == "RUNNING")
    room = WORKER_GPUS - classifiers * args["classifier_num_gpus"]
    fit = math.floor(room / args["detector_num_gpus"] + 1e-9)
    wanted = fit + 1
    assert wanted * args["detector_num_cpus"] + classifiers * args["classifier_num_cpus"] <= WORKER_CPUS, \
        "the worker's CPUs must hold them all: what the extra replica lacks is GPU"
    variant = yaml.safe_load(yaml.safe_dump(shipped))
    scaling = deployment_entry(variant, "Detector")["autoscaling_config"]
    scaling["min_replicas"] = scaling["max_replicas"] = wanted
    serve_cluster.deploy(variant)
    try:
        deadline, rows = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            rows = serve_cluster.replicas()
            detectors = [r for r in rows if r["deployment"] == "Detector"]
            if len(detectors) == wanted and sum(r["state"] == "RUNNING" for r in detectors) == fit:
                break
            time.sleep(1)
        time.sleep(5)  # and the extra one stays pending
        rows = serve_cluster.replicas()
        serve_cluster.report(
            f"Detector raised to {wanted} replicas (min = max = {wanted}), {classifiers} Classifier", rows,
            f"GPU on worker-1: {classifiers} x {args['classifier_num_gpus']:g} + {fit} x {args['detector_num_gpus']:g} "
            f"= {WORKER_GPUS:g}; the {wanted}th Detector waits for a GPU share")
        on_gpu = [r for r in rows if r["GPU"] > 0 and r["state"] == "RUNNING"]
        assert sum(r["GPU"] for r in on_gpu) == pytest.approx(WORKER_GPUS)
        assert all(r["node"] == "worker-1" for r in on_gpu)
        assert len(on_gpu) == classifiers + fit
        if args["detector_num_gpus"] == args["classifier_num_gpus"]:
            assert len(on_gpu) == round(WORKER_GPUS / args["detector_num_gpus"])  # 1/fraction replicas a GPU
        waiting = [r for r in rows if r["deployment"] == "Detector" and r["state"] != "RUNNING"]
        assert [r["state"] for r in waiting] == ["PENDING"], rows
        assert waiting[0]["node"] == "-"
    finally:
        serve_cluster.deploy(shipped)
    serve_cluster.wait_running()


# --- answers --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos_and_labels():
    """Real photos and what the in-process recognition (no Ray, same models and settings) answers for /hello."""
    from load_tests.inprocess import InProcessPipeline
    from load_tests.photos import grocery_val_photos

    photos = [path.read_bytes() for path in grocery_val_photos(4)]
    # The cluster has a GPU node, so `auto` serves the framework runtimes (there on CPU: the GPU is Ray's only).
    pipeline = InProcessPipeline(None, threads=1, classifier_runtime="savedmodel", detector_runtime="torch")
    return photos, pipeline.recognize(photos)


@pytest.mark.data
def test_answers_across_nodes_are_the_in_process_answers(serve_cluster, photos_and_labels):
    photos, labels = photos_and_labels
    for data, label in zip(photos, labels):
        hello = httpx.post(f"{serve_cluster.url}/hello", files={"img": ("photo.jpg", data, "image/jpeg")}, timeout=120)
        assert hello.status_code == 200, hello.text
        assert base64.b64decode(hello.json()["item"]).decode("utf-8") == label
        v1 = httpx.post(f"{serve_cluster.url}/v1/recognize", files={"image": ("photo.jpg", data, "image/jpeg")}, timeout=120)
        assert v1.status_code == 200, v1.text
        assert v1.json()["products"][0]["candidates"][0]["label"] == label


# --- losing the GPU node under load ---------------------------------------------------------------------------

@dataclass
class Outcome:
    start: float
    end: float
    status: int
    kind: str
    source: str | None
    code: str | None
    error: str | None


def send_until(url: str, photos: list[bytes], stop: threading.Event, deadline: float, out: list[Outcome], worker: int) -> None:
    """One client: POST /hello again and again (a new connection each time) until `stop` or `deadline`."""
    index = worker
    while not stop.is_set() and time.monotonic() < deadline:
        data = photos[index % len(photos)]
        index += 1
        started = time.monotonic()
        status, body, headers, error = 0, b"", None, None
        try:
            response = httpx.post(f"{url}/hello", files={"img": ("photo.jpg", data, "image/jpeg")}, timeout=CLIENT_TIMEOUT_S)
            status, body, headers = response.status_code, response.content, response.headers
        except httpx.HTTPError as exc:
            error = exc
        answer = read_answer(status, body, headers) if status else None
        out.append(Outcome(started, time.monotonic(), status, classify(status, body, error, headers),
                           answer and answer.source, answer and answer.code, error and f"{type(error).__name__}: {error}"))
        if status != 200:
            time.sleep(0.5)  # a client backs off a little on a refusal


def until_gone(pids: list[int], deadline: float) -> float:
    """When the last of these processes had exited (a zombie counts as gone: its sockets are closed); the deadline
    at the latest."""
    import psutil

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return time.monotonic()


@pytest.mark.data
def test_losing_the_gpu_node_under_load_hangs_no_request_and_a_new_node_recovers(serve_cluster, photos_and_labels):
    """SIGKILL the GPU node (its raylet and every process it started: both model replicas and that node's proxy)
    under 4 clients, then add another GPU node: no request outlives the proxy's request_timeout_s, each is
    answered or refused with a status a client retries (docs/operating.md, "Answers that are not JSON"), and /hello answers
    200 again once Serve has placed the model replicas on the new node."""
    photos, _ = photos_and_labels
    cluster = serve_cluster.cluster
    request_timeout_s = serve_cluster.config["http_options"]["request_timeout_s"]
    (worker,) = list(cluster.worker_nodes)
    outcomes: list[Outcome] = []
    stop = threading.Event()
    t0 = time.monotonic()
    clients = [threading.Thread(target=send_until, args=(serve_cluster.url, photos, stop, t0 + 60, outcomes, i), daemon=True)
               for i in range(4)]
    for client in clients:
        client.start()
    replaced_s = hello = None
    try:
        time.sleep(5)
        started_there = serve_cluster.actor_pids(worker.node_id)  # its proxy and model replicas
        killed_at = time.monotonic()
        cluster.remove_node(worker, allow_graceful=False)  # SIGKILL: the raylet and everything it started
        removed_at = time.monotonic()
        gone_at = until_gone(started_there, removed_at + 5)  # they exit after their raylet, not with it
        time.sleep(max(0.0, removed_at + 5 - time.monotonic()))
        added_at = time.monotonic()
        new_node = serve_cluster.node_names[serve_cluster.add_gpu_node().node_id]
        deadline = added_at + 240
        while time.monotonic() < deadline:  # until Serve runs a replica of each model on the new node
            rows = serve_cluster.replicas()
            if all(any(r["deployment"] == name and r["node"] == new_node and r["state"] == "RUNNING" for r in rows)
                   for name in MODEL_DEPLOYMENTS):
                replaced_s = time.monotonic() - added_at
                break
            time.sleep(1)
        if replaced_s is not None:
            sent = time.monotonic()
            hello = httpx.post(f"{serve_cluster.url}/hello", files={"img": ("photo.jpg", photos[0], "image/jpeg")},
                               timeout=CLIENT_TIMEOUT_S)
            hello_s = time.monotonic() - sent
    finally:
        stop.set()
        for client in clients:
            client.join(CLIENT_TIMEOUT_S + 10)
    assert not any(client.is_alive() for client in clients), "a client is still waiting past its timeout"
    kinds: dict[str, int] = {}
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    lines = [f"t={o.start - t0:5.1f}s..{o.end - t0:5.1f}s {o.status} {o.kind} ({o.source or 'no answer'}"
             f"{', ' + o.code if o.code else ''}{', ' + o.error if o.error else ''})"
             for o in sorted(outcomes, key=lambda o: o.start) if o.kind != OK or o.end >= killed_at]
    summary = (f"worker-1 killed (SIGKILL) at t={killed_at - t0:.1f}s under 4 clients (removed at t={removed_at - t0:.1f}s, "
               f"its processes gone at t={gone_at - t0:.1f}s); "
               f"{new_node} added at t={added_at - t0:.1f}s; a Detector and a Classifier RUNNING on it "
               f"{replaced_s and f'{replaced_s:.0f}'}s later; then /hello answered "
               f"{hello and hello.status_code} in {hello and f'{hello_s:.1f}'}s. {len(outcomes)} client requests: {kinds}. "
               "Those not answered 200 before the loss, or ending after it:\n\n" + "\n".join(f"    {line}" for line in lines))
    serve_cluster.report("after the GPU node was lost under load and a new one added", serve_cluster.replicas(), summary)
    assert replaced_s is not None, f"the model replicas not RUNNING on {new_node} within 240 s of adding it"
    # Sent once a Detector and a Classifier are RUNNING on the new node: a healthy graph answers in about a second
    # here; 30 s leaves room for a slow machine's first calls and still fails a request left waiting on the lost node.
    assert hello.status_code == 200 and hello_s < 30, (hello.status_code, hello_s)
    assert any(o.end >= killed_at for o in outcomes), "no request was in flight around the node loss"
    assert "timeout" not in kinds, "a request hung until the client's timeout"
    for o in outcomes:
        assert o.end - o.start <= request_timeout_s + 10, o
        if o.kind == OK:
            continue
        if o.kind == "connection":
            # Its connection was to worker-1's own proxy (EveryNode: every node's proxy binds the HTTP port), which
            # died with the node: only a request that reached it before its process was gone may end so.
            assert o.start <= gone_at and o.end <= gone_at + 10, o
        elif o.kind == "proxy_timeout_408":
            # Held by the Recognizer until a model replica came back, then given up by the proxy at request_timeout_s.
            assert o.source == "proxy" and o.end - o.start >= request_timeout_s - 1, o
        elif o.kind == "http_500":
            assert o.source == "proxy" and o.code == "replica_failed", o
        else:
            assert o.kind in ("error_503", "backpressure_503"), o
