"""The graph grown past one node by Ray's own autoscaler under a peak, and shrunk back after it.

    python -m load_tests.elastic [--clients 24] [--peak-s 150] [--settle-s 300] [--out artifacts/elastic]

A local autoscaling cluster on this machine with Ray's `fake_multinode` node provider (Ray's docs, "Testing
Autoscaling Locally"): its worker nodes are real raylets that Ray's autoscaler starts and stops here when
replicas wait for room. The head (1 CPU) holds Serve's controller, the proxy and one replica of each deployment
(Recognizer 0.2 + Detector 0.4 + Classifier 0.4 CPU, the Catalog beside its volume); the one worker node type
declares 1 CPU. serve_config.yaml goes on it with `serve deploy`, as shipped but for: max_replicas 3 (two more of
each than the head holds), the HTTP port on 127.0.0.1, the proxy on the head alone (what a load balancer sends
to) and an admin key for the enrollment during the peak.

The run, from 127.0.0.1 only, bounded in time and count:
1. quiet: the app on the head alone;
2. peak: `clients` closed-loop clients POST real photos to /v1/recognize. Serve asks for replicas that do not fit,
   the autoscaler adds nodes, replicas start there and answer (each node's Prometheus endpoint counts what its
   replicas handled). During it a product is enrolled, and every answer from 1 s after the enrollment on names
   it; then one worker node is lost (its raylet killed) and every request is still answered;
3. after: no load; Serve scales replicas down and the autoscaler removes the idle nodes, until the head is alone.
Token auth stays on (RAY_AUTH_MODE=token), every node on 127.0.0.1. The timeline (a row a second: nodes,
replicas per deployment on the head and on workers, answers and errors) and the checks go to <out>/report.md
and report.json; the exit status is 0 when every check passed. Run it from a serving install (`make serve`'s) to
show that the nodes need neither TensorFlow nor torch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from load_tests.autoscaling_cluster import (
    FAKE_NODE_ID_ENV,
    HEAD_CPUS,
    MAX_WORKERS,
    WORKER_CPUS,
    Cluster,
    alive_nodes,
    is_head,
    node_request_counts,
    replicas_by_node,
    start_cluster,
    status_without_token,
    wait_running,
)
from load_tests.bodies import multipart_body
from load_tests.outcomes import OK, classify
from pipeline.core.paths import REPO_ROOT
from pipeline.core.settings import read_serve_config

MAX_REPLICAS = 3
CLIENT_TIMEOUT_S = 90.0  # above http_options.request_timeout_s (60 s): the proxy gives up first
MAX_REQUESTS = 100_000  # a bound on the run's count, whatever its time
MODEL_DEPLOYMENTS = ("Detector", "Classifier")
DEPLOYMENTS = ("Recognizer", *MODEL_DEPLOYMENTS)
ENROLLED_SKU = "elastic-probe"
CATALOG_DEADLINE_S = 1.0
PROBES = 24
LOSS_GRACE_S = 5.0  # requests routed to the lost node's replicas finish this soon after Ray sees it dead


# --- the cluster -------------------------------------------------------------------------------------------------


def elastic_serve_config(port: int, catalog_dir: str, admin_key: str) -> dict:
    """serve_config.yaml with max_replicas raised past the head, on 127.0.0.1:`port`, the proxy on the head."""
    config = read_serve_config()
    config["proxy_location"] = "HeadOnly"
    config["http_options"].update(host="127.0.0.1", port=port)
    application = config["applications"][0]
    application["args"].update(catalog_dir=catalog_dir, node_cpus=HEAD_CPUS + MAX_WORKERS * WORKER_CPUS)
    application["runtime_env"]["env_vars"]["PRODUCT_ADMIN_KEY"] = admin_key
    for deployment in application["deployments"]:
        if deployment.get("autoscaling_config"):
            deployment["autoscaling_config"]["max_replicas"] = MAX_REPLICAS
    return config


# --- what is where -------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the peak started (negative: before it)
    nodes: int  # alive, the head included
    replicas: dict[str, dict[str, int]]  # deployment -> {"head": RUNNING there, "workers": RUNNING on workers, "waiting": not RUNNING}
    worker_requests: dict[str, float]  # deployment -> requests handled so far by its replicas on worker nodes
    answered: int = 0  # requests that finished in this second, by outcome
    ok: int = 0


@dataclass
class Record:
    start: float
    end: float
    status: int
    kind: str
    retry_after: str | None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # what happened when (s since the peak started)
    records: list[Record] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    starts: dict[str, list[float]] = field(default_factory=dict)  # deployment -> seconds from seen placed to RUNNING, worker replicas
    lost_node: str | None = None
    max_worker_nodes: int = 0
    node_addresses: set[str] = field(default_factory=set)  # every node's address: 127.0.0.1 alone
    max_rss_mb: dict[str, float] = field(default_factory=dict)  # deployment -> the largest replica's resident memory
    dashboard_without_token: int = 0  # the HTTP status of Serve's REST API asked without the token (401: auth on)


# --- the load ------------------------------------------------------------------------------------------------------

def post(url: str, path: str, body: bytes, headers: dict, timeout: float = CLIENT_TIMEOUT_S,
         connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes, dict, http.client.HTTPConnection | None]:
    host, port = url.removeprefix("http://").split(":")
    connection = connection or http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, data, dict(response.getheaders()), connection
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        raise ConnectionError(f"{type(error).__name__}: {error}") from error


class Load:
    """`clients` threads, each POSTing the photos in turn to /v1/recognize on a kept-alive connection until
    stopped (or the run's time and count bounds)."""

    def __init__(self, url: str, photos: list[bytes], clients: int, t0: float, deadline: float) -> None:
        self.url, self.photos, self.t0, self.deadline = url, photos, t0, deadline
        self.records: list[Record] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_S + 5)

    def _client(self, index: int) -> None:
        connection = None
        turn = index
        while not self.stop.is_set() and time.monotonic() < self.deadline and len(self.records) < MAX_REQUESTS:
            body, headers = multipart_body(self.photos[turn % len(self.photos)])
            turn += 1
            started = time.monotonic()
            try:
                status, data, answer_headers, connection = post(self.url, "/v1/recognize", body, headers, connection=connection)
                kind = classify(status, data, None, answer_headers)
                retry_after = answer_headers.get("retry-after") or answer_headers.get("Retry-After")
            except ConnectionError as error:
                status, kind, retry_after, connection = 0, classify(0, b"", error), None, None
            with self.lock:
                self.records.append(Record(started - self.t0, time.monotonic() - self.t0, status, kind, retry_after))
            if status in (503, 0):
                time.sleep(float(retry_after or 1.0))  # as a client told Retry-After would


