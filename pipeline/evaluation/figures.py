"""The pictures of the evaluation and of training, drawn from what those commands saved, so that none needs the
models or the photos again: an evaluation's confusion matrix and per-class accuracy from its evaluation.json
(pipeline.evaluation.evaluate writes both beside it too), and classifier runs' training curves from their
history.csv (pipeline.train.finetune).

    python -m pipeline.evaluation.figures evaluation artifacts/evaluation_final --out docs/figures
    python -m pipeline.evaluation.figures training artifacts/finetune_ema_lite0 artifacts/finalfit_lite0 \\
        --out docs/figures/training_curves.png

`evaluation` takes an evaluation.json or the folder holding it and writes confusion_matrix.png and
per_class_accuracy.png to --out; `training` takes run folders (or their history.csv) and writes one picture. A
missing or foreign input stops the command with a message naming the file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.report import ROWS
from pipeline.train.finetune_config import HISTORY_NAME, SUMMARY_NAME

DPI = 150
CONFUSION_NAME = "confusion_matrix.png"
PER_CLASS_NAME = "per_class_accuracy.png"
EVALUATION_NAME = "evaluation.json"


def pyplot() -> Any:
    import matplotlib  # only here: a training-install package, and slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Any, path: Path | str) -> Path:
    """`figure` as a PNG at DPI with a palette of 256 colours (a chart has few; a third of the bytes), then closed."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drawn = io.BytesIO()
    figure.savefig(drawn, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.08)  # nothing cut at an edge
    pyplot().close(figure)
    with Image.open(drawn) as image:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def display_name(label: str) -> str:
    """A label's product name: labels.txt's `name_container_size` without its empty fields."""
    return " ".join(part.strip() for part in label.split("_") if part.strip()) or label


# ---------------------------------------------------------------- inputs


def read_evaluation(path: Path | str) -> dict[str, Any]:
    """An evaluation.json (or the folder holding it), checked to hold what the pictures read."""
    path = Path(path)
    if path.is_dir():
        path = path / EVALUATION_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (python -m pipeline.evaluation.evaluate --out DIR writes DIR/{EVALUATION_NAME})")
    report = json.loads(path.read_text(encoding="utf-8"))
    hello = report.get("classifier", {}).get("hello", {}) if isinstance(report, dict) else {}
    if not {"confusion_matrix", "per_class", "top1"} <= set(hello):
        raise ValueError(f"{path}: no /hello row with its confusion matrix and per-class accuracy: "
                         "is it what pipeline.evaluation.evaluate writes?")
    return report


def read_history(run: Path | str) -> tuple[str, list[dict[str, float]], dict[str, Any]]:
    """A classifier run's name, its history.csv (one row per epoch; empty cells NaN) and its train_summary.json
    ({} without one). `run`: the run folder or its history.csv."""
    run = Path(run)
    history = run / HISTORY_NAME if run.is_dir() else run
    if not history.is_file():
        raise FileNotFoundError(f"{history}: no such file (python -m pipeline.train.finetune train --out RUN writes RUN/{HISTORY_NAME})")
    with history.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows or not {"epoch", "train_loss", "selection_top1"} <= set(rows[0]):
        raise ValueError(f"{history}: not a training history (columns epoch, train_loss, selection_top1, one row per epoch)")
    epochs = [{key: float(value) if value not in ("", None) else math.nan for key, value in row.items()} for row in rows]
    summary_path = history.parent / SUMMARY_NAME
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    return history.parent.name, epochs, summary


def departments(report: dict[str, Any], labels: Sequence[str]) -> list[str] | None:
    """Per label, the first folder below the one all the evaluated photos share (GroceryStore: Fruit, Packages,
    Vegetables), read from the per-photo answers; None unless every class's photos are in one such folder, there
    are fewer such folders than classes, and each folder's classes are neighbours in label order (a class without
    photos takes its neighbour's)."""
    answers = report.get("answers") or []
    parts = [Path(answer["path"]).parts for answer in answers]
    shared = 0
    while parts and all(len(p) > shared + 1 for p in parts) and len({p[shared] for p in parts}) == 1:
        shared += 1
    if not parts or not all(len(p) > shared + 1 for p in parts):
        return None
    found: dict[str, set[str]] = {}
    for answer, p in zip(answers, parts):
        found.setdefault(answer["target"], set()).add(p[shared])
    if any(len(folders) != 1 for folders in found.values()) or not 2 <= len(set().union(*found.values())) < len(labels):
        return None
    groups = [next(iter(found[label])) if label in found else None for label in labels]
    for i in range(1, len(groups)):
        groups[i] = groups[i] or groups[i - 1]
    for i in range(len(groups) - 2, -1, -1):
        groups[i] = groups[i] or groups[i + 1]
    runs = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    return [str(g) for g in groups] if len(runs) == len(set(runs)) else None


