"""Checks over a recorded run: pure functions of the request records and the status samples, so a test can
feed them a run that violates them. Each returns a `Check` (name, passed, detail)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from load_tests.outcomes import BACKPRESSURE, CLIENT_STOPPED, OK
from load_tests.sampler import pending_count, replica_count, running_count, starting_count, target_count, unplaced_for

UNANSWERED = {"timeout", "connection", "in_flight"}  # kinds of a request that got no HTTP answer at all
EXPECTED_UNDER_LOAD = {OK, BACKPRESSURE, CLIENT_STOPPED}  # client_stopped: locust's doing, counted in the report


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def kinds(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    return dict(sorted(counts.items()))


def series(samples: list[dict], deployment: str) -> list[tuple[float, int]]:
    return [(s["t"], replica_count(s, deployment)) for s in samples]


def count_at(samples: list[dict], deployment: str, t: float) -> int:
    """Replicas of `deployment` in the last sample at or before `t` (the first sample if none is)."""
    before = [n for st, n in series(samples, deployment) if st <= t]
    return before[-1] if before else series(samples, deployment)[0][1]


def scale_up_times(samples: list[dict], deployments: list[str], peak_start: float, peak_end: float) -> dict[str, float | None]:
    """Seconds from the peak's start to the first sample where each deployment had more replicas than at the start."""
    times = {}
    for name in deployments:
        base = count_at(samples, name, peak_start)
        times[name] = next((t - peak_start for t, n in series(samples, name) if peak_start <= t <= peak_end and n > base), None)
    return times


def running_up_times(samples: list[dict], deployments: list[str], peak_start: float, peak_end: float) -> dict[str, float | None]:
    """Seconds from the peak's start until each deployment had more RUNNING replicas than at the start
    (scale-up decision plus the new replica's placement and model loading)."""
    times = {}
    for name in deployments:
        before = [running_count(s, name) for s in samples if s["t"] <= peak_start]
        base = before[-1] if before else running_count(samples[0], name)
        times[name] = next((s["t"] - peak_start for s in samples
                            if peak_start <= s["t"] <= peak_end and running_count(s, name) > base), None)
    return times


def check_scaled_up(samples: list[dict], deployments: list[str], peak_start: float, peak_end: float, within_s: float) -> Check:
    """Some deployment grew during the peak, within `within_s` (upscale delay + metrics look-back + slack)."""
    times = scale_up_times(samples, deployments, peak_start, peak_end)
    grew = {name: t for name, t in times.items() if t is not None}
    detail = ", ".join(f"{name} +{t:.1f}s" if t is not None else f"{name} no" for name, t in times.items())
    passed = bool(grew) and min(grew.values()) <= within_s
    return Check("replicas went up during the peak", passed, f"{detail} (limit {within_s:.0f}s)")


def check_scaled_down(samples: list[dict], deployments: list[str], peak_start: float, end: float) -> Check:
    """Every deployment is back to its pre-peak replica count by the end of the quiet phase."""
    rows = [(name, count_at(samples, name, peak_start), max((n for t, n in series(samples, name) if t >= peak_start), default=0),
             count_at(samples, name, end)) for name in deployments]
    passed = all(last <= before for name, before, peak, last in rows)
    detail = ", ".join(f"{name} {before}→{peak}→{last}" for name, before, peak, last in rows)
    return Check("replicas came back down after", passed, detail)


def check_all_answered(records: list[dict]) -> Check:
    """Every request got an HTTP answer: none hung past the client timeout, no connection was dropped."""
    lost = {k: n for k, n in kinds(records).items() if k in UNANSWERED}
    return Check("every request answered", not lost and bool(records), f"{len(records)} requests, unanswered: {lost or 0}")


def check_only_backpressure(records: list[dict]) -> Check:
    """The only errors are back-pressure 503s (the service shedding load as configured)."""
    bad = {k: n for k, n in kinds(records).items() if k not in EXPECTED_UNDER_LOAD}
    return Check("no errors but back-pressure 503s", not bad, f"by kind: {kinds(records)}")


def check_p99_bounded(records: list[dict], bound_s: float) -> Check:
    """Admitted (200) requests stay fast: their p99 latency is under `bound_s`."""
    p99 = percentile([r["latency_s"] for r in records if r["kind"] == OK], 99)
    return Check("p99 of admitted requests bounded", p99 <= bound_s, f"p99 {p99:.2f}s (bound {bound_s:.0f}s)")


def check_rejections_fast(records: list[dict], bound_s: float) -> Check:
    """Overload is answered with 503s quickly (p99 of the 503s under `bound_s`), not by queueing without bound."""
    shed = [r["latency_s"] for r in records if r["kind"] == BACKPRESSURE]
    p99 = percentile(shed, 99)
    return Check("overload answered 503 quickly", bool(shed) and p99 <= bound_s, f"{len(shed)} 503s, p99 {p99:.2f}s (bound {bound_s:.0f}s)")


def check_recovered(records: list[dict], dropped_at: float, within_s: float) -> Check:
    """Once load drops, the backlog admitted during the overload drains and, from `within_s` after the drop
    on, every request is answered 200 again. The detail gives when the last non-200 after the drop was sent."""
    answered = [r for r in records if r["kind"] != CLIENT_STOPPED]
    late = [r for r in answered if r["start"] >= dropped_at + within_s]
    bad = kinds([r for r in late if r["kind"] != OK])
    last = max((r["start"] - dropped_at for r in answered if r["start"] >= dropped_at and r["kind"] != OK), default=None)
    when = f"last non-200 sent +{last:.1f}s after the drop" if last is not None else "no non-200 after the drop"
    return Check("recovered after the load dropped", bool(late) and not bad,
                 f"{len(late)} requests from +{within_s:.0f}s after the drop, non-200: {bad or 0}; {when}")


