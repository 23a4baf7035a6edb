"""Throughput benchmark: in one run, on this machine, with the same photos and the same models:

1. served  — the Ray Serve graph (serve_config.yaml, a fresh local app) at saturation over HTTP;
2. baseline — the original module's shape: one process, one request at a time, decode → YOLO → crop →
   classify with no batching, behind a plain HTTP server (load_tests.baseline_server);
   peer — what a user might pick instead of Ray Serve on one node: LitServe, one worker, its batching, around the
   same loop and models (load_tests.peer_server; `pip install -e '.[bench]'`);
   floor — Ray Serve's own cost for the graph's shape with no model work (load_tests.ray_floor);
3. raw     — the pipeline in one process with batching, no HTTP and no Ray, the next batch decoded in a
   thread while the models run (meant as this machine's upper bound; it runs the stages one after another,
   so a graph whose stages run in parallel processes can beat it);
then the ratios 1/2 and 1/3, the served graph once more with a model call per request (the ingress's gathering off,
gather_wait_s 0) and with Ray Serve's default request path instead of the throughput mode serve_config.yaml turns
on, and a sweep of max_batch_size (Detector and Classifier).
1 and 2 are driven by the same closed-loop client (`--concurrency` requests in flight, /hello as the
original business server sends it; `--endpoint /v1/recognize` asks the served graph for every product, and
the raw pipeline then does that work too: it always does what the measured endpoint does). Each measures
`--duration` seconds after `--warmup` seconds.

    python -m load_tests.benchmark [--model-dir DIR] [--duration 15] [--concurrency 16] [--sweep 1,4,8,16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from deployments.catalog.http_side import ADMIN_KEY_ENV
from load_tests.bodies import multipart_body, rest_template_body
from load_tests.local_ray import AUTH_ENV
from load_tests.photos import load_photos
from pipeline.core.paths import REPO_ROOT
from pipeline.core.settings import RecognizerSettings


def drive(url: str, bodies: list[tuple[bytes, dict]], concurrency: int, duration_s: float, warmup_s: float,
          endpoint: str = "/hello", timeout_s: float = 120) -> dict:
    """Closed-loop client: `concurrency` threads each send the next photo when the last is answered.

    Counts the 200s answered inside the measured window (after the warm-up); latencies of requests sent in it.
    """
    start = time.time()
    window = (start + warmup_s, start + warmup_s + duration_s)
    records: list[tuple[float, float, int, bytes]] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        index = offset
        with httpx.Client(timeout=timeout_s) as client:
            while time.time() < window[1]:
                body, headers = bodies[index % len(bodies)]
                index += concurrency
                sent = time.time()
                try:
                    response = client.post(url + endpoint, content=body, headers=headers)
                    status, content = response.status_code, response.content
                except httpx.HTTPError:
                    status, content = 0, b""
                with lock:
                    records.append((sent, time.time(), status, content))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = [r for r in records if window[0] <= r[1] <= window[1] and r[2] == 200]
    latencies = [done - sent for sent, done, status, _ in records if status == 200 and window[0] <= sent and done <= window[1] + timeout_s]
    statuses: dict[str, int] = {}
    for _, _, status, _ in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "images_per_s": len(answered) / duration_s,
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "statuses": statuses,
        "bodies": [r[3] for r in answered],
    }


HARNESS = ("load_tests.control",)
"""Processes of the benchmark's own harness besides this one (the load client): the control process, Ray's
driver here and the sampler of the served graph. With the client they are `harness_cores`, not the service's:
in production the load comes from elsewhere and `serve run`'s own driver sits idle."""


