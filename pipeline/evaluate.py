"""The original project's comparison on any labelled photo set: the classifier on whole photos vs on the
detector's most confident crop (top-1 / top-5, per-class accuracy), and the detector's precision / recall /
mAP50 / mAP50-95 on a YOLO-format set.

    python -m pipeline.evaluate --model-label model_label --data ../shared/data/grocery_store/val.txt \
        [--detector-data artifacts/detector/dataset/data.yaml] --out artifacts/evaluation

`--data` is a split file (`path, class_id, ...`, paths relative to the file, ids in labels.txt order), a
folder holding val.txt, or a folder with one sub-folder per label. Writes evaluation.md, evaluation.json
and confusion_matrix.png to --out, and prints the markdown.

Images go through pipeline.preprocessing exactly as in serving. torch/ultralytics run before TensorFlow is
imported (inside `classify`): the other order can crash the process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.model_label import load_model_label
from pipeline.preprocessing import classifier_input, decode_photo, detector_input

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Box = tuple[float, float, float, float]


# ---------------------------------------------------------------- metric arithmetic (pure, tested directly)


def top_k_accuracy(probabilities: np.ndarray, targets: Sequence[int], k: int) -> float:
    """Share of rows whose target is among the k highest scores (ties go to the lower class index)."""
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    if len(targets) == 0:
        return float("nan")
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == targets[:, None], axis=1)))


def confusion_matrix(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> list[float | None]:
    """Recall of each class from a confusion matrix; None for a class with no examples."""
    totals = matrix.sum(axis=1)
    return [float(matrix[i, i] / totals[i]) if totals[i] else None for i in range(len(matrix))]


def summarize(probabilities: np.ndarray, targets: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Top-1 / top-5 accuracy, per-class accuracy and the confusion matrix of one set of predictions."""
    matrix = confusion_matrix(targets, np.argmax(probabilities, axis=1), len(labels))
    return {
        "top1": top_k_accuracy(probabilities, targets, 1),
        "top5": top_k_accuracy(probabilities, targets, min(5, len(labels))),
        "per_class": {
            label: {"n": int(matrix[i].sum()), "accuracy": accuracy}
            for i, (label, accuracy) in enumerate(zip(labels, per_class_accuracy(matrix)))
        },
        "confusion_matrix": matrix.tolist(),
    }


# ---------------------------------------------------------------- labelled photos


def load_labelled_set(path: Path | str, labels: Sequence[str], split: str = "val") -> list[tuple[Path, int]]:
    """(image path, class index) pairs from a split file, a folder holding <split>.txt, or folder-per-label."""
    path = Path(path)
    if path.is_dir() and (path / f"{split}.txt").is_file():
        path = path / f"{split}.txt"
    if path.is_file():
        return _read_split_file(path, len(labels))
    if path.is_dir():
        return _read_class_folders(path, labels)
    raise FileNotFoundError(f"{path} is neither a split file nor a folder of labelled photos")


def _read_split_file(path: Path, num_classes: int) -> list[tuple[Path, int]]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        try:
            class_id = int(fields[1])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected 'path, class_id, ...', got {line!r}") from None
        if not 0 <= class_id < num_classes:
            raise ValueError(f"{path}:{number}: class_id {class_id} is outside the {num_classes} labels")
        image = path.parent / fields[0]
        if not image.is_file():
            raise FileNotFoundError(f"{path}:{number}: {image} does not exist")
        items.append((image, class_id))
    if not items:
        raise ValueError(f"{path} lists no images")
    return items


