"""Train the one-class "product" detector: an ultralytics YOLO built from its yaml (no pretrained download).

    python -m pipeline.train.yolo_detector train --data ../shared/data/freiburg_groceries --out artifacts/detector \
        [--model yolov8n.yaml --imgsz 224 --epochs 100 --time 1.5 --batch 32 --device cpu]

`--data` is either a YOLO-format folder (images/<split>/*.jpg beside labels/<split>/*.txt, any number of
categories) or a ready data.yaml. A folder is turned into a one-class view under <out>/dataset/ (symlinked
images, labels rewritten to class 0, a seeded-hash validation split) because the source is read-only and
must not be copied into the repository. Writes <out>/best.pt and <out>/train_summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.loop_modes import LARGEST_PRODUCT
from pipeline.core.model_label import load_model_label
from pipeline.core.models import YoloDetector
from pipeline.core.paths import IMAGE_SUFFIXES, SERVE_CONFIG
from pipeline.core.photo_to_answer import ModelFacts, PhotoToAnswer
from pipeline.core.settings import serving_settings
from pipeline.core.yolo_offline import prepare_ultralytics
from pipeline.data.datasets import load_labelled_photos
from pipeline.data.held_back import is_validation
from pipeline.train.dataclass_cli import add_options, config_argv, config_from_args, option

CLASS_NAMES = ["product"]


@dataclass
class DetectorTrainConfig:
    """The detector training run. Each field is a `train` option too (pipeline.train.dataclass_cli)."""

    data: str = option(help="YOLO-format folder (images/, labels/) or a data.yaml")
    out: str = option("artifacts/detector", help="run folder: best.pt, train_summary.json, train/, dataset/")
    model: str = option("yolov8n.yaml", help="ultralytics model yaml (built from scratch)")
    imgsz: int = option(224, help="input side, in pixels")
    epochs: int = option(100, help="at most this many epochs")
    time: float | None = option(None, help="hours; caps training time (overrides --epochs)")
    batch: int = option(32, help="images per step")
    workers: int = option(2, help="dataloader workers (ultralytics uses 0 on CPU)")
    device: str = option("cpu", help="cpu, 0, 0,1, ...")
    patience: int = option(20, help="epochs without improvement before stopping")
    fraction: float = option(1.0, help="train on this share of the training split (timing runs)")
    val_fraction: float = option(0.1, help="share of a YOLO folder's images held back for validation")
    seed: int = option(0, help="training seed and validation-split seed")
    cache: str | None = option(None, choices=("ram", "disk"), help="ultralytics image cache")
    plots: bool = option(False, help="write ultralytics' training plots")
    resume: bool = option(False, help="continue <out>/train/weights/last.pt")


def single_class_lines(text: str, source: Path) -> list[str]:
    """YOLO label lines with every box's class replaced by 0 (each category is a "product")."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{source}:{number}: expected 'class cx cy w h', got {line!r}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise ValueError(f"{source}:{number}: box values are not numbers: {line!r}") from None
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"{source}:{number}: box values must be normalised to 0..1, got {line!r}")
        lines.append("0 " + " ".join(fields[1:]))
    return lines