class CpuShare:
    """CPU seconds used, during a measurement, by this benchmark's process tree (client, servers, Ray and its
    replicas) and by everything else on the machine: on a shared machine the figures only compare when the
    others' share was similar. `service_cores` are the tree's less the harness's (the client in this process,
    the control process): what serving the photos cost."""

    def __enter__(self) -> CpuShare:
        import psutil

        self._psutil = psutil
        self._start = (time.monotonic(), self._busy(), self._ours())
        return self

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)

    def _ours(self) -> tuple[float, dict[int, tuple[str, float]]]:
        import resource

        finished = resource.getrusage(resource.RUSAGE_CHILDREN)  # children already waited for (the raw worker)
        total, by_pid = finished.ru_utime + finished.ru_stime, {}
        root = self._psutil.Process()
        for process in [root] + root.children(recursive=True):
            try:
                times = process.cpu_times()
                command = process.cmdline() or [process.name()]
                # Ray names its workers by role (ray::ServeReplica:recognizer:Detector, ray::ProxyActor, ...)
                title = command[0].split(" ")[0]
                title = title.split(".")[0] if title.startswith("ray::") else title.rsplit("/", 1)[-1]  # raylet, python, ...
                if process.pid == root.pid:
                    title = "this process (load client)"
                elif any(module in command for module in HARNESS):
                    title = next(module for module in HARNESS if module in command) + " (harness)"
                by_pid[process.pid] = (title[:60], times.user + times.system)
                total += times.user + times.system
            except self._psutil.Error:
                pass
        return total, by_pid

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self._start[0]
        ours_end, by_pid = self._ours()
        busy, ours = self._busy() - self._start[1], ours_end - self._start[2][0]
        groups: dict[str, float] = {}
        for pid, (title, seconds) in by_pid.items():
            groups[title] = groups.get(title, 0.0) + seconds - self._start[2][1].get(pid, (title, 0.0))[1]
        top = sorted(((round(v / wall, 2), k) for k, v in groups.items() if v / wall >= 0.02), reverse=True)
        harness = sum(max(0.0, v) for k, v in groups.items() if k.endswith("(load client)") or k.endswith("(harness)"))
        self.result = {"ours_cores": round(ours / wall, 2), "others_cores": round(max(0.0, busy - ours) / wall, 2),
                       "service_cores": round((ours - harness) / wall, 2), "harness_cores": round(harness / wall, 2),
                       "ours_cpu_s": round(ours, 1), "cores_by_process": {k: v for v, k in top}}


def stage_means(answers: list[bytes]) -> dict[str, float]:
    """Mean per-stage milliseconds from /v1/recognize answers (queueing included): where the time goes."""
    timings = [json.loads(a)["timings"] for a in answers]
    return {key: round(float(np.mean([t[key] for t in timings])), 1) for key in timings[0]} if timings else {}


def batch_metrics(urls: list[str]) -> dict[tuple[str, str], dict]:
    """Serve's own @serve.batch metrics per (deployment, replica), from each node's Prometheus endpoint:
    the batch-size histogram's cumulative buckets {le: count} (exact: load_tests.control gives it one bucket
    per size up to 64), and sum/count of the wait-to-fill and run times (sums are approximate)."""
    series: dict[tuple[str, str], dict] = {}
    for url in urls:
        try:
            text = httpx.get(url, timeout=10).text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            name = line.split("{", 1)[0]
            if not name.startswith("ray_serve_") or 'deployment="' not in line:
                continue
            label = lambda key, line=line: line.split(f'{key}="', 1)[1].split('"', 1)[0] if f'{key}="' in line else ""  # noqa: E731
            entry = series.setdefault((label("deployment"), label("replica")), {"sizes": {}})
            value = float(line.rsplit(" ", 1)[1])
            if name == "ray_serve_actual_batch_size_bucket" and label("le") != "+Inf":
                entry["sizes"][float(label("le"))] = value
            elif name in ("ray_serve_batch_wait_time_ms_sum", "ray_serve_batch_wait_time_ms_count",
                          "ray_serve_batch_execution_time_ms_sum", "ray_serve_batch_execution_time_ms_count"):
                entry[name[len("ray_serve_"):]] = value
    return series


