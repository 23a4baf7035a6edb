"""Peak traffic: quiet baseline → step to a peak well past one replica's capacity → hold → quiet, while the
Serve status API is sampled every second; writes a report (markdown + PNG) with the checks.

    python -m load_tests.peak                       # fresh app from serve_config.yaml (~3-4 min)
    python -m load_tests.peak --peak-users 48 --peak-s 120 --quiet-s 90     # longer
    python -m load_tests.peak --url http://host:8000 --ray-address auto     # a running app

A fresh app gets a local Ray with the machine's own cores as logical CPUs, as `make serve` does (`--num-cpus
declared`: the node serve_config.yaml declares; or a number), so the run measures what users get, placement
included. The report gives each deployment's replicas over time: wanted by the autoscaler, RUNNING, starting,
pending (not placed); its checks include "wanted no more than it could place" and the models (Detector,
Classifier) reaching 2 RUNNING during the peak and going back after.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import locust  # noqa: F401  (gevent monkey-patching first, before anything opens sockets)

from load_tests.checks import (
    check_all_answered,
    check_models_scaled,
    check_only_backpressure,
    check_p99_bounded,
    check_placed,
    check_scaled_down,
    check_scaled_up,
)
from load_tests.locustfile import peak_stages
from load_tests.photos import load_photos
from load_tests.report import write_report
from load_tests.run import Control, autoscaling, run_load

DEPLOYMENTS = ["Recognizer", "Detector", "Classifier"]
MODELS = ["Detector", "Classifier"]
"""The deployments that must grow under the peak: on a 2-CPU node the work is theirs, not the ingress's."""


def scale_up_limit(scaling: dict[str, dict], slack_s: float) -> float:
    """How soon a scale-up must show: the smallest upscale delay plus the metrics look-back, plus slack for the
    replica's placement (a starting replica counts, so model loading time is not included)."""
    return min(c.get("upscale_delay_s", 30) + c.get("look_back_period_s", 30) for c in scaling.values() if c) + slack_s


def peak_checks(result, stages, scaling, slack_s: float, p99_bound_s: float, pending_bound_s: float = 10,
                model_replicas: int = 2):
    peak_start, peak_end = result.t0 + stages[0][0], result.t0 + stages[1][0]
    return [
        check_scaled_up(result.samples, DEPLOYMENTS, peak_start, peak_end, scale_up_limit(scaling, slack_s)),
        check_scaled_down(result.samples, DEPLOYMENTS, peak_start, result.end),
        check_placed(result.samples, DEPLOYMENTS, pending_bound_s, result.t0),
        check_models_scaled(result.samples, MODELS, peak_start, peak_end, model_replicas),
        check_all_answered(result.records),
        check_only_backpressure(result.records),
        check_p99_bounded(result.records, p99_bound_s),
    ]


def cluster_note(samples: list[dict]) -> str:
    cluster = next((s["cluster"] for s in samples if s.get("cluster")), None)
    if cluster is None:
        return "resources not sampled"
    return f"{cluster['total']['CPU']:g} logical CPUs, {cluster['total']['GPU']:g} GPUs"


