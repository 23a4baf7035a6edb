"""The benchmark's rows as a picture: per server measured over HTTP, the photos it answered a second and the latency
its clients saw (p50, p99) at the same load, plus the `max_batch_size` sweep's rows when the run made one. Drawn
from the benchmark.json that `python -m load_tests.benchmark --out DIR` writes, so nothing is measured again.

    python -m load_tests.benchmark_chart artifacts/bench2/benchmark.json --out docs/figures/benchmark_latency.png \\
        --title "2026-12-07 (night), 2-core AMD EPYC"

The benchmark drives one load (`--concurrency` requests in flight), so the chart compares servers at that load;
it has no curve over loads to draw. `--title` names the run (the json records no date or machine).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from load_tests.benchmark_report import http_rows

LABEL_WIDTH = 44  # characters of a row's title per line


def read_results(path: Path | str) -> dict[str, Any]:
    """A benchmark.json (or the folder holding it), checked to hold at least one row measured over HTTP."""
    path = Path(path)
    if path.is_dir():
        path = path / "benchmark.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (python -m load_tests.benchmark --out DIR writes DIR/benchmark.json)")
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results, dict) or not chart_rows(results):
        raise ValueError(f"{path}: no row measured over HTTP (images_per_s, p50_s, p99_s): is it load_tests.benchmark's json?")
    return results


def chart_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(title, figures) of every row with a throughput and both percentiles: the servers, then the sweep."""
    rows = [(title if pair == "-" else f"{title}, {pair}", r) for title, pair, r in http_rows(results)]
    rows += [(f"served, max_batch_size {batch}", r) for batch, r in (results.get("sweep") or {}).items()]
    return [(title, r) for title, r in rows
            if all(isinstance(r.get(key), (int, float)) for key in ("images_per_s", "p50_s", "p99_s"))]


def benchmark_figure(results: dict[str, Any], path: Path | str, title: str = "") -> Path:
    from pipeline.evaluation.figures import pyplot, save_png

    plt = pyplot()
    rows = chart_rows(results)
    labels = [textwrap.fill(name, LABEL_WIDTH) for name, _ in rows]
    y = list(range(len(rows)))[::-1]  # the report's first row at the top
    height = 1.4 + 0.42 * sum(label.count("\n") + 1 for label in labels)
    figure, (rate, latency) = plt.subplots(1, 2, figsize=(11, height), sharey=True, constrained_layout=True,
                                           gridspec_kw={"width_ratios": [1, 1.2]})
    rates = [r["images_per_s"] for _, r in rows]
    rate.barh(y, rates, color=["C0" if name.startswith("served") else "C2" for name, _ in rows], height=0.6)
    for at, value in zip(y, rates):
        rate.text(value, at, f" {value:.1f}", va="center", fontsize=8)
    rate.set_xlim(0, max(rates) * 1.18)
    rate.set_xlabel("photos answered per second (more is better)")
    rate.set_yticks(y, labels, fontsize=8)
    p50, p99 = [r["p50_s"] for _, r in rows], [r["p99_s"] for _, r in rows]
    latency.hlines(y, p50, p99, color="0.6", linewidth=2, zorder=1)
    latency.scatter(p50, y, color="C0", s=28, zorder=2, label="p50")
    latency.scatter(p99, y, color="C3", s=28, marker="D", zorder=2, label="p99")
    for at, value in zip(y, p99):
        latency.text(value, at, f"  {value:.2f} s", va="center", fontsize=8)
    latency.set_xlim(0, max(p99) * 1.22)
    latency.set_xlabel("latency a client saw, seconds (less is better)")
    latency.legend(fontsize=8, loc="lower right")
    for axis in (rate, latency):
        axis.grid(axis="x", alpha=0.3)
    load = (f"{results.get('endpoint', '/hello')}, {results.get('concurrency', '?')} requests in flight, "
            f"{results.get('duration_s', 0):.0f} s measured per row, {results.get('photos', '?')} photos "
            f"({results.get('phones', '?')} full-size phone JPEGs)")
    figure.suptitle(f"{title}: {load}" if title else load, fontsize=10)
    return save_png(figure, path)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m load_tests.benchmark_chart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a benchmark.json, or the folder holding it (load_tests.benchmark --out)")
    parser.add_argument("--out", required=True, help="the picture to write (.png)")
    parser.add_argument("--title", default="", help="what run this is (its date, the machine): the json does not say")
    args = parser.parse_args(argv)
    try:
        written = benchmark_figure(read_results(args.results), args.out, args.title)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    print(written)
    return written


if __name__ == "__main__":
    main()