def batch_summary(before: dict, after: dict) -> dict[str, dict]:
    """Batches formed between two scrapes, per deployment: how many, mean size, size histogram, mean wait for
    a batch to fill and mean run time (replicas gone in between are left out; new ones count from zero)."""
    sizes: dict[str, dict[float, float]] = {}
    times: dict[str, dict[str, float]] = {}
    for key, values in after.items():
        deployment, earlier = key[0], before.get(key, {"sizes": {}})
        cumulative = sorted((le, n - earlier["sizes"].get(le, 0.0)) for le, n in values["sizes"].items())
        previous = 0.0
        for le, n in cumulative:
            sizes.setdefault(deployment, {})[le] = sizes.get(deployment, {}).get(le, 0.0) + max(0.0, n - previous)
            previous = n
        for name, value in values.items():
            if name != "sizes":
                times.setdefault(deployment, {})[name] = times.get(deployment, {}).get(name, 0.0) + max(0.0, value - earlier.get(name, 0.0))
    out = {}
    for deployment, histogram in sizes.items():
        batches = sum(histogram.values())
        if batches:
            t = times.get(deployment, {})
            out[deployment] = {
                "batches": int(batches),
                "mean_batch": round(sum(le * n for le, n in histogram.items()) / batches, 2),
                "sizes": {int(le): int(n) for le, n in histogram.items() if n},
                "mean_wait_ms": round(t.get("batch_wait_time_ms_sum", 0) / max(1, t.get("batch_wait_time_ms_count", 0)), 1),
                "mean_run_ms": round(t.get("batch_execution_time_ms_sum", 0) / max(1, t.get("batch_execution_time_ms_count", 0)), 1),
            }
    return out


