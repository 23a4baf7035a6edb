"""The run's report: a markdown summary with the checks, and a PNG chart over time (requests/s, latency
percentiles, replicas per deployment, errors by kind), built from the raw request records and status samples."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from load_tests.checks import Check, kinds, percentile, running_up_times, scale_up_times  # noqa: E402
from load_tests.sampler import replica_count, running_count  # noqa: E402


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
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    axes[0].plot(data["t"], data["rps"], label="answers/s")
    axes[0].set_ylabel("requests/s")
    for q in (50, 95, 99):
        axes[1].plot(data["t"], data[f"p{q}"], label=f"p{q} (200s)")
    axes[1].set_ylabel("latency (s)")
    for index, name in enumerate(deployments):
        xs, color = [s["t"] - t0 for s in samples], f"C{index}"
        axes[2].step(xs, [replica_count(s, name) for s in samples], where="post", color=color, label=f"{name} (all)")
        axes[2].step(xs, [running_count(s, name) for s in samples], where="post", color=color, linestyle=":",
                     label=f"{name} RUNNING")
    axes[2].set_ylabel("replicas")
    error_keys = [k for k in data if k.startswith("err:")]
    for key in error_keys:
        axes[3].bar(data["t"], data[key], label=key[4:], alpha=0.6)
    axes[3].set_ylabel("errors/s")
    axes[3].set_xlabel("seconds since start")
    for ax in axes:
        for name, at in phases:
            ax.axvline(at - t0, color="grey", linewidth=0.8, linestyle="--")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary(records: list[dict], samples: list[dict], deployments: list[str], peak: tuple[float, float] | None) -> dict:
    """The headline figures of a run, also written as JSON next to the report."""
    ok = [r["latency_s"] for r in records if r["kind"] == "ok"]
    figures = {
        "requests": len(records),
        "by_kind": kinds(records),
        "p50_s": percentile(ok, 50), "p95_s": percentile(ok, 95), "p99_s": percentile(ok, 99),
        "max_replicas": {name: max((replica_count(s, name) for s in samples), default=0) for name in deployments},
        "max_running": {name: max((running_count(s, name) for s in samples), default=0) for name in deployments},
    }
    if peak is not None:
        in_peak = [r for r in records if peak[0] <= r["start"] < peak[1]]
        figures["peak_answers_per_s"] = len(in_peak) / max(1e-9, peak[1] - peak[0])
        figures["peak_ok_per_s"] = sum(r["kind"] == "ok" for r in in_peak) / max(1e-9, peak[1] - peak[0])
        figures["scale_up_s"] = scale_up_times(samples, deployments, *peak)  # a new replica exists (STARTING counts)
        figures["running_up_s"] = running_up_times(samples, deployments, *peak)  # the new replica serves
    return figures


def write_report(out_dir: Path, name: str, *, title: str, command: str, notes: list[str], records: list[dict],
                 samples: list[dict], deployments: list[str], t0: float, end: float,
                 phases: list[tuple[str, float]], peak: tuple[float, float] | None, checks: list[Check],
                 extra: dict | None = None) -> Path:
    """Writes <name>.md, <name>.png, <name>.json (figures, checks, records, samples); returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, md = out_dir / f"{name}.png", out_dir / f"{name}.md"
    chart(png, records, samples, deployments, t0, end, phases, title)
    figures = summary(records, samples, deployments, peak) | (extra or {})
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
    lines += ["", f"![chart]({png.name})", ""]
    md.write_text("\n".join(lines))
    (out_dir / f"{name}.json").write_text(json.dumps({
        "figures": figures, "checks": [c.__dict__ for c in checks], "phases": phases,
        "records": records, "samples": samples,
    }, default=str))
    return md