def _read_class_folders(root: Path, labels: Sequence[str]) -> list[tuple[Path, int]]:
    folders = {p.name: p for p in root.iterdir() if p.is_dir()}
    unknown = sorted(set(folders) - set(labels))
    if unknown:
        raise ValueError(f"{root} has folders {unknown} that are not the model's labels: names must match labels.txt")
    items = []
    for index, label in enumerate(labels):  # class order; a label without a folder is simply not evaluated
        if label not in folders:
            continue
        images = sorted(p for p in folders[label].rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{folders[label]} holds no images")
        items += [(image, index) for image in images]
    if not items:
        raise ValueError(f"{root} has no class folders")
    return items


# ---------------------------------------------------------------- model passes


def most_confident_boxes(detector_path: Path | str, images: Sequence[Path], imgsz: int, device: str = "cpu",
                         conf: float = 0.25, batch: int = 16) -> list[tuple[Box, float] | None]:
    """Per image, the detector's most confident box in decoded-photo pixels and its confidence (None: nothing).

    Done the way serving does it: decode_photo, detector_input at the detector's size, boxes scaled back.
    """
    from pipeline.yolo_offline import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(detector_path), task="detect")
    found: list[tuple[Box, float] | None] = []
    for start in range(0, len(images), batch):
        photos = [decode_photo(Path(p).read_bytes()).image for p in images[start:start + batch]]
        inputs = [detector_input(photo, imgsz) for photo in photos]
        results = model.predict([x[..., ::-1] for x in inputs], imgsz=imgsz, conf=conf, device=device,
                                verbose=False)  # ultralytics reads numpy arrays as BGR
        for photo, x, result in zip(photos, inputs, results):
            if len(result.boxes) == 0:
                found.append(None)
                continue
            best = int(result.boxes.conf.argmax())
            scale = photo.width / x.shape[1]
            box = tuple(float(v) * scale for v in result.boxes.xyxy[best].tolist())
            found.append((box, float(result.boxes.conf[best])))
    return found


def classify(classifier_dir: Path | str, images: Sequence[Path], box_sets: Sequence[Sequence[Box | None]],
             size: int, batch: int = 32) -> list[np.ndarray]:
    """Class probabilities [N, C] of the TF SavedModel for each set of boxes (one per image; None: whole photo).

    Each photo is decoded once per batch and cut once per box set, as serving does.
    """
    import tensorflow as tf  # only here: after any torch work in this process

    model = tf.saved_model.load(str(classifier_dir))
    outputs: list[list[np.ndarray]] = [[] for _ in box_sets]
    for start in range(0, len(images), batch):
        photos = [decode_photo(Path(p).read_bytes()).image for p in images[start:start + batch]]
        for output, boxes in zip(outputs, box_sets):
            crops = [classifier_input(photo, box, size) for photo, box in zip(photos, boxes[start:start + batch])]
            output.append(model.serve(tf.constant(np.stack(crops).astype(np.float32))).numpy())
    return [np.concatenate(output) for output in outputs]


def detector_metrics(detector_path: Path | str, detector_data: Path | str, imgsz: int, out: Path,
                     device: str = "cpu") -> dict[str, Any]:
    """Precision / recall / mAP on a data.yaml's val split, or on every image of a YOLO-format folder."""
    from pipeline.detector import build_dataset_view, validate

    detector_data = Path(detector_data)
    if detector_data.is_dir():
        detector_data = build_dataset_view(detector_data, out / "detector_dataset", val_fraction=1.0)
    return {"data": str(detector_data), **validate(detector_path, detector_data, imgsz, device)}


# ---------------------------------------------------------------- the comparison


def evaluate(*, classifier_dir: Path | str, detector_path: Path | str, labels: Sequence[str], classifier_size: int,
             detector_size: int, photos: Sequence[tuple[Path, int]], out: Path | str,
             detector_data: Path | str | None = None, device: str = "cpu", conf: float = 0.25,
             data_description: str = "") -> dict[str, Any]:
    """Run both comparisons, write evaluation.{md,json} and confusion_matrix.png to `out`; return the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [path for path, _ in photos]
    targets = np.array([target for _, target in photos])

    report: dict[str, Any] = {"data": data_description, "images": len(images), "classes": len(labels)}
    if detector_data is not None:  # torch work first, TensorFlow (classify) after
        report["detector"] = detector_metrics(detector_path, detector_data, detector_size, out, device)
    found = most_confident_boxes(detector_path, images, detector_size, device, conf)
    crop_boxes = [f[0] if f else None for f in found]
    whole, cropped = classify(classifier_dir, images, [[None] * len(images), crop_boxes], classifier_size)
    if whole.shape[1] != len(labels):
        raise ValueError(f"the classifier has {whole.shape[1]} outputs but there are {len(labels)} labels")

    report["classifier"] = {"whole_photo": summarize(whole, targets, labels),
                            "detector_crop": summarize(cropped, targets, labels)}
    report["classifier"]["detector_crop"]["no_detection_whole_photo_used"] = sum(f is None for f in found)
    report["detector_confidence_threshold"] = conf

    (out / "evaluation.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown = to_markdown(report)
    (out / "evaluation.md").write_text(markdown, encoding="utf-8")
    plot_confusion(report, labels, out / "confusion_matrix.png")
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures worth recording in a manifest: no per-class tables or matrices."""
    classifier = {
        mode: {"top1": r["top1"], "top5": r["top5"]} for mode, r in report["classifier"].items()
    }
    classifier["detector_crop"]["no_detection_whole_photo_used"] = \
        report["classifier"]["detector_crop"]["no_detection_whole_photo_used"]
    return {"data": report["data"], "images": report["images"], "classifier": classifier,
            **({"detector": report["detector"]} if "detector" in report else {})}


