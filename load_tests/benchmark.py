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
then the ratios 1/2 and 1/3, the served graph once more with the ingress gathering requests into one model call
(gathering ships off), with /hello's products enrolled, with Ray Serve's default request path instead of the
throughput mode serve_config.yaml turns on, and with calls between deployments by reference, and a sweep of
max_batch_size (Detector and Classifier).
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
import time
from pathlib import Path

import httpx

from deployments.catalog.http_side import ADMIN_KEY_ENV
from load_tests.benchmark_report import render
from load_tests.bodies import multipart_body, rest_template_body
from load_tests.local_ray import AUTH_ENV
from load_tests.measurement import CpuShare, batch_metrics, batch_summary, drive, stage_means, wait_http
from load_tests.photos import load_photos
from load_tests.server_process import server_process
from pipeline.core.loop_modes import EVERY_PRODUCT, HELLO
from pipeline.core.paths import REPO_ROOT
from pipeline.core.settings import RecognizerSettings


def run_raw(model_dir: str | None, originals: int, phones: int, images: int, batch_sizes: list[int], runtimes: str,
            endpoint: str) -> dict:
    """Worker mode (a separate process, so torch and TensorFlow load fresh): images/s per batch size, with the
    runtimes `runtimes` names (CLASSIFIER+DETECTOR, as serve_config.yaml's args), doing `endpoint`'s work (/hello's:
    only what its answer reads, pipeline.core.loop_modes.HELLO)."""
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
        pipeline.recognize_chunks(chunks, HELLO if endpoint == "/hello" else EVERY_PRODUCT)
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
            # The same graph with the ingress gathering requests into one model call (it ships off, a model call
            # per request): what gathering costs or buys, side by side.
            print(f"served graph, requests gathered (gather_wait_s {GATHER_WAIT_S}) ...", flush=True)
            control.deploy({"Recognizer": {"gather_wait_s": GATHER_WAIT_S}})
            drive(control.url, asked, args.concurrency, args.served_warmup / 2, 0, endpoint=args.endpoint)
            results["served_gathered"] = measured(asked, args.duration, args.warmup) | {"gather_wait_s": GATHER_WAIT_S}
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
                # The throughput mode sends a call between deployments by value, over gRPC; this row sends it by
                # reference, through Ray's object store, as Serve's default mode does.
                print("served graph, calls between deployments by reference ...", flush=True)
                control.deploy({}, env_vars={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"})
                drive(control.url, asked, args.concurrency, args.served_warmup / 2, 0, endpoint=args.endpoint)
                results["served_by_reference"] = measured(asked, args.duration, args.warmup)
                control.deploy({}, env_vars={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"})
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

    for part in ("baseline", "peer", "floor", "served", "served_gathered", "served_with_catalog", "served_default_mode",
                 "served_by_reference"):
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


GATHER_WAIT_S = 0.005  # the gathering row's wait: the setting measured on 2026-12-07 (BENCHMARKS.md)
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
    command = [sys.executable, "-m", module, "--port", str(port), *model_args]
    with open(log_path, "w") as log, server_process(command, log, REPO_ROOT, os.environ | AUTH_ENV):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        drive(f"http://127.0.0.1:{port}", bodies, args.concurrency, args.warmup, 0)  # its first batches, before measuring
        with CpuShare() as cpu:
            result = drive(f"http://127.0.0.1:{port}", bodies, args.concurrency, args.duration, args.warmup)
        return result | {"cpu": cpu.result}


if __name__ == "__main__":
    sys.exit(main())
