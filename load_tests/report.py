"""The run's report: a markdown summary with the checks and each deployment's replica timeline (wanted by the
autoscaler, RUNNING, starting, pending), and a PNG chart over time (requests/s, latency percentiles, one
replica panel per deployment, the logical CPU the replicas reserve, errors by kind), built from the raw
request records and status samples."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from load_tests.checks import (  # noqa: E402
    Check,
    kinds,
    percentile,
    reach_and_return,
    running_up_times,
    scale_up_times,
    timeline,
    unplaced_stretches,
)
from load_tests.sampler import pending_count, replica_count, running_count, target_count  # noqa: E402


def per_second(records: list[dict], t0: float, end: float) -> dict[str, list]:
    """Per second of the run (by when each request was answered): count, p50/p95/p99 of 200s, errors by kind."""
    seconds = max(1, int(end - t0) + 1)
    buckets: list[list[dict]] = [[] for _ in range(seconds)]
    for record in records:
        if record["kind"] == "in_flight":
            continue
        index = int(record["start"] + record["latency_s"] - t0)
        if 0 <= index < seconds:
            buckets[index].append(record)
    out: dict[str, list] = {"t": list(range(seconds)), "rps": [len(b) for b in buckets]}
    for q in (50, 95, 99):
        out[f"p{q}"] = [percentile([r["latency_s"] for r in b if r["kind"] == "ok"], q) for b in buckets]
    for kind in sorted({r["kind"] for r in records} - {"ok"}):
        out[f"err:{kind}"] = [sum(r["kind"] == kind for r in b) for b in buckets]
    return out


def chart(path: Path, records: list[dict], samples: list[dict], deployments: list[str], t0: float, end: float,
          phases: list[tuple[str, float]], title: str) -> None:
    data = per_second(records, t0, end)
    rows = 4 + len(deployments)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 3 + 2.2 * rows), sharex=True)
    axes[0].plot(data["t"], data["rps"], label="answers/s")
    axes[0].set_ylabel("requests/s")
    for q in (50, 95, 99):
        axes[1].plot(data["t"], data[f"p{q}"], label=f"p{q} (200s)")
    axes[1].set_ylabel("latency (s)")
    xs = [s["t"] - t0 for s in samples]
    for index, name in enumerate(deployments):
        ax, rows_ = axes[2 + index], timeline(samples, name)
        ax.step(xs, [r[1] for r in rows_], where="post", color="C0", linewidth=2.5, alpha=0.6, label="wanted (target)")
        ax.step(xs, [r[2] for r in rows_], where="post", color="C2", linewidth=1.5, label="RUNNING")
        ax.step(xs, [r[3] for r in rows_], where="post", color="C1", linestyle="--", label="starting (placed)")
        ax.step(xs, [r[4] for r in rows_], where="post", color="C3", linestyle=":", linewidth=2, label="pending (no node)")
        for a, b, _, _ in unplaced_stretches(samples, name):
            ax.axvspan(a - t0, b - t0, color="C3", alpha=0.12)
        ax.set_ylabel(f"{name}\nreplicas")
        top = max([r[1] for r in rows_] + [replica_count(s, name) for s in samples] + [1])
        ax.set_ylim(-0.2, top + 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    cpu_ax = axes[2 + len(deployments)]
    clusters = [(s["t"] - t0, s["cluster"]) for s in samples if s.get("cluster")]
    if clusters:
        cpu_ax.step([x for x, _ in clusters], [c["total"]["CPU"] - c["available"]["CPU"] for _, c in clusters],
                    where="post", label="logical CPU reserved by replicas")
        cpu_ax.step([x for x, _ in clusters], [c["total"]["CPU"] for _, c in clusters], where="post", color="grey",
                    linestyle="--", label="cluster CPU")
    cpu_ax.set_ylabel("CPU (logical)")
    error_keys = [k for k in data if k.startswith("err:")]
    for key in error_keys:
        axes[-1].bar(data["t"], data[key], label=key[4:], alpha=0.6)
    axes[-1].set_ylabel("errors/s")
    axes[-1].set_xlabel("seconds since start")
    for ax in axes:
        for _name, at in phases:
            ax.axvline(at - t0, color="grey", linewidth=0.8, linestyle="--")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def timeline_rows(samples: list[dict], deployments: list[str], t0: float, phases: list[tuple[str, float]]) -> list[str]:
    """Markdown rows of the replica timeline: one per sample where any deployment's wanted/running/starting/
    pending changed (or the phase, the reserved CPU or the unplaced requests did), so a run reads in a few
    dozen lines."""
    lines = ["| t (s) | phase | " + " | ".join(f"{name} w/r/s/p" for name in deployments) + " | CPU reserved/total | unplaced |",
             "|---|---|" + "---|" * len(deployments) + "---|---|"]
    series = {name: timeline(samples, name) for name in deployments}
    previous = None
    for index, sample in enumerate(samples):
        phase = next((p for p, at in reversed(phases) if sample["t"] >= at), "start")
        cluster = sample.get("cluster") or {}
        cpu = (f"{cluster['total']['CPU'] - cluster['available']['CPU']:.1f}/{cluster['total']['CPU']:.0f}"
               if cluster.get("total") else "-")
        unplaced = ", ".join(f"{u['count']} x {u['bundle']}" for u in cluster.get("unplaced") or []) or "-"
        state = (phase, cpu, unplaced) + tuple(series[name][index][1:] for name in deployments)
        if state == previous:
            continue
        previous = state
        cells = " | ".join("/".join(str(v) for v in series[name][index][1:]) for name in deployments)
        lines.append(f"| {sample['t'] - t0:.0f} | {phase} | {cells} | {cpu} | {unplaced} |")
    return lines


def summary(records: list[dict], samples: list[dict], deployments: list[str], peak: tuple[float, float] | None,
            models: list[str] = (), model_replicas: int = 2) -> dict:
    """The headline figures of a run, also written as JSON next to the report."""
    ok = [r["latency_s"] for r in records if r["kind"] == "ok"]
    figures = {
        "requests": len(records),
        "by_kind": kinds(records),
        "p50_s": percentile(ok, 50), "p95_s": percentile(ok, 95), "p99_s": percentile(ok, 99),
        "max_replicas": {name: max((replica_count(s, name) for s in samples), default=0) for name in deployments},
        "max_wanted": {name: max((target_count(s, name) for s in samples), default=0) for name in deployments},
        "max_running": {name: max((running_count(s, name) for s in samples), default=0) for name in deployments},
        "max_pending": {name: max((pending_count(s, name) for s in samples), default=0) for name in deployments},
        "longest_unplaced_s": {name: max((b - a for a, b, _, _ in unplaced_stretches(samples, name)), default=0.0)
                               for name in deployments},
    }
    clusters = [s["cluster"] for s in samples if s.get("cluster")]
    if clusters:
        figures["cluster_cpus"] = clusters[0]["total"]["CPU"]
        figures["cluster_gpus"] = clusters[0]["total"]["GPU"]
    if peak is not None:
        in_peak = [r for r in records if peak[0] <= r["start"] < peak[1]]
        figures["peak_answers_per_s"] = len(in_peak) / max(1e-9, peak[1] - peak[0])
        figures["peak_ok_per_s"] = sum(r["kind"] == "ok" for r in in_peak) / max(1e-9, peak[1] - peak[0])
        figures["scale_up_s"] = scale_up_times(samples, deployments, *peak)  # a new replica exists (STARTING counts)
        figures["running_up_s"] = running_up_times(samples, deployments, *peak)  # the new replica serves
        for name in models:
            reached, back, base = reach_and_return(samples, name, *peak, model_replicas)
            figures[f"{name}_{model_replicas}_running_at_s"] = reached  # seconds into the peak
            figures[f"{name}_back_to_{base}_at_s"] = back  # seconds after the peak's end
    return figures


def write_report(out_dir: Path, name: str, *, title: str, command: str, notes: list[str], records: list[dict],
                 samples: list[dict], deployments: list[str], t0: float, end: float,
                 phases: list[tuple[str, float]], peak: tuple[float, float] | None, checks: list[Check],
                 extra: dict | None = None, models: list[str] = (), model_replicas: int = 2) -> Path:
    """Writes <name>.md, <name>.png, <name>.json (figures, checks, records, samples); returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, md = out_dir / f"{name}.png", out_dir / f"{name}.md"
    chart(png, records, samples, deployments, t0, end, phases, title)
    figures = summary(records, samples, deployments, peak, models, model_replicas) | (extra or {})
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    lines += [f"- {note}" for note in notes] + [""]
    lines += ["## Phases", "", "| phase | starts at (s) |", "|---|---|"]
    lines += [f"| {phase} | {at - t0:.1f} |" for phase, at in phases] + [""]
    lines += ["## Figures", "", "| figure | value |", "|---|---|"]
    for key, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else json.dumps(value, default=lambda v: round(v, 1))
        lines.append(f"| {key} | {shown} |")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'PASS' if c.passed else 'FAIL'} | {c.detail} |" for c in checks]
    if samples:
        lines += ["", "## Replicas over time", "",
                  "Per deployment: **w**anted by the autoscaler (target), **r**UNNING, **s**tarting (placed on a node, "
                  "loading), **p**ending (no node has taken it yet). A row whenever one of them changes.", ""]
        lines += timeline_rows(samples, deployments, t0, phases)
    lines += ["", f"![chart]({png.name})", ""]
    md.write_text("\n".join(lines))
    (out_dir / f"{name}.json").write_text(json.dumps({
        "figures": figures, "checks": [c.__dict__ for c in checks], "phases": phases,
        "records": records, "samples": samples,
    }, default=str))
    return md