def build_dataset_view(source: Path, view: Path, val_fraction: float = 0.1, seed: int = 0) -> Path:
    """A one-class YOLO dataset under `view` that points at the images in `source`; returns its data.yaml.

    Every image of every split folder in source/images/ is symlinked into view/images/{train,val}/ by
    `is_validation` (so a source that has its own val split is re-split the same way), and its label file
    rewritten to class 0 under view/labels/. An image without a label file is a background image.
    val_fraction=1 puts every image in val: a view to evaluate a detector on.
    """
    source, view = Path(source).resolve(), Path(view).resolve()
    images = sorted(p for p in (source / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"no images under {source / 'images'} (expected images/<split>/*.jpg and labels/<split>/*.txt)")
    if view.exists():
        shutil.rmtree(view)  # rebuilt every time: cheap, and never stale against the source
    counts = {"train": 0, "val": 0}
    boxes = {"train": 0, "val": 0}
    seen: set[str] = set()
    for image in images:
        if image.name in seen:
            raise ValueError(f"two images named {image.name} under {source / 'images'}: names must be unique")
        seen.add(image.name)
        split = "val" if is_validation(image.name, val_fraction, seed) else "train"
        relative = image.relative_to(source / "images")
        label = (source / "labels" / relative).with_suffix(".txt")
        lines = single_class_lines(label.read_text(encoding="utf-8"), label) if label.is_file() else []
        (view / "images" / split).mkdir(parents=True, exist_ok=True)
        (view / "labels" / split).mkdir(parents=True, exist_ok=True)
        (view / "images" / split / image.name).symlink_to(image)
        (view / "labels" / split / image.name).with_suffix(".txt").write_text("".join(f"{line}\n" for line in lines))
        counts[split] += 1
        boxes[split] += len(lines)
    if not counts["val"] or (not counts["train"] and val_fraction < 1.0):
        raise ValueError(f"split of {len(images)} images left {counts}: use more images or another --val-fraction")
    data_yaml = view / "data.yaml"
    # JSON is valid YAML; absolute paths so the file works from any working directory.
    data_yaml.write_text(
        json.dumps(
            {
                "path": str(view),
                # val_fraction 1 makes an evaluation-only view; ultralytics still wants a train entry.
                "train": "images/train" if counts["train"] else "images/val",
                "val": "images/val",
                "names": dict(enumerate(CLASS_NAMES)),
                "source": str(source),
                "images": counts,
                "boxes": boxes,
                "val_fraction": val_fraction,
                "split_seed": seed,
            },
            indent=2,
        )
        + "\n"
    )
    return data_yaml


def resolve_data(data: Path, out: Path, val_fraction: float, seed: int) -> Path:
    """A data.yaml to train on: the one given, or a one-class view built from a YOLO folder."""
    data = Path(data)
    if data.is_file() and data.suffix in {".yaml", ".yml"}:
        return data.resolve()
    if data.is_dir():
        return build_dataset_view(data, Path(out) / "dataset", val_fraction, seed)
    raise FileNotFoundError(f"--data {data} is neither a data.yaml nor a YOLO-format folder")


def validate(weights: Path | str, data_yaml: Path | str, imgsz: int, device: str = "cpu", split: str = "val",
             batch: int = 16) -> dict[str, float]:
    """Precision / recall / mAP50 / mAP50-95 of a checkpoint on one split of a YOLO data.yaml (ultralytics val)."""
    prepare_ultralytics()
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(
        data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, device=device, plots=False, verbose=False,
        workers=0, project=str(Path(weights).resolve().parent / "val"), name=split, exist_ok=True,
    )
    box = metrics.box  # mean over classes (here the one class)
    return {"precision": float(box.mp), "recall": float(box.mr), "mAP50": float(box.map50), "mAP50-95": float(box.map)}


def train(config: DetectorTrainConfig, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, copy the best checkpoint to <out>/best.pt, validate it and write train_summary.json.

    `argv`: the `train` command line the run was started with, for the summary (default: one that gives `config`).
    """
    prepare_ultralytics()
    import torch
    from ultralytics import YOLO

    argv = ["train", *config_argv(config)] if argv is None else list(argv)
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = resolve_data(Path(config.data), out, config.val_fraction, config.seed)
    cuda = config.device not in ("cpu", "mps") and torch.cuda.is_available()
    run_dir = out / "train"
    started = time.time()
    if config.resume:
        last = run_dir / "weights" / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} does not exist")
        model = YOLO(str(last))
        model.train(resume=True)
    else:
        model = YOLO(config.model)  # a .yaml builds a fresh, randomly initialised network
        options = {
            "data": str(data_yaml), "epochs": config.epochs, "imgsz": config.imgsz, "batch": config.batch,
            "workers": config.workers, "device": config.device, "project": str(out), "name": "train", "exist_ok": True,
            "seed": config.seed, "patience": config.patience, "fraction": config.fraction, "pretrained": False,
            "amp": cuda, "plots": config.plots, "cache": config.cache or False, "verbose": True,
        }
        if config.time:
            options["time"] = config.time  # hours; ultralytics re-plans the epoch count to fit it
        model.train(**options)
    wall = time.time() - started

    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        best = run_dir / "weights" / "last.pt"
    shutil.copyfile(best, out / "best.pt")
    metrics = validate(out / "best.pt", data_yaml, config.imgsz, config.device)
    data_info = json.loads(data_yaml.read_text()) if data_yaml.parent == out / "dataset" else {}
    summary = {
        "command": " ".join(["python -m pipeline.train.yolo_detector", *map(shlex.quote, argv)]),
        "args": {"command": "train", **dataclasses.asdict(config)},
        "architecture": Path(config.model).stem,
        "classes": CLASS_NAMES,
        "input_size": config.imgsz,
        "data_yaml": str(data_yaml),
        "dataset": {k: data_info[k] for k in ("source", "images", "boxes", "val_fraction", "split_seed") if k in data_info},
        "epochs_completed": _epochs_completed(run_dir),
        "wall_time_s": round(wall, 1),
        "device": "cuda" if cuda else config.device,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "val_metrics": metrics,
        "best_checkpoint": str(out / "best.pt"),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["val_metrics"], indent=2))
    return summary


def _epochs_completed(run_dir: Path) -> int | None:
    """Rows in ultralytics' results.csv: the epochs actually run (time= may stop before --epochs)."""
    results = run_dir / "results.csv"
    if not results.is_file():
        return None
    return max(0, len(results.read_text().strip().splitlines()) - 1)


def boxes(args: argparse.Namespace) -> dict[str, list[float] | None]:
    """The box /hello would cut from each photo of a labelled split (serving's recognition core and settings),
    as JSON {photo path: [x1, y1, x2, y2] in decoded-photo pixels, or null}: crops for classifier training."""
    bundle = load_model_label(args.model_label)
    settings = serving_settings(args.serve_config)
    photos = [str(path) for path, _ in load_labelled_photos(args.data, bundle.labels, args.split)]
    detector = YoloDetector(bundle.detector_path, use_gpu=args.device != "cpu")
    found = PhotoToAnswer(ModelFacts.of(bundle), settings.recognizer).run_files(
        photos, lambda pixels: detector.detect(pixels, settings.detector), None, LARGEST_PRODUCT)
    result = {path: (list(r.regions[0]) if r.regions[0] else None) for path, r in zip(photos, found)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{sum(v is not None for v in result.values())} of {len(result)} photos have a box: {args.out}")
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train.yolo_detector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train the one-class product detector")
    add_options(train_cmd, DetectorTrainConfig)
    boxes_cmd = commands.add_parser("boxes", help="the box /hello cuts from each photo of a labelled split (JSON)")
    boxes_cmd.add_argument("--model-label", default="model_label", help="whose detector (and labels) to use")
    boxes_cmd.add_argument("--data", required=True, help="split file, folder with <split>.txt, or folder per label")
    boxes_cmd.add_argument("--split", default="train")
    boxes_cmd.add_argument("--serve-config", default=str(SERVE_CONFIG), help="detector and photo settings, as served")
    boxes_cmd.add_argument("--device", default="cpu")
    boxes_cmd.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "train":
        # the command line as given is recorded in train_summary.json
        train(config_from_args(DetectorTrainConfig, args), sys.argv[1:] if argv is None else argv)
    else:
        boxes(args)


if __name__ == "__main__":
    main()
