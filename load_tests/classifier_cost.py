"""Classifier cost per crop: several model_label/ folders' SavedModels side by side, in one process, on the same
real crops, calls interleaved so that the machine's drift hits every model alike.

    python -m load_tests.classifier_cost --model-dir OLD_MODEL_LABEL --model-dir model_label [--threads 1] [--rounds 30]

Each round times one classifier call per model and batch size (the crops of GroceryStore val photos, squashed to each
model's own input size as serving does); the report gives the median ms per crop and the ratio to the first model.
Threads: 1 is what a Classifier replica gets from serve_config.yaml's CPU share on a 2-core node.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from load_tests.photos import grocery_val_photos
from pipeline.core.model_label import load_model_label
from pipeline.core.models import SavedModelClassifier
from pipeline.core.preprocessing import load_training_image


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure(model_dirs: list[str], batches: tuple[int, ...] = (1, 8), rounds: int = 30, threads: int = 1) -> dict:
    photos = grocery_val_photos(max(batches))
    models = []
    for directory in model_dirs:
        bundle = load_model_label(directory)
        size = bundle.classifier_input_size
        crops = [load_training_image(str(p), size) for p in photos]
        model = SavedModelClassifier(bundle.classifier_path, threads=threads, batch=max(batches))
        for batch in batches:  # warm-up: tracing and the first allocations are not what a crop costs
            model(crops[:batch])
        models.append((directory, bundle, model, crops))
    seconds: dict[tuple[int, int], list[float]] = {(m, b): [] for m in range(len(models)) for b in batches}
    for _ in range(rounds):
        for index, (_, _, model, crops) in enumerate(models):
            for batch in batches:
                started = time.perf_counter()
                model(crops[:batch])
                seconds[(index, batch)].append((time.perf_counter() - started) / batch)
    rows = []
    for index, (directory, bundle, _, _) in enumerate(models):
        for batch in batches:
            median = float(np.median(seconds[(index, batch)])) * 1000
            reference = float(np.median(seconds[(0, batch)])) * 1000
            rows.append({"model_dir": directory, "classifier": bundle.versions["classifier"],
                         "input_size": bundle.classifier_input_size, "batch": batch, "ms_per_crop": round(median, 2),
                         "ratio_to_first": round(median / reference, 2)})
    return {"cpu": cpu_name(), "threads": threads, "rounds": rounds, "rows": rows}


def to_markdown(report: dict) -> str:
    lines = [f"Classifier cost per crop, {report['cpu']}, {report['threads']} thread(s), median of {report['rounds']} "
             "interleaved rounds:", "", "| model | classifier | px | batch | ms per crop | × first |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model_dir']} | {r['classifier']} | {r['input_size']} | {r['batch']} | {r['ms_per_crop']:.1f} | "
              f"{r['ratio_to_first']:.2f} |" for r in report["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load_tests.classifier_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", action="append", required=True, help="a model_label/ folder (repeat: first is the reference)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args(argv)
    report = measure(args.model_dir, tuple(int(b) for b in args.batches.split(",")), args.rounds, args.threads)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(to_markdown(report))


if __name__ == "__main__":
    main()