# --- the run -------------------------------------------------------------------------------------------------------

def peak_photos() -> tuple[list[bytes], bytes]:
    """Real store photos for the load, and an unseen product's shelf photo (Freiburg) to enroll and ask for."""
    from load_tests.photos import freiburg_held_back_photos, grocery_val_photos

    load = [path.read_bytes() for path in grocery_val_photos(6) + freiburg_held_back_photos(6)[1:]]
    return load, freiburg_held_back_photos(6)[0].read_bytes()


def enroll(url: str, admin_key: str, photo: bytes) -> tuple[int, dict]:
    boundary = secrets.token_hex(16)
    parts = [('name="sku"', ENROLLED_SKU.encode()), ('name="label"', b"Elastic probe_box_1"),
             ('name="photo"; filename="probe.jpg"\r\nContent-Type: image/jpeg', photo)]
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; {head}\r\n\r\n".encode() + value + b"\r\n"
                    for head, value in parts) + f"--{boundary}--\r\n".encode()
    status, data, _, _ = post(url, "/v1/catalog/products", body, {
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Admin-Key": admin_key})
    return status, json.loads(data or b"{}")


def probe(url: str, photo: bytes) -> dict:
    """One /v1/recognize of the enrolled photo: whether its largest product is named as the enrolled sku."""
    body, headers = multipart_body(photo)
    status, data, _, _ = post(url, "/v1/recognize", body, headers)
    answer = json.loads(data) if status == 200 else {}
    first = (answer.get("products") or [{}])[0]
    return {"status": status, "sku": first.get("sku"), "label_source": first.get("label_source"),
            "catalog": (answer.get("models") or {}).get("catalog")}


def observe(cluster: Cluster, run: Run, t0: float, seen: dict) -> Sample:
    """One row of the timeline; `seen` remembers when each replica was first seen placed (for start times)."""
    nodes = alive_nodes()
    workers = {node["NodeID"]: node for node in nodes if not is_head(node)}
    head_ids = {node["NodeID"] for node in nodes if is_head(node)}
    now = time.monotonic() - t0
    replicas = {name: {"head": 0, "workers": 0, "waiting": 0} for name in DEPLOYMENTS}
    try:
        rows = replicas_by_node(cluster.serve_details())
    except Exception:  # the dashboard busy: a row without replicas
        rows = []
    for row in rows:
        if row["deployment"] not in replicas:
            continue
        if row["state"] != "RUNNING":
            replicas[row["deployment"]]["waiting"] += 1
            seen.setdefault(row["replica"], now)
            continue
        try:
            rss = psutil.Process(row["pid"]).memory_info().rss / 2**20 if row["pid"] else 0.0
        except psutil.Error:
            rss = 0.0
        run.max_rss_mb[row["deployment"]] = max(run.max_rss_mb.get(row["deployment"], 0.0), rss)
        where = "head" if row["node"] in head_ids else "workers"
        replicas[row["deployment"]][where] += 1
        if where == "workers" and row["replica"] in seen and not seen.get(row["replica"] + ":running"):
            seen[row["replica"] + ":running"] = now
            run.starts.setdefault(row["deployment"], []).append(now - seen[row["replica"]])
    worker_requests: Counter = Counter()
    for node in workers.values():
        worker_requests.update(node_request_counts(node["MetricsExportPort"]))
    if run.lost_node and run.lost_node not in workers and "lost node seen dead by Ray" not in run.events:
        run.events["lost node seen dead by Ray"] = round(now, 1)
    run.max_worker_nodes = max(run.max_worker_nodes, len(workers))
    run.node_addresses.update(node["NodeManagerAddress"] for node in nodes)
    return Sample(round(now, 1), len(nodes), replicas, {name: worker_requests.get(name, 0.0) for name in DEPLOYMENTS})


def lose_a_worker_node(cluster: Cluster, run: Run, t0: float) -> None:
    """Kills the raylet of the worker node holding the most model replicas (its replicas die with it)."""
    from ray.util.state import list_actors

    workers = {node["NodeID"]: node for node in alive_nodes() if not is_head(node)}
    model_actors = Counter(actor.node_id for actor in list_actors(cluster.dashboard, filters=[("state", "=", "ALIVE")],
                                                                limit=1000, detail=True)
                           if actor.node_id in workers and any(f"#{name}#" in (actor.name or "") for name in MODEL_DEPLOYMENTS))
    if not model_actors:
        return
    node_id = model_actors.most_common(1)[0][0]
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] != "raylet" or process.environ().get(FAKE_NODE_ID_ENV) != node_id:
                continue
            process.kill()
        except psutil.Error:
            continue
        run.lost_node = node_id
        run.events["worker node lost (raylet killed)"] = round(time.monotonic() - t0, 1)
        return
    raise RuntimeError(f"no raylet process for worker node {node_id}")


def run_elastic(clients: int, peak_s: float, settle_s: float, quiet_s: float = 5.0) -> Run:
    load_photos, enrolled_photo = peak_photos()
    cluster = start_cluster()
    run, seen = Run(), {}
    admin_key = secrets.token_urlsafe(16)
    try:
        catalog_dir = tempfile.mkdtemp(prefix="catalog-", dir=cluster.tmp)
        started = time.monotonic()
        cluster.serve_deploy(elastic_serve_config(cluster.http_port, catalog_dir, admin_key))
        wait_running(cluster, timeout_s=300)
        run.dashboard_without_token = status_without_token(cluster.dashboard_port, "/api/serve/applications/")
        t0 = time.monotonic() + quiet_s
        run.events["cluster up and app running (s before the peak)"] = round(t0 - started, 1)
        while time.monotonic() < t0:
            run.samples.append(observe(cluster, run, t0, seen))
            time.sleep(1)
        load = Load(cluster.url, load_photos, clients, t0, t0 + peak_s)
        load.start()
        enrolled_at = lost = None
        while time.monotonic() < t0 + peak_s:
            sample = observe(cluster, run, t0, seen)
            run.samples.append(sample)
            now = time.monotonic() - t0
            if sample.nodes > 1 and "first worker node up" not in run.events:
                run.events["first worker node up"] = sample.t
            on_workers = [name for name in DEPLOYMENTS if sample.replicas[name]["workers"]]
            if on_workers and "first replica RUNNING on a worker node" not in run.events:
                run.events["first replica RUNNING on a worker node"] = sample.t
            if any(sample.worker_requests.values()) and "first request answered on a worker node" not in run.events:
                run.events["first request answered on a worker node"] = sample.t
            grown = all(sample.worker_requests[name] > 0 for name in MODEL_DEPLOYMENTS) and sample.nodes - 1 >= 2
            if enrolled_at is None and (grown or now > peak_s * 0.5):
                status, answer = enroll(cluster.url, admin_key, enrolled_photo)
                enrolled_at = time.monotonic()
                run.events[f"product enrolled (HTTP {status})"] = round(enrolled_at - t0, 1)
                time.sleep(max(0.0, enrolled_at + CATALOG_DEADLINE_S - time.monotonic()))
                run.probes = [probe(cluster.url, enrolled_photo) for _ in range(PROBES)]
                probed = f"{PROBES} answers of the enrolled photo, from {CATALOG_DEADLINE_S:g} s after it"
                run.events[probed] = round(time.monotonic() - t0, 1)
            elif enrolled_at is not None and lost is None and now > (run.events.get("first worker node up", now) + 15):
                lose_a_worker_node(cluster, run, t0)
                lost = True
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - now)))
        load.join()
        run.records = load.records
        run.events["peak over"] = round(time.monotonic() - t0, 1)
        while time.monotonic() < t0 + peak_s + settle_s:
            sample = observe(cluster, run, t0, seen)
            run.samples.append(sample)
            on_head = all(sample.replicas[name]["workers"] == 0 and sample.replicas[name]["waiting"] == 0 for name in DEPLOYMENTS)
            if sample.nodes == 1 and on_head:
                run.events["back to the head alone"] = sample.t
                break
            time.sleep(1)
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
    for sample in run.samples:  # answers per second of the timeline, by when they finished
        done = [r for r in run.records if sample.t - 1 < r.end <= sample.t]
        sample.answered, sample.ok = len(done), sum(r.kind == OK for r in done)
    return run