def to_markdown(report: dict[str, Any]) -> str:
    whole, crop = report["classifier"]["whole_photo"], report["classifier"]["detector_crop"]
    lines = [
        f"# Evaluation on {report['data'] or 'the labelled set'}",
        "",
        f"{report['images']} photos, {report['classes']} classes.",
        "",
        "| classifier input | top-1 | top-5 |",
        "|---|---|---|",
        f"| whole photo | {whole['top1']:.2%} | {whole['top5']:.2%} |",
        f"| detector's most confident crop (whole photo when none: {crop['no_detection_whole_photo_used']}) "
        f"| {crop['top1']:.2%} | {crop['top5']:.2%} |",
        "",
    ]
    if "detector" in report:
        d = report["detector"]
        lines += [
            f"Detector on `{d['data']}`:",
            "",
            "| precision | recall | mAP50 | mAP50-95 |",
            "|---|---|---|---|",
            f"| {d['precision']:.3f} | {d['recall']:.3f} | {d['mAP50']:.3f} | {d['mAP50-95']:.3f} |",
            "",
        ]
    lines += ["## Per-class accuracy", "", "| class | photos | whole photo | crop |", "|---|---|---|---|"]
    for label, entry in whole["per_class"].items():
        if entry["n"]:
            lines.append(f"| {label} | {entry['n']} | {entry['accuracy']:.0%} | "
                         f"{crop['per_class'][label]['accuracy']:.0%} |")
    return "\n".join(lines) + "\n"


def plot_confusion(report: dict[str, Any], labels: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrices, whole photo beside detector crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    side = max(6.0, min(24.0, 0.18 * n + 3))
    figure, axes = plt.subplots(1, 2, figsize=(2 * side, side), constrained_layout=True)
    for axis, (mode, title) in zip(axes, (("whole_photo", "whole photo"), ("detector_crop", "detector crop"))):
        matrix = np.array(report["classifier"][mode]["confusion_matrix"], dtype=float)
        rows = matrix.sum(axis=1, keepdims=True)
        image = axis.imshow(np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0), vmin=0, vmax=1,
                            cmap="Blues")
        axis.set_title(f"{title}: top-1 {report['classifier'][mode]['top1']:.1%}")
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        ticks = np.arange(n)
        axis.set_xticks(ticks, labels, rotation=90, fontsize=max(3, 10 - n // 10))
        axis.set_yticks(ticks, labels, fontsize=max(3, 10 - n // 10))
    figure.colorbar(image, ax=axes, shrink=0.6, label="share of the true class")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-label", default="model_label", help="a model_label/ folder (verified)")
    parser.add_argument("--data", required=True, help="split file, folder with val.txt, or folder per label")
    parser.add_argument("--split", default="val", help="which <split>.txt to read when --data is a folder")
    parser.add_argument("--detector-data", help="YOLO data.yaml (its val split) or YOLO-format folder (all)")
    parser.add_argument("--out", default="artifacts/evaluation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--conf", type=float, default=0.25, help="detector confidence threshold for crops")
    args = parser.parse_args(argv)

    from pipeline.yolo_offline import prepare_ultralytics

    prepare_ultralytics()
    import torch  # noqa: F401  (before TensorFlow, see the module docstring)

    bundle = load_model_label(args.model_label)
    photos = load_labelled_set(args.data, bundle.labels, args.split)
    report = evaluate(
        classifier_dir=bundle.classifier_path, detector_path=bundle.detector_path, labels=bundle.labels,
        classifier_size=bundle.classifier_input_size, detector_size=bundle.detector_input_size, photos=photos,
        out=Path(args.out), detector_data=args.detector_data, device=args.device, conf=args.conf,
        data_description=str(args.data),
    )
    print((Path(args.out) / "evaluation.md").read_text(encoding="utf-8"))
    return report


if __name__ == "__main__":
    main()
