"""Faults and overload under load: a replica of each model deployment is killed mid-load (ray.kill on the
actor, so Serve's controller must replace it), then the load jumps far past capacity and drops back.

    python -m load_tests.faults                      # fresh app, short run (~2 min)
    python -m load_tests.faults --overload-users 300 --steady-s 60

Counts, for each kill, the requests in flight at that moment by outcome (200, a clean error answer, or no
answer at all), and over the whole run the requests that hung (client timeout) or vanished (connection
dropped): the goal is zero of both. Overload must be answered with 503s quickly, and the service must
answer 200s again once the load drops.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import locust  # noqa: F401  (gevent monkey-patching first)

from load_tests.checks import (
    check_all_answered,
    check_p99_bounded,
    check_recovered,
    check_rejections_fast,
    check_replaced,
    in_flight_at,
    kinds,
)
from load_tests.photos import load_photos
from load_tests.report import write_report
from load_tests.run import Control, run_load

DEPLOYMENTS = ["Recognizer", "Detector", "Classifier"]
KILLED = ["Detector", "Classifier"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running app's base URL; without it a fresh app is started and stopped")
    p.add_argument("--ray-address", default="auto", help="with --url: the cluster whose replicas are killed")
    p.add_argument("--model-dir")
    p.add_argument("--num-cpus", default="auto",
                   help="logical CPUs of the fresh local Ray: auto (the machine's cores, as `make serve`), "
                        "declared (serve_config.yaml's node_cpus) or a number")
    p.add_argument("--steady-users", type=int, default=8)
    p.add_argument("--steady-s", type=float, default=40, help="replicas are killed at 1/4 and 1/2 of it")
    p.add_argument("--overload-users", type=int, default=200, help="far past capacity (queues hold 32 + 64 per replica)")
    p.add_argument("--overload-s", type=float, default=15)
    p.add_argument("--recover-users", type=int, default=2)
    p.add_argument("--recover-s", type=float, default=25)
    p.add_argument("--recover-grace", type=float, default=10, help="seconds after the drop before every answer must be 200")
    p.add_argument("--replace-within", type=float, default=60, help="seconds for a killed replica to be RUNNING again")
    p.add_argument("--reject-bound", type=float, default=5, help="seconds; p99 of 503 answers must stay under it")
    p.add_argument("--p99-bound", type=float, default=30, help="seconds; p99 of 200s during the whole run")
    p.add_argument("--client-timeout", type=float, default=45)
    p.add_argument("--originals", type=int, default=8)
    p.add_argument("--phones", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("load_tests/reports"))
    p.add_argument("--name", default="faults")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    overload_at = args.steady_s
    recover_at = overload_at + args.overload_s
    stages = [(args.steady_s, args.steady_users), (recover_at, args.overload_users), (recover_at + args.recover_s, args.recover_users)]
    kills = [(args.steady_s * (index + 1) / 4, name) for index, name in enumerate(KILLED)]
    control = Control(args.out, url=args.url, ray_address=args.ray_address if args.url else None,
                      model_dir=args.model_dir, num_cpus=args.num_cpus, upscale_delay=None, downscale_delay=None)
    try:
        photos = load_photos(args.originals, args.phones)
        control.wait_ready()
        result = run_load(control, stages, photos, kills=kills, client_timeout_s=args.client_timeout)
    except BaseException:
        control.stop()
        raise
    t0, records = result.t0, result.records
    checks = [check_all_answered(records)]
    kill_figures = {}
    for kill in result.kills:
        kill_figures[f"in flight when {kill['deployment']} was killed"] = in_flight_at(records, kill["t"])
        first_ok = min((r["start"] + r["latency_s"] for r in records if r["start"] > kill["t"] and r["kind"] == "ok"), default=None)
        kill_figures[f"s from {kill['deployment']} kill to the next 200 sent after it"] = (
            first_ok - kill["t"] if first_ok is not None else None)
        checks.append(check_replaced(result.samples, kill["deployment"], kill["actor"], kill["t"], args.replace_within))
    overload = [r for r in records if t0 + overload_at <= r["start"] < t0 + recover_at]
    checks += [
        check_rejections_fast(overload, args.reject_bound),
        check_recovered(records, t0 + recover_at, args.recover_grace),
        check_p99_bounded(records, args.p99_bound),
    ]
    phases = [("steady", t0)] + [(f"kill {k['deployment']}", k["t"]) for k in result.kills]
    phases += [("overload", t0 + overload_at), ("recover", t0 + recover_at)]
    md = write_report(
        args.out, args.name,
        title=f"Faults and overload: {args.steady_users} users, kills, {args.overload_users} users, {args.recover_users}",
        command="python -m load_tests.faults " + shlex.join(argv if argv is not None else sys.argv[1:]),
        notes=[f"target {result.url}; killed actors: {[k['actor'] for k in result.kills]}",
               "a clean error is any HTTP answer (503 with a JSON code, or the proxy's 503/500); "
               "'timeout' and 'connection' are requests that got no answer"],
        records=records, samples=result.samples, deployments=DEPLOYMENTS, t0=t0, end=result.end, phases=phases,
        peak=None, checks=checks,
        extra=kill_figures | {"overload_by_kind": kinds(overload)},
    )
    print(md.read_text())
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