# --- the checks and the report -------------------------------------------------------------------------------------

def checks(run: Run, peak_s: float, settle_s: float) -> dict[str, tuple[bool, str]]:
    kinds = Counter(r.kind for r in run.records)
    total = len(run.records)
    refused = [r for r in run.records if r.kind != OK]
    lost_at = run.events.get("worker node lost (raylet killed)")
    seen_dead = run.events.get("lost node seen dead by Ray", math.inf)

    def lost_with_the_node(r: Record) -> bool:
        """Sent to a replica on the lost node before Ray had seen it dead: Serve's proxy answers those 500."""
        return r.status == 500 and lost_at is not None and lost_at <= r.end <= seen_dead + LOSS_GRACE_S

    bad = [r for r in refused if not (r.status == 503 and r.retry_after) and not lost_with_the_node(r)]
    unanswered = [r for r in run.records if r.status == 0]
    last = run.samples[-1] if run.samples else None
    worker_requests = {name: max((s.worker_requests[name] for s in run.samples), default=0) for name in DEPLOYMENTS}
    back = run.events.get("back to the head alone")
    after_peak = back - run.events["peak over"] if back is not None else None
    named = [p for p in run.probes if p["status"] == 200 and p["sku"] == ENROLLED_SKU and p["label_source"] == "catalog"]
    return {
        "worker nodes added under the peak ≥ 2": (run.max_worker_nodes >= 2, f"{run.max_worker_nodes} at most at once"),
        "every model deployment answered from a worker node": (
            all(worker_requests[name] > 0 for name in MODEL_DEPLOYMENTS),
            ", ".join(f"{name} {worker_requests[name]:.0f}" for name in DEPLOYMENTS) + " requests handled on worker nodes"),
        "answers other than 200 only 503 with Retry-After (or 500 for a request lost with the node), under 1%": (
            not bad and len(refused) < 0.01 * max(total, 1),
            f"{total} requests: " + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
            + f"; lost with the node: {sum(map(lost_with_the_node, refused))}"),
        "no request unanswered": (not unanswered, f"{len(unanswered)} without an HTTP answer"),
        "enrolled → answered within 1 s, every answer after it": (
            bool(run.probes) and len(named) == len(run.probes),
            f"{len(named)} of {len(run.probes)} answers from {CATALOG_DEADLINE_S:g} s after the enrollment name it"),
        "a worker node lost under load": (run.lost_node is not None, f"node {run.lost_node or '-'}"),
        "token auth on, every node on 127.0.0.1": (
            run.dashboard_without_token == 401 and run.node_addresses == {"127.0.0.1"},
            f"Serve's REST API without the token: HTTP {run.dashboard_without_token}; node addresses: "
            f"{', '.join(sorted(run.node_addresses))}"),
        "back to the head alone within 5 minutes after the peak": (
            after_peak is not None and after_peak <= 300 and last is not None and last.nodes == 1,
            f"{after_peak:.0f} s after the peak" if after_peak is not None else f"not within {settle_s:.0f} s"),
    }