def in_flight_at(records: list[dict], t: float) -> dict[str, int]:
    """Kinds of the requests that were in flight at `t` (sent before, answered after)."""
    return kinds([r for r in records if r["start"] <= t <= r["start"] + r["latency_s"]])


def check_replaced(samples: list[dict], deployment: str, killed: str, killed_at: float, within_s: float) -> Check:
    """After replica actor `killed` was killed, the deployment again has as many RUNNING replicas as before,
    none of them the killed actor (samples carry the live replica actor names), within `within_s`."""
    before = [running_count(s, deployment) for s in samples if s["t"] <= killed_at]
    wanted = max(1, before[-1] if before else 1)
    back = next((s["t"] - killed_at for s in samples if s["t"] > killed_at and running_count(s, deployment) >= wanted
                 and killed not in s.get("actors", {}).get(deployment, [killed])), None)
    passed = back is not None and back <= within_s
    detail = f"{wanted} RUNNING before; " + (f"replaced and RUNNING after {back:.1f}s" if back is not None else "not replaced")
    return Check(f"killed {deployment} replica replaced", passed, detail + f" (limit {within_s:.0f}s)")


def timeline(samples: list[dict], deployment: str) -> list[tuple[float, int, int, int, int]]:
    """(t, wanted, running, starting, pending) per sample: what the autoscaler wanted, the RUNNING replicas,
    those placed and loading, and those no node has taken yet."""
    return [(s["t"], target_count(s, deployment), running_count(s, deployment), starting_count(s, deployment),
             pending_count(s, deployment)) for s in samples]


def unplaced_stretches(samples: list[dict], deployment: str) -> list[tuple[float, float, int, int]]:
    """Stretches (from, to, most wanted, fewest running) where the autoscaler wanted more replicas than were
    RUNNING while some of them sat pending, not placed on any node, and (when the samples carry the cluster's
    resource requests) Ray reported a request of this deployment's shape it could not place."""
    stretches, current = [], None
    for s in samples:
        unplaced = unplaced_for(s, deployment)
        stuck = (target_count(s, deployment) > running_count(s, deployment) and pending_count(s, deployment) > 0
                 and (unplaced is None or unplaced > 0))
        if stuck:
            wanted, running = target_count(s, deployment), running_count(s, deployment)
            current = [s["t"], s["t"], wanted, running] if current is None else \
                [current[0], s["t"], max(current[2], wanted), min(current[3], running)]
        elif current is not None:
            stretches.append(tuple(current))
            current = None
    if current is not None:
        stretches.append(tuple(current))
    return stretches


def check_placed(samples: list[dict], deployments: list[str], bound_s: float, t0: float | None = None) -> Check:
    """Wanted more than it could place: fails when a deployment's autoscaler target stayed above its RUNNING
    replicas, with replicas pending (not placed on a node), for longer than `bound_s`: the maxima do not fit
    the cluster, so the autoscaler asks for replicas that never come (a short pending stretch is a worker
    process starting)."""
    t0 = t0 if t0 is not None else (samples[0]["t"] if samples else 0.0)
    worst = {}
    for name in deployments:
        stretches = unplaced_stretches(samples, name)
        if stretches:
            worst[name] = max(stretches, key=lambda st: st[1] - st[0])
    failed = {name: st for name, st in worst.items() if st[1] - st[0] > bound_s}
    detail = ", ".join(f"{name} wanted {w}, {r} RUNNING, pending {b - a:.0f}s from +{a - t0:.0f}s"
                       for name, (a, b, w, r) in worst.items()) or "no replica waited for a place"
    return Check("wanted no more than it could place", not failed, f"{detail} (bound {bound_s:.0f}s)")


def reach_and_return(samples: list[dict], deployment: str, peak_start: float, peak_end: float,
                     count: int) -> tuple[float | None, float | None, int]:
    """(seconds into the peak when `count` replicas were first RUNNING, seconds after the peak's end when
    the deployment was back to its pre-peak size and stayed there to the last sample, pre-peak RUNNING)."""
    before = [running_count(s, deployment) for s in samples if s["t"] <= peak_start]
    base = before[-1] if before else (running_count(samples[0], deployment) if samples else 0)
    reached = next((s["t"] - peak_start for s in samples
                    if peak_start <= s["t"] <= peak_end and running_count(s, deployment) >= count), None)
    back = None
    for s in samples:
        if s["t"] < peak_end:
            continue
        down = replica_count(s, deployment) <= base and target_count(s, deployment) <= base
        back = (s["t"] - peak_end if back is None else back) if down else None
    return reached, back, base


def check_models_scaled(samples: list[dict], deployments: list[str], peak_start: float, peak_end: float,
                        count: int = 2) -> Check:
    """Each of `deployments` (the models) had `count` RUNNING replicas during the peak, and was back to its
    pre-peak size (wanted and replicas) after it, to the end of the run."""
    rows = {name: reach_and_return(samples, name, peak_start, peak_end, count) for name in deployments}
    passed = bool(rows) and all(reached is not None and back is not None for reached, back, _ in rows.values())
    detail = ", ".join(
        f"{name} " + (f"{count} RUNNING at +{reached:.0f}s of the peak" if reached is not None else f"never {count} RUNNING in the peak")
        + ("; " + (f"back to {base} at +{back:.0f}s after it" if back is not None else f"not back to {base} by the end"))
        for name, (reached, back, base) in rows.items())
    return Check(f"{' and '.join(deployments)} reached {count} RUNNING in the peak, back after", passed, detail)