def _spans(groups: Sequence[str]) -> list[tuple[str, int, int]]:
    """(name, first index, end index) of each run of equal names."""
    spans: list[tuple[str, int, int]] = []
    for i, name in enumerate(groups):
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], i + 1)
        else:
            spans.append((name, i, i + 1))
    return spans


# ---------------------------------------------------------------- the pictures


def confusion_figure(report: dict[str, Any], path: Path | str, row: str = "hello") -> Path:
    """The confusion matrix of one row of the report (by default what /hello answers), each true class's photos
    as shares: right answers on the diagonal in blue, wrong ones in red; the data set's departments ruled off."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    result = report["classifier"][row]
    labels = list(result["per_class"])
    matrix = np.asarray(result["confusion_matrix"], dtype=float)
    n = len(labels)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    right = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.3, 1.0, 256)))
    wrong = ListedColormap(plt.get_cmap("Reds")(np.linspace(0.3, 1.0, 256)))
    pixels = np.ones((n, n, 4))
    diagonal = np.eye(n, dtype=bool)
    pixels[diagonal & (share > 0)] = right(share[diagonal & (share > 0)])
    pixels[~diagonal & (share > 0)] = wrong(share[~diagonal & (share > 0)])

    side = float(np.clip(0.12 * n + 2.5, 4.5, 13.0))
    figure, axis = plt.subplots(figsize=(side + 1.6, side + 0.4), constrained_layout=True)
    axis.imshow(pixels, interpolation="nearest")
    size = float(np.clip(420 / max(n, 1), 4.5, 9))
    names = [display_name(label) for label in labels]
    axis.set_xticks(np.arange(n), names, rotation=90, fontsize=size)
    axis.set_yticks(np.arange(n), names, fontsize=size)
    axis.set_xlabel("answered")
    axis.set_ylabel("true class")
    axis.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    axis.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    axis.grid(which="minor", color="0.93", linewidth=0.3)
    axis.tick_params(which="minor", length=0)
    groups = departments(report, labels)
    for name, start, end in _spans(groups) if groups else []:
        if start:
            axis.axhline(start - 0.5, color="0.45", linewidth=0.7)
            axis.axvline(start - 0.5, color="0.45", linewidth=0.7)
        axis.text(n - 0.2, (start + end - 1) / 2, f" {name}", rotation=-90, va="center", ha="left", fontsize=size + 2)
    for colours, title in ((right, "right: share of the class's photos"), (wrong, "answered as another class")):
        mappable = plt.cm.ScalarMappable(cmap=colours, norm=plt.Normalize(0, 1))
        figure.colorbar(mappable, ax=axis, shrink=0.35, pad=0.01, aspect=25).set_label(title, fontsize=8)
    with_photos = int((totals[:, 0] > 0).sum())
    axis.set_title(f"{_row_title(report, row)} on {_data_name(report)}: top-1 {result['top1']:.1%} "
                   f"({int(matrix.sum())} photos of {with_photos} of the {n} classes"
                   f"{'; a class without photos is a blank row' if with_photos < n else ''})", fontsize=10)
    return save_png(figure, path)


def per_class_figure(report: dict[str, Any], path: Path | str) -> Path:
    """Per class, the share of its photos /hello answers right (bars, worst first, coloured by department), with
    the report's other rows as marks: the classifier on the detector's crop and the ImageNet backbone's probe."""
    plt = pyplot()
    rows = report["classifier"]
    labels = list(rows["hello"]["per_class"])
    groups = departments(report, labels) or [""] * len(labels)
    colour_of = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(groups))}
    shown = [i for i, label in enumerate(labels) if rows["hello"]["per_class"][label]["n"]]
    shown.sort(key=lambda i: (rows["hello"]["per_class"][labels[i]]["accuracy"], -i), reverse=True)  # worst at the top
    height = float(np.clip(0.13 * len(shown) + 1.6, 3.0, 14.0))
    figure, axis = plt.subplots(figsize=(7.5, height), constrained_layout=True)
    y = np.arange(len(shown))
    axis.barh(y, [100 * rows["hello"]["per_class"][labels[i]]["accuracy"] for i in shown], height=0.72,
              color=[colour_of[groups[i]] for i in shown], alpha=0.55)
    for row, marker in (("whole_photo", "|"), ("hello_crop", "x"), ("backbone_baseline", ".")):
        if row in rows and (row != "whole_photo" or report.get("hello_policy") != "whole_photo"):
            axis.scatter([100 * rows[row]["per_class"][labels[i]]["accuracy"] for i in shown], y, marker=marker, s=14,
                         color="0.15", linewidths=0.8, label=ROWS[row], zorder=3)
    size = float(np.clip(500 / max(len(shown), 1), 5, 9))
    axis.set_yticks(y, [f"{display_name(labels[i])} ({rows['hello']['per_class'][labels[i]]['n']})" for i in shown], fontsize=size)
    axis.set_ylim(-0.7, len(shown) - 0.3)
    axis.set_xlim(0, 103)
    axis.set_xlabel("share of the class's photos answered right (%)")
    axis.xaxis.set_ticks_position("both")
    axis.tick_params(axis="x", labeltop=True)
    handles, names = axis.get_legend_handles_labels()
    if any(groups):
        from matplotlib.patches import Patch

        handles += [Patch(color=colour, alpha=0.55) for colour in colour_of.values()]
        names += [f"/hello, {name}" for name in colour_of]
    figure.legend(handles, names, loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    axis.set_title(f"{_row_title(report, 'hello')} per class, {_data_name(report)}: {rows['hello']['top1']:.1%} top-1\n"
                   f"(in brackets: the class's photos{'; classes without photos left out' if len(shown) < len(labels) else ''})",
                   fontsize=9)
    return save_png(figure, path)


def training_figure(runs: Sequence[Path | str], path: Path | str) -> Path:
    """Per run, the training loss per epoch and the selection split's top-1 per epoch (the trained weights and
    their moving average), the epoch the run chose marked; a final fit has no selection split, only its loss."""
    histories = [read_history(run) for run in runs]
    plt = pyplot()
    figure, (loss_axis, top1_axis) = plt.subplots(1, 2, figsize=(10, 3.9), constrained_layout=True)
    for i, (name, epochs, summary) in enumerate(histories):
        colour, x = f"C{i}", [row["epoch"] for row in epochs]
        final_fit = not any(math.isfinite(row["selection_top1"]) for row in epochs)
        note = f" (final fit of {Path(summary['final_fit_of']).name})" if summary.get("final_fit_of") else \
            " (nothing held back)" if final_fit else ""
        loss_axis.plot(x, [row["train_loss"] for row in epochs], marker="o", markersize=3, color=colour, label=name + note)
        if final_fit:
            continue
        top1_axis.plot(x, [100 * row["selection_top1"] for row in epochs], marker="o", markersize=3, color=colour,
                       label=f"{name}: trained weights")
        if any(math.isfinite(row.get("average_top1", math.nan)) for row in epochs):
            top1_axis.plot(x, [100 * row.get("average_top1", math.nan) for row in epochs], linestyle="--", color=colour,
                           label=f"{name}: weight average")
        if summary.get("best_epoch") and summary.get("best_selection_top1") is not None:
            top1_axis.scatter([summary["best_epoch"]], [100 * summary["best_selection_top1"]], marker="*", s=140,
                              color=colour, edgecolor="black", linewidths=0.6, zorder=4,
                              label=f"chosen: epoch {summary['best_epoch']} ({summary.get('best_weights', 'trained')} weights)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss (mean over the epoch)")
    loss_axis.set_title("Training loss", fontsize=10)
    loss_axis.legend(fontsize=7)
    top1_axis.set_xlabel("epoch")
    top1_axis.set_ylabel("selection split top-1 (%)")
    top1_axis.set_title("Selection split (held back from training): top-1 per epoch", fontsize=10)
    if top1_axis.has_data():
        top1_axis.legend(fontsize=7, loc="lower right")
    for axis in (loss_axis, top1_axis):
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
    return save_png(figure, path)


def _row_title(report: dict[str, Any], row: str) -> str:
    return f"/hello ({report.get('hello_policy', '?').replace('_', ' ')})" if row == "hello" else ROWS.get(row, row)


def _data_name(report: dict[str, Any]) -> str:
    data = str(report.get("data") or "the labelled set")
    return data.replace("../shared/data/", "")


def write_evaluation_figures(report: dict[str, Any], out: Path | str) -> list[Path]:
    """confusion_matrix.png and per_class_accuracy.png of an evaluation report, in `out`."""
    out = Path(out)
    return [confusion_figure(report, out / CONFUSION_NAME), per_class_figure(report, out / PER_CLASS_NAME)]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    evaluation = commands.add_parser("evaluation", help=f"{CONFUSION_NAME} and {PER_CLASS_NAME} from an {EVALUATION_NAME}")
    evaluation.add_argument("report", help=f"an {EVALUATION_NAME}, or the folder holding it")
    evaluation.add_argument("--out", required=True, help="the folder to write both pictures to")
    training = commands.add_parser("training", help="training curves from classifier runs' history.csv")
    training.add_argument("runs", nargs="+", help=f"run folders (or their {HISTORY_NAME})")
    training.add_argument("--out", required=True, help="the picture to write (.png)")
    args = parser.parse_args(argv)
    try:
        if args.command == "evaluation":
            written = write_evaluation_figures(read_evaluation(args.report), args.out)
        else:
            written = [training_figure(args.runs, args.out)]
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog} {args.command}: {error}\n")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