def wait_http(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def run_raw(model_dir: str | None, originals: int, phones: int, images: int, batch_sizes: list[int], runtimes: str,
            endpoint: str) -> dict:
    """Worker mode (a separate process, so torch and TensorFlow load fresh): images/s per batch size, with the
    runtimes `runtimes` names (CLASSIFIER+DETECTOR, as serve_config.yaml's args), doing `endpoint`'s work (/hello's:
    only what its answer reads, PhotoToAnswer's `answer_only`)."""
    from load_tests.inprocess import InProcessPipeline

    classifier_runtime, detector_runtime = runtime_pair(runtimes)
    photos = [data for _, data in load_photos(originals, phones)]
    pipeline = InProcessPipeline(model_dir, classifier_batch=max(16, max(batch_sizes)), classifier_runtime=classifier_runtime,
                                 detector_runtime=detector_runtime)
    out = {}
    for batch in batch_sizes:
        from load_tests.inprocess import StageTimes

        pipeline.times = StageTimes()
        stream = [photos[i % len(photos)] for i in range(images)]
        chunks = [stream[at:at + batch] for at in range(0, images, batch)]
        started, cpu_started = time.perf_counter(), time.process_time()
        pipeline.recognize_chunks(chunks, answer_only=endpoint == "/hello")
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        t = pipeline.times
        out[str(batch)] = {
            "images_per_s": images / elapsed,
            "cpu": {"ours_cores": round(cpu_s / elapsed, 2), "ours_cpu_s": round(cpu_s, 1)},  # this process, all threads
            "ms_per_image": {stage: round(1000 * getattr(t, stage) / images, 1) for stage in ("decode", "detect", "crop", "classify")},
            "crops_per_image": t.crops / images,
            "runtimes": pipeline.runtimes,
        }
    return out


def runtime_pair(runtimes: str) -> tuple[str, str]:
    """"tflite_int8+onnx" → ("tflite_int8", "onnx"); "auto" → both auto (the manifest's choice on CPU)."""
    classifier, _, detector = runtimes.partition("+")
    return classifier, detector or classifier


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir")
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sweep", default="1,4,8,16", help="max_batch_size values for Detector and Classifier ('' to skip)")
    p.add_argument("--sweep-wait", type=float, help="batch_wait_timeout_s for the sweep (default: as deployed)")
    p.add_argument("--served-warmup", type=float, default=20, help="seconds of saturation before the served figures")
    p.add_argument("--no-compare-serve-mode", dest="compare_serve_mode", action="store_false",
                   help="skip the served graph with Ray Serve's default mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=0)")
    p.add_argument("--catalog-products", type=int, default=25,
                   help="then /hello with this many products enrolled (one a Freiburg category, 3 shelf photos each; 0: skip)")
    p.add_argument("--raw-images", type=int, default=96)
    p.add_argument("--raw-batch", type=int, default=8, help="batch of the raw pipeline (the Detector's shipped max)")
    p.add_argument("--originals", type=int, default=8)
    p.add_argument("--phones", type=int, default=4)
    p.add_argument("--num-cpus", default="auto",
                   help="logical CPUs of the fresh local Ray: auto (the machine's cores, as `make serve`), "
                        "declared (serve_config.yaml's node_cpus) or a number")
    p.add_argument("--runtimes", default="savedmodel+torch,auto",
                   help="runtime pairs CLASSIFIER+DETECTOR (or auto) compared in raw and served, comma-separated; "
                        "the first is the reference")
    p.add_argument("--endpoint", choices=["/hello", "/v1/recognize"], default="/hello",
                   help="what the served graph is asked and the raw pipeline does: /hello (what its answer reads) or every product")
    p.add_argument("--only", choices=["raw", "baseline", "peer", "floor", "served"], action="append",
                   help="run only these (repeatable)")
    p.add_argument("--out", type=Path, default=Path("load_tests/reports"))
    p.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.raw_worker:
        print(json.dumps(run_raw(args.model_dir, args.originals, args.phones, args.raw_images, [1, args.raw_batch], args.runtimes,
                                 args.endpoint)))
        return 0
    pairs = [pair.strip() for pair in args.runtimes.split(",") if pair.strip()]

    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["raw", "baseline", "peer", "floor", "served"])
    if args.endpoint != "/hello":
        only -= {"baseline", "peer", "floor"}  # they answer /hello only
    model_args = ["--model-dir", args.model_dir] if args.model_dir else []
    photos = load_photos(args.originals, args.phones)
    hello = [rest_template_body(data, name) for name, data in photos]
    recognize = [multipart_body(data, "image", name) for name, data in photos]
    asked = hello if args.endpoint == "/hello" else recognize
    results: dict = {"photos": len(photos), "phones": args.phones, "concurrency": args.concurrency, "duration_s": args.duration,
                     "endpoint": args.endpoint}

    if "raw" in only:
        results["raw"] = {}
        for pair in pairs:
            print(f"raw pipeline, {pair} ...", flush=True)
            output = subprocess.run([sys.executable, "-m", "load_tests.benchmark", "--raw-worker", *model_args,
                                     "--raw-images", str(args.raw_images), "--raw-batch", str(args.raw_batch),
                                     "--originals", str(args.originals), "--phones", str(args.phones), "--runtimes", pair,
                                     "--endpoint", args.endpoint],
                                    cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
            results["raw"][pair] = json.loads(output.strip().splitlines()[-1])

    for name, module in (("baseline", "load_tests.baseline_server"), ("peer", "load_tests.peer_server"),
                         ("floor", "load_tests.ray_floor")):
        if name in only:
            print(f"{name} server ...", flush=True)
            results[name] = one_process_server(module, model_args, hello, args, args.out / f"{name}_server.log")

    if "served" in only:
        print("served graph ...", flush=True)
        from load_tests.control_process import Control

        control = Control(args.out, url=None, ray_address=None, model_dir=args.model_dir, num_cpus=args.num_cpus,
                          upscale_delay=None, downscale_delay=None)
        def measured(bodies, duration, warmup, endpoint=args.endpoint):
            before = batch_metrics(control.metrics_urls)
            with CpuShare() as cpu:
                result = drive(control.url, bodies, args.concurrency, duration, warmup, endpoint=endpoint)
            time.sleep(3)  # replicas report metrics every second (RAY_metrics_report_interval_ms in load_tests.control)
            return result | {"batches": batch_summary(before, batch_metrics(control.metrics_urls)), "cpu": cpu.result}

        try:
            control.wait_ready()
            results["served_runtimes"] = {}
            for pair in pairs:  # the last is the one the default-mode comparison and the sweep then run with
                classifier_runtime, detector_runtime = runtime_pair(pair)
                print(f"served graph, {pair} ...", flush=True)
                control.deploy({}, args={"classifier_runtime": classifier_runtime, "detector_runtime": detector_runtime})
                # Saturate once before measuring, so autoscaling has settled and replica starts do not eat the CPU.
                drive(control.url, asked, args.concurrency, args.served_warmup, 0, endpoint=args.endpoint)
                run = measured(asked, args.duration, args.warmup)
                if args.endpoint == "/hello":
                    # Every product of the same photos (/v1/recognize), measured as long: what /hello's largest-product-
                    # only work saves, side by side, and where a photo's time goes.
                    every = measured(recognize, args.duration, args.warmup, endpoint="/v1/recognize")
                    run["stage_ms"] = stage_means(every.pop("bodies"))
                    run["every_product"] = every
                else:
                    run["stage_ms"] = stage_means(run["bodies"])
                results["served_runtimes"][pair] = run
            results["served"] = results["served_runtimes"][pairs[-1]]
            # The same graph with a model call per request: what the ingress's gathering buys, side by side.
            print("served graph, a model call per request (gather_wait_s 0) ...", flush=True)
            control.deploy({"Recognizer": {"gather_wait_s": 0.0}})
            drive(control.url, asked, args.concurrency, args.served_warmup / 2, 0, endpoint=args.endpoint)
            results["served_call_per_request"] = measured(asked, args.duration, args.warmup)
            control.deploy({"Recognizer": {"gather_wait_s": RecognizerSettings.gather_wait_s}})
            if args.endpoint == "/hello" and args.catalog_products:
                # The same /hello with products enrolled: the detector, the crop and the catalog's match come back.
                print(f"served graph, /hello with {args.catalog_products} products enrolled ...", flush=True)
                control.deploy({}, env_vars={ADMIN_KEY_ENV: BENCHMARK_ADMIN_KEY})
                enroll_products(control.url, args.catalog_products)
                drive(control.url, asked, args.concurrency, args.served_warmup / 2, 0, endpoint=args.endpoint)
                results["served_with_catalog"] = measured(asked, args.duration, args.warmup) | {"products": args.catalog_products}
            if args.compare_serve_mode:
                # The same graph with Ray Serve's default request path (serve_config.yaml turns on its
                # throughput mode): what that setting buys, side by side on this machine.
                print("served graph, Ray Serve's default mode ...", flush=True)
                control.deploy({}, env_vars={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"})
                drive(control.url, asked, args.concurrency, args.served_warmup / 2, 0, endpoint=args.endpoint)
                results["served_default_mode"] = measured(asked, args.duration, args.warmup)
                control.deploy({}, env_vars={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"})
                drive(control.url, asked, args.concurrency, args.served_warmup / 2, 0, endpoint=args.endpoint)
            sweep = [int(v) for v in args.sweep.split(",") if v.strip()]
            results["sweep"] = {}
            for batch in sweep:
                print(f"  max_batch_size {batch} ...", flush=True)
                change = {"max_batch_size": batch} | ({"batch_wait_timeout_s": args.sweep_wait} if args.sweep_wait is not None else {})
                control.deploy({"Detector": change, "Classifier": change})
                results["sweep"][str(batch)] = measured(asked, args.duration, args.warmup)
        finally:
            control.stop()

    for part in ("baseline", "peer", "floor", "served", "served_call_per_request", "served_with_catalog", "served_default_mode"):
        results.get(part, {}).pop("bodies", None)
    for run in results.get("served_runtimes", {}).values():
        run.pop("bodies", None)
    for run in results.get("sweep", {}).values():
        run.pop("bodies", None)
    text = render(results)
    print(text)
    (args.out / "benchmark.md").write_text(text)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2))
    return 0


BENCHMARK_ADMIN_KEY = "benchmark-admin-key"  # the served graph's writes, for this run's catalog only (127.0.0.1)


def enroll_products(url: str, count: int, photos_each: int = 3) -> None:
    """`count` products in the served graph's (new, empty) catalog, one a Freiburg category (products the classifier
    never saw), each from its first shelf photos."""
    from load_tests.photos import FREIBURG_IMAGES, freiburg_category_photos

    categories = sorted({re.match(r"[A-Z_]+", path.name).group() for path in FREIBURG_IMAGES.glob("*.jpg")})[:count]  # type: ignore[union-attr]
    for category in categories:
        files = [("photo", (path.name, path.read_bytes(), "image/jpeg")) for path in freiburg_category_photos(category, photos_each)]
        answer = httpx.post(f"{url}/v1/catalog/products", data={"sku": category.lower(), "label": f"{category.title()}_ _ "},
                            files=files, headers={"X-Admin-Key": BENCHMARK_ADMIN_KEY}, timeout=120)
        answer.raise_for_status()


def one_process_server(module: str, model_args: list[str], bodies: list[tuple[bytes, dict]], args: argparse.Namespace,
                       log_path: Path) -> dict:
    """A one-process server (`python -m module --port P`) on 127.0.0.1, driven like the served graph."""
    from load_tests.serve_app import free_port

    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *model_args],
                                  cwd=REPO_ROOT, stdout=log, stderr=log, env=os.environ | AUTH_ENV)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            drive(f"http://127.0.0.1:{port}", bodies, args.concurrency, args.warmup, 0)  # its first batches, before measuring
            with CpuShare() as cpu:
                result = drive(f"http://127.0.0.1:{port}", bodies, args.concurrency, args.duration, args.warmup)
            return result | {"cpu": cpu.result}
        finally:
            server.terminate()  # our own child
            server.wait(timeout=30)


def service_cores(r: dict) -> float | None:
    """The cores serving took: the service's processes (served, baseline) or the raw pipeline's worker."""
    share = r.get("cpu") or {}
    return share.get("service_cores", share.get("ours_cores"))


def render(results: dict) -> str:
    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    def cpu(r: dict) -> str:
        share = r.get("cpu")
        if not share:
            return "-"
        return f"{share.get('service_cores', share['ours_cores'])} / {share.get('harness_cores', '-')} / {share.get('others_cores', '-')}"

    def per_cpu(r: dict) -> str:
        """Images per CPU-second of the service's processes: what the serving costs, whatever share of the CPU it got."""
        return fmt(r["images_per_s"] / service_cores(r)) if service_cores(r) else "-"

    lines = ["# Throughput benchmark", "",
             f"{results['photos']} photos ({results['phones']} full-size phone JPEGs), {results['concurrency']} requests in flight, "
             f"{results['duration_s']:.0f} s measured per figure; served and raw do what {results.get('endpoint', '/hello')} asks"
             " (/hello: what its answer reads; with an empty catalog, the whole photo alone).", "",
             "| mode | runtimes (classifier+detector) | images/s | p50 (s) | p99 (s) | answers | CPU cores used: service / "
             "load client and harness / other processes | images per CPU-second (service) |",
             "|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    runs = [("served (HTTP)", pair, r) for pair, r in results.get("served_runtimes", {}).items()]
    runs += [(title, "-", results[name]) for name, title in (
        ("served_call_per_request", "served, a model call per request (gathering off)"),
        ("served_with_catalog", "served, /hello with products enrolled"),
        ("served_default_mode", "served, Ray Serve's default mode (HTTP)"),
        ("baseline", "baseline (HTTP)"), ("peer", "peer: LitServe, one worker, batching 8 / 10 ms (HTTP)"),
        ("floor", "Ray Serve's floor: the graph's shape, no model work (HTTP)")) if name in results]
    for title, pair, r in runs:
        lines.append(f"| {title} | {pair} | {fmt(r['images_per_s'])} | {fmt(r['p50_s'])} | {fmt(r['p99_s'])} | {r['statuses']} "
                     f"| {cpu(r)} | {per_cpu(r)} |")
        if r.get("batches"):
            notes.append(f"- {title}, {pair}: batches formed (Serve's own metrics): {r['batches']}")
        if r.get("cpu", {}).get("cores_by_process"):
            notes.append(f"- {title}, {pair}: CPU cores by process: {r['cpu']['cores_by_process']}")
        if r.get("every_product"):
            every = r["every_product"]
            notes.append(f"- {title}, {pair}: /v1/recognize (every product) at the same load: {fmt(every['images_per_s'])} images/s, "
                         f"p99 {fmt(every['p99_s'])} s, {per_cpu(every)} images per CPU-second")
        if r.get("stage_ms"):
            notes.append(f"- {title}, {pair}: mean ms per stage of /v1/recognize at saturation (queueing included): {r['stage_ms']}")
    for pair, by_batch in results.get("raw", {}).items():
        for batch, r in by_batch.items():
            lines.append(f"| raw, batch {batch} (in process) | {pair} | {fmt(r['images_per_s'])} | - | - | ms/image {r['ms_per_image']}, "
                         f"{r.get('crops_per_image', 0):.2f} crops/image | {r['cpu']['ours_cores']} / - / - | {per_cpu(r)} |")
    lines.append("")
    served = results.get("served_runtimes", {})
    raw = results.get("raw", {})
    pairs = list(served or raw)
    if pairs:
        reference, new = pairs[0], pairs[-1]
        best = {pair: max(raw[pair].values(), key=lambda r: r["images_per_s"]) for pair in raw}

        def ratio(a: dict | None, b: dict | None, per_cpu_second: bool = False) -> str:
            if not a or not b:
                return "-"
            value = (lambda r: r["images_per_s"] / service_cores(r)) if per_cpu_second else (lambda r: r["images_per_s"])
            return fmt(value(a) / value(b))

        lines += [f"- raw {new} / raw {reference}, images per CPU-second (best batch): {ratio(best.get(new), best.get(reference), True)}",
                  f"- served / raw, {new}, images/s: {ratio(served.get(new), best.get(new))}; images per CPU-second: "
                  f"{ratio(served.get(new), best.get(new), True)}",
                  f"- served {new} / raw {reference}, images/s: {ratio(served.get(new), best.get(reference))}",
                  f"- served / baseline: {ratio(served.get(new), results.get('baseline'))}",
                  f"- served / peer (LitServe), images/s: {ratio(served.get(new), results.get('peer'))}; p99: "
                  f"{fmt(served[new]['p99_s'] / results['peer']['p99_s']) if served.get(new) and results.get('peer') else '-'}",
                  f"- served / served with a model call per request: {ratio(served.get(new), results.get('served_call_per_request'))}",
                  f"- served with {results.get('served_with_catalog', {}).get('products', '-')} products enrolled / served with an "
                  f"empty catalog: {ratio(results.get('served_with_catalog'), served.get(new))}",
                  f"- served / Ray Serve's floor: {ratio(served.get(new), results.get('floor'))}; peer / floor: "
                  f"{ratio(results.get('peer'), results.get('floor'))}"]
    if results.get("served_default_mode") and served:
        lines.append(f"- served / served in Ray Serve's default mode: {ratio(served.get(pairs[-1]), results['served_default_mode'])}")
    lines += notes
    if results.get("sweep"):
        lines += ["", "## max_batch_size sweep (served, Detector and Classifier)", "",
                  "| max_batch_size | images/s | p50 (s) | p99 (s) | answers | mean batch formed (Detector / Classifier) "
                  "| CPU cores: service / harness / others | images per CPU-second (service) |",
                  "|---|---|---|---|---|---|---|---|"]
        for batch, r in results["sweep"].items():
            formed = " / ".join(str(r.get("batches", {}).get(d, {}).get("mean_batch", "-")) for d in ("Detector", "Classifier"))
            lines.append(f"| {batch} | {fmt(r['images_per_s'])} | {fmt(r['p50_s'])} | {fmt(r['p99_s'])} | {r['statuses']} "
                         f"| {formed} | {cpu(r)} | {per_cpu(r)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