def placement_notes(config: dict | None) -> list[str]:
    """The config's resource arithmetic against the node it declares (deployments/placement.py), as text;
    for a running app, serve_config.yaml's."""
    from deployments.placement import app_placement  # no Ray import there: fine in this gevent-patched process
    from pipeline.core.settings import read_serve_config

    try:
        placement = app_placement((config or read_serve_config())["applications"][0], use_gpu=False)
    except Exception as error:  # an undeclared node: say so rather than fail the report
        return [f"placement not computed: {error}"]
    return [f"every deployment at its max_replicas: {placement.arithmetic()}"] + placement.problems()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_argument_group("target")
    target.add_argument("--url", help="a running app's base URL; without it a fresh app is started and stopped")
    target.add_argument("--ray-address", default=None, help="with --url: the cluster to sample (default auto)")
    target.add_argument("--model-dir", help="fresh app: model_label folder (default MODEL_LABEL_DIR or model_label/)")
    target.add_argument("--num-cpus", default="auto",
                        help="fresh app: logical CPUs of the local Ray: auto (the machine's cores, as `make serve`), "
                             "declared (serve_config.yaml's args.node_cpus) or a number")
    target.add_argument("--upscale-delay", type=float, help="fresh app: override every deployment's upscale_delay_s")
    target.add_argument("--downscale-delay", type=float, help="fresh app: override every deployment's downscale_delay_s")
    load = p.add_argument_group("load")
    load.add_argument("--baseline-s", type=float, default=10)
    load.add_argument("--peak-s", type=float, default=75,
                      help="long enough for the models' second replicas to be placed and load their models")
    load.add_argument("--quiet-s", type=float, default=60,
                      help="must exceed downscale_delay_s (+ a replica's shutdown) for the scale-down checks")
    load.add_argument("--quiet-users", type=int, default=1)
    load.add_argument("--peak-users", type=int, default=24, help="concurrent requests at the peak (Recognizer target is 8)")
    load.add_argument("--originals", type=int, default=8, help="real photos sent as they are")
    load.add_argument("--phones", type=int, default=4, help="of them, made full-size phone JPEGs (4032x3024) too")
    load.add_argument("--client-timeout", type=float, default=30, help="no answer in this long counts as a hang")
    checks = p.add_argument_group("checks")
    checks.add_argument("--slack", type=float, default=10, help="seconds allowed past upscale delay + look-back")
    checks.add_argument("--p99-bound", type=float, default=20, help="seconds; p99 of 200s must stay under it")
    checks.add_argument("--pending-bound", type=float, default=10,
                        help="seconds a deployment may want more replicas than RUNNING while some sit unplaced")
    checks.add_argument("--model-replicas", type=int, default=2,
                        help="RUNNING replicas the Detector and the Classifier must each reach during the peak")
    p.add_argument("--out", type=Path, default=Path("load_tests/reports"), help="report folder (not committed)")
    p.add_argument("--name", default="peak")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = peak_stages(args.baseline_s, args.peak_s, args.quiet_s, args.quiet_users, args.peak_users)
    control = Control(args.out, url=args.url, ray_address=(args.ray_address or "auto") if args.url else None,
                      model_dir=args.model_dir, num_cpus=args.num_cpus,
                      upscale_delay=args.upscale_delay, downscale_delay=args.downscale_delay)
    try:
        photos = load_photos(args.originals, args.phones)  # while the app starts
        control.wait_ready()
        result = run_load(control, stages, photos, client_timeout_s=args.client_timeout)
    except BaseException:
        control.stop()
        raise
    scaling = autoscaling(result.config)
    checks = peak_checks(result, stages, scaling, args.slack, args.p99_bound, args.pending_bound, args.model_replicas)
    phases = [("baseline", result.t0), ("peak", result.t0 + stages[0][0]), ("quiet", result.t0 + stages[1][0])]
    md = write_report(
        args.out, args.name, title=f"Peak: {args.quiet_users} → {args.peak_users} → {args.quiet_users} users",
        command="python -m load_tests.peak " + shlex.join(argv if argv is not None else sys.argv[1:]),
        notes=[f"target {result.url}; {len(photos)} photos ({args.phones} full-size phone JPEGs); /hello and /v1/recognize 50/50",
               f"cluster: {cluster_note(result.samples)}",
               f"autoscaling: {scaling}"] + placement_notes(result.config),
        records=result.records, samples=result.samples, deployments=DEPLOYMENTS, t0=result.t0, end=result.end,
        phases=phases, peak=(phases[1][1], phases[2][1]), checks=checks,
        models=MODELS, model_replicas=args.model_replicas,
    )
    print(md.read_text())
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