def report(run: Run, results: dict[str, tuple[bool, str]], out: Path, command: str) -> str:
    lines = ["# Elastic run: the graph grown past one node by Ray's autoscaler, and back", "",
             f"`{command}` ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} CPUs)", "",
             "| check | passed | measured |", "| --- | --- | --- |"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {text} |" for name, (ok, text) in results.items()]
    lines += ["", "| event | s since the peak started |", "| --- | --- |"]
    lines += [f"| {name} | {t:g} |" for name, t in sorted(run.events.items(), key=lambda item: item[1])]
    if run.starts:
        lines += ["", "Replica start on a new node (seen placed → RUNNING, 1 s resolution): " + "; ".join(
            f"{name} {', '.join(f'{s:.0f}' for s in starts)} s" for name, starts in run.starts.items())]
    lines += ["", f"Nodes' addresses: {', '.join(sorted(run.node_addresses))}. Largest replica's resident memory during the run: "
              + ", ".join(f"{name} {mb:.0f} MB" for name, mb in run.max_rss_mb.items())]
    lines += ["", "Timeline (every 5th sample, about one a second; replicas RUNNING on the head + on workers, + waiting):", "",
              "| t (s) | nodes | Recognizer | Detector | Classifier | answers/s | non-200/s |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for sample in run.samples[::5]:
        cells = [f"{r['head']}+{r['workers']}" + (f" (+{r['waiting']})" if r["waiting"] else "")
                 for r in (sample.replicas[name] for name in DEPLOYMENTS)]
        lines.append(f"| {sample.t:g} | {sample.nodes} | {' | '.join(cells)} | {sample.answered} | {sample.answered - sample.ok} |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps({
        "checks": {name: {"passed": ok, "measured": text} for name, (ok, text) in results.items()},
        "events": run.events, "starts": run.starts, "probes": run.probes, "max_rss_mb": run.max_rss_mb,
        "node_addresses": sorted(run.node_addresses),
        "samples": [asdict(s) for s in run.samples], "records": [asdict(r) for r in run.records]}, indent=1))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=24, help="closed-loop clients during the peak")
    parser.add_argument("--peak-s", type=float, default=150, help="how long the peak lasts")
    parser.add_argument("--settle-s", type=float, default=300, help="at most this long for the head to be alone again")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "artifacts" / "elastic")
    args = parser.parse_args(argv)
    run = run_elastic(args.clients, args.peak_s, args.settle_s)
    results = checks(run, args.peak_s, args.settle_s)
    command = "python -m load_tests.elastic " + " ".join(argv if argv is not None else sys.argv[1:])
    print(report(run, results, args.out, command.strip()), flush=True)
    return 0 if all(ok for ok, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
