"""The original project's comparison on any labelled photo set — the ImageNet backbone with a linear classifier,
the classifier on whole photos, and what `/hello` answers (the largest detector box, cropped through the same
recognition core as serving) — top-1 / top-5 and per class; the unknown threshold calibrated on the /hello
answers; and the detector's precision / recall / mAP50 / mAP50-95 on a YOLO-format set.

    python -m pipeline.evaluation.evaluate --model-label model_label --data ../shared/data/grocery_store/val.txt \
        [--detector-data artifacts/detector/dataset/data.yaml] [--baseline RUN/baseline_export] --out artifacts/evaluation

`--data` is a split file (`path, class_id, ...`, paths relative to the file, ids in labels.txt order), a
folder holding val.txt, or a folder with one sub-folder per label. Writes evaluation.md, evaluation.json,
confusion_matrix.png and per_class_accuracy.png (pipeline.evaluation.figures, which draws them again from the json)
to --out, and prints the markdown.

Photos go through serving's photo→answer loop (pipeline.core.photo_to_answer) with serving's model adapters.
torch/ultralytics load before TensorFlow (ModelsUnderTest.load): the other order can crash the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.classification_metrics import calibrate_unknown, log_loss, precision_at, summarize, surely_better, top_k_accuracy
from pipeline.core.loop_modes import ALL_POLICIES
from pipeline.core.model_label import ModelLabel, load_model_label
from pipeline.core.models import BoxDetector, Classifier, SavedModelClassifier, load_classifier, load_detector
from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.photo_to_answer import Classified, ModelFacts, PhotoToAnswer, Recognized, nothing_detected
from pipeline.core.progress import progress
from pipeline.core.recognition import DEFAULT_HELLO_POLICY, HELLO_POLICIES, hello_probabilities
from pipeline.core.settings import ServingSettings, serving_settings
from pipeline.core.yolo_offline import prepare_ultralytics
from pipeline.data.datasets import load_labelled_photos
from pipeline.evaluation.figures import write_evaluation_figures
from pipeline.evaluation.report import ROWS, to_markdown
from pipeline.train.yolo_detector import build_dataset_view, validate

# ---------------------------------------------------------------- model passes


ClassifyCrops = Callable[[list[np.ndarray]], Classified]


@dataclass(frozen=True)
class ModelsUnderTest:
    """The models evaluated, loaded through serving's adapters, and what the loop must know of them."""

    facts: ModelFacts
    detector: BoxDetector
    classifier: Classifier

    @classmethod
    def load(cls, detector_path: Path | str, classifier_dir: Path | str, labels: Sequence[str], classifier_size: int,
             detector_size: int, device: str = "cpu", classifier_runtime: str = "savedmodel",
             detector_runtime: str = "torch", whole_photo_share: float = 1.0) -> ModelsUnderTest:
        detector = load_detector(detector_path, detector_runtime, use_gpu=device != "cpu")  # torch first, TensorFlow after
        return cls(ModelFacts(labels, classifier_size, detector_size, whole_photo_share=whole_photo_share), detector,
                   load_classifier(classifier_dir, classifier_runtime))

    @classmethod
    def served_on_cpu(cls, bundle: ModelLabel) -> tuple[ModelsUnderTest, dict[str, str]]:
        """A model_label/'s models in the runtimes `auto` serves on CPU, and those runtimes."""
        runtimes = {part: bundle.resolve_runtime(part, "auto", use_gpu=False) for part in ("detector", "classifier")}
        models = cls.load(bundle.runtime_path("detector", runtimes["detector"]), bundle.runtime_path("classifier", runtimes["classifier"]),
                          bundle.labels, bundle.classifier_input_size, bundle.detector_input_size,
                          classifier_runtime=runtimes["classifier"], detector_runtime=runtimes["detector"],
                          whole_photo_share=bundle.whole_photo_share)
        return models, runtimes

    def pass_over(self, images: Sequence[Path | str], settings: ServingSettings, mirrored: bool = False,
                  desc: str = "photos") -> list[Recognized]:
        """`photo_pass` with these models; `mirrored`: crops flipped left-right."""
        return photo_pass(self.facts, self.detector, flipped(self.classifier) if mirrored else self.classifier,
                          images, settings, desc)


def flipped(classifier: ClassifyCrops) -> ClassifyCrops:
    """The classifier on crops mirrored left-right (to measure flip averaging, which serving does not do)."""
    return lambda crops: classifier([crop[:, ::-1] for crop in crops])


def photo_pass(models: ModelFacts, detector: BoxDetector | None, classifier: ClassifyCrops | None,
               images: Sequence[Path | str], settings: ServingSettings, desc: str = "photos") -> list[Recognized]:
    """Labelled photos through serving's photo→answer loop, classifying only the prominent product: the largest
    box and the whole photo (policy "average" looks at both, so every policy can be compared from one pass).
    `detector` None: nothing is detected, whole photos are classified. A progress bar named `desc` counts the
    photos (pipeline.core.progress)."""
    detect = (lambda pixels: detector.detect(pixels, settings.detector)) if detector else nothing_detected
    with progress(desc=desc, total=len(images), unit="photo") as bar:
        return PhotoToAnswer(models, settings.recognizer).run_files(images, detect, classifier, ALL_POLICIES, progress=bar.update)


def crop_and_whole(recognized: Sequence[Recognized]) -> tuple[np.ndarray, np.ndarray]:
    """Per photo, the probabilities of the largest box's crop and of the whole photo (the same when nothing was
    detected)."""
    crop = np.stack([r.probabilities[0] for r in recognized])
    whole = np.stack([r.whole_photo if r.whole_photo is not None else r.probabilities[0] for r in recognized])
    return crop, whole


def policy_probabilities(crop: np.ndarray, whole: np.ndarray, detected: Sequence[bool]) -> dict[str, np.ndarray]:
    """Per /hello policy (pipeline.core.recognition.HELLO_POLICIES), the prominent product's probabilities of each photo;
    a photo with no detection has only its whole photo."""
    return {policy: hello_probabilities(crop, whole, detected, policy) for policy in HELLO_POLICIES}


POLICY_COST = {"whole_photo": 0, "crop": 1, "average": 2}
"""What a /hello policy costs (HELLO_POLICIES), cheapest first: the whole photo alone needs neither the detector (with
an empty catalog) nor a crop; the crop needs the detector; the mean needs the detector and two classifier inputs."""


WHOLE_PHOTO_SHARES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
"""The whole-photo views tried on the selection split: the centre share of each side (recognition.whole_photo_box)."""


def choose_whole_photo_share(classifier: ClassifyCrops, labels: Sequence[str], classifier_size: int, detector_size: int,
                             photos: Sequence[tuple[Path, int]], settings: ServingSettings) -> dict[str, Any]:
    """On the selection photos (never val): the whole photo's top-1 / top-5 / log-loss under each WHOLE_PHOTO_SHARES
    view, and the share of the lowest log-loss (the larger share of equals: the smaller change). Log-loss, not top-1:
    on 357 photos top-1 moves by a photo or two between views at random (shipped model of 2026-12-02: 81.8-84.0%,
    no trend), while log-loss traces a smooth curve (0.618 at 1.0, 0.587 at 0.9, 0.657 at 0.7)."""
    images = [path for path, _ in photos]
    targets = np.array([target for _, target in photos])
    figures = {}
    for share in WHOLE_PHOTO_SHARES:
        facts = ModelFacts(labels, classifier_size, detector_size, whole_photo_share=share)
        whole = np.stack([r.probabilities[0] for r in photo_pass(facts, None, classifier, images, settings,
                                                                 f"whole-photo view {share:g}")])
        figures[f"{share:g}"] = {"top1": top_k_accuracy(whole, targets, 1), "top5": top_k_accuracy(whole, targets, 5),
                                 "log_loss": log_loss(whole, targets)}
    chosen = min(WHOLE_PHOTO_SHARES, key=lambda share: figures[f"{share:g}"]["log_loss"])  # min keeps the first of equals
    return {"chosen": chosen, "shares": figures}


def choose_hello_policy(detector_path: Path | str, classifier_dir: Path | str, labels: Sequence[str],
                        photos: Sequence[tuple[Path, int]], settings: ServingSettings, detector_size: int,
                        classifier_size: int, device: str = "cpu", target_precision: float = 0.95) -> dict[str, Any]:
    """On the selection photos (never val): the whole-photo view (choose_whole_photo_share), then each /hello
    policy's top-1 / top-5 and the coverage of its answers at `target_precision`; the chosen policy and the unknown
    threshold calibrated on its answers. The policies the best top-1 is not surely better than (surely_better: a
    paired bootstrap over the photos) are its equals; among them the cheapest (POLICY_COST) wins, then the one
    whose answers can be called known most often."""
    images = [path for path, _ in photos]
    targets = np.array([target for _, target in photos])
    models = ModelsUnderTest.load(detector_path, classifier_dir, labels, classifier_size, detector_size, device)
    view = choose_whole_photo_share(models.classifier, labels, classifier_size, detector_size, photos, settings)
    models = dataclasses.replace(models, facts=ModelFacts(labels, classifier_size, detector_size,
                                                          whole_photo_share=view["chosen"]))
    recognized = models.pass_over(images, settings, desc="/hello policies")
    detected = [r.detected for r in recognized]
    crop, whole = crop_and_whole(recognized)
    by_policy = policy_probabilities(crop, whole, detected)
    calibrations = {policy: calibrate_unknown(p, targets, target_precision) for policy, p in by_policy.items()}
    figures = {policy: {"top1": top_k_accuracy(p, targets, 1), "top5": top_k_accuracy(p, targets, 5),
                        "coverage_at_target": calibrations[policy]["coverage"] if calibrations[policy]["target_met"] else 0.0}
               for policy, p in by_policy.items()}
    right = {policy: p.argmax(axis=1) == targets for policy, p in by_policy.items()}
    best = max(HELLO_POLICIES, key=lambda policy: figures[policy]["top1"])
    equals = [policy for policy in HELLO_POLICIES if not surely_better(right[best], right[policy])]
    chosen = min(equals, key=lambda policy: (POLICY_COST[policy], -figures[policy]["coverage_at_target"]))
    # Flip averaging, measured and not served: it doubles the classifier's work per photo.
    crop_flipped, whole_flipped = crop_and_whole(models.pass_over(images, settings, mirrored=True, desc="flipped"))
    averaged = policy_probabilities((crop + crop_flipped) / 2, (whole + whole_flipped) / 2, detected)[chosen]
    return {"photos": len(images), "whole_photo_share": view, "policies": figures, "hello_policy": chosen,
            "flip_averaged": {"top1": top_k_accuracy(averaged, targets, 1), "top5": top_k_accuracy(averaged, targets, 5)},
            "calibration": calibrations[chosen]}


def detector_metrics(detector_path: Path | str, detector_data: Path | str, imgsz: int, out: Path,
                     device: str = "cpu") -> dict[str, Any]:
    """Precision / recall / mAP on a data.yaml's val split, or on every image of a YOLO-format folder."""
    detector_data = Path(detector_data)
    if detector_data.is_dir():
        detector_data = build_dataset_view(detector_data, out / "detector_dataset", val_fraction=1.0)
    return {"data": str(detector_data), **validate(detector_path, detector_data, imgsz, device)}


# ---------------------------------------------------------------- the comparison


def evaluate(*, classifier_dir: Path | str, detector_path: Path | str, labels: Sequence[str], classifier_size: int,
             detector_size: int, photos: Sequence[tuple[Path, int]], out: Path | str,
             detector_data: Path | str | None = None, device: str = "cpu", settings: ServingSettings | None = None,
             baseline_dir: Path | str | None = None, target_precision: float = 0.95,
             data_description: str = "", selection: dict[str, Any] | None = None,
             hello_policy: str = DEFAULT_HELLO_POLICY, unknown_threshold: float | None = None,
             classifier_runtime: str = "savedmodel", detector_runtime: str = "torch",
             whole_photo_share: float = 1.0) -> dict[str, Any]:
    """Run the comparison, write evaluation.{md,json}, confusion_matrix.png and per_class_accuracy.png to `out`;
    return the report.

    `selection`: what `choose_hello_policy` found on the selection split; its policy makes the /hello row and its
    threshold is applied here (precision and coverage on these photos, fitted elsewhere). Without it, `hello_policy`
    makes the row and `unknown_threshold` (a model_label's, fitted elsewhere) is applied, or when None "unknown" is
    calibrated on these photos themselves (optimistic: say so when reporting); the same for the whole-photo view
    (the selection's share, else `whole_photo_share`).
    `baseline_dir`: a SavedModel of the ImageNet backbone with a linear classifier (the classifier run's
    baseline_export/), for the table's first row. `settings`: serve_config.yaml's unless given.
    """
    settings = settings or serving_settings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [path for path, _ in photos]
    targets = np.array([target for _, target in photos])

    report: dict[str, Any] = {"data": data_description, "images": len(images), "classes": len(labels),
                              "rows": dict(ROWS)}
    if selection and "whole_photo_share" in selection:
        whole_photo_share = selection["whole_photo_share"]["chosen"]
    report["whole_photo_share"] = whole_photo_share
    if detector_data is not None:  # torch work first, TensorFlow (classify) after
        report["detector"] = detector_metrics(detector_path, detector_data, detector_size, out, device)
    models = ModelsUnderTest.load(detector_path, classifier_dir, labels, classifier_size, detector_size, device,
                                  classifier_runtime, detector_runtime, whole_photo_share)
    recognized = models.pass_over(images, settings, desc="evaluation")
    detected = [r.detected for r in recognized]
    crop, whole = crop_and_whole(recognized)
    if whole.shape[1] != len(labels):
        raise ValueError(f"the classifier has {whole.shape[1]} outputs but there are {len(labels)} labels")
    report["classifier"] = {}
    if baseline_dir is not None:
        whole_photos = photo_pass(dataclasses.replace(models.facts, whole_photo_share=1.0), None,  # the view it was fitted on
                                  SavedModelClassifier(baseline_dir), images, settings, "ImageNet baseline")
        baseline = np.stack([r.probabilities[0] for r in whole_photos])
        report["classifier"]["backbone_baseline"] = summarize(baseline, targets, labels)
    report["classifier"]["whole_photo"] = summarize(whole, targets, labels)
    fitted_on = "the model_label"
    if selection:
        report["selection"] = selection
        hello_policy, unknown_threshold = selection["hello_policy"], selection["calibration"]["unknown_threshold"]
        fitted_on = "the selection split"
    report["classifier"]["hello_crop"] = summarize(crop, targets, labels)
    hello = policy_probabilities(crop, whole, detected)[hello_policy]
    report["classifier"]["hello"] = summarize(hello, targets, labels)
    report["classifier"]["hello"]["no_detection_whole_photo_used"] = detected.count(False)
    report["hello_policy"] = hello_policy
    if unknown_threshold is None:
        report["calibration"] = {"answers": "hello", "fitted_on": "these photos",
                                 **calibrate_unknown(hello, targets, target_precision)}
    else:
        measured = precision_at(hello, targets, unknown_threshold)
        report["calibration"] = {"answers": "hello", "fitted_on": fitted_on, "target_precision": target_precision,
                                 "target_met": bool(measured["precision"] >= target_precision), **measured}
    report["answers"] = [  # per photo, what /hello answers (tests compare it with the served graph)
        {"path": str(path), "target": labels[target], "label": labels[int(np.argmax(p))], "confidence": float(np.max(p)),
         "whole_photo": not d}
        for path, target, p, d in zip(images, targets, hello, detected)
    ]
    report["settings"] = {"recognizer": vars(settings.recognizer), "detector": vars(settings.detector)}

    (out / "evaluation.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown = to_markdown(report)
    (out / "evaluation.md").write_text(markdown, encoding="utf-8")
    write_evaluation_figures(report, out)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-label", default="model_label", help="a model_label/ folder (verified)")
    parser.add_argument("--data", required=True, help="split file, folder with val.txt, or folder per label")
    parser.add_argument("--split", default="val", help="which <split>.txt to read when --data is a folder")
    parser.add_argument("--detector-data", help="YOLO data.yaml (its val split) or YOLO-format folder (all)")
    parser.add_argument("--out", default="artifacts/evaluation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--serve-config", default=str(SERVE_CONFIG), help="detector and photo settings, as served")
    parser.add_argument("--baseline", help="ImageNet backbone + linear classifier SavedModel (a run's baseline_export/)")
    parser.add_argument("--target-precision", type=float, default=0.95, help="of the answers called known")
    parser.add_argument("--classifier-runtime", default="auto", help="auto (as served on --device), savedmodel, tflite, tflite_int8")
    parser.add_argument("--detector-runtime", default="auto", help="auto (as served on --device), torch, onnx, onnx_int8")
    parser.add_argument("--recalibrate", action="store_true",
                        help="fit the unknown threshold on these photos (default: apply the model_label's)")
    args = parser.parse_args(argv)

    prepare_ultralytics()
    import torch  # noqa: F401  (before TensorFlow, see the module docstring)

    bundle = load_model_label(args.model_label)
    classifier_runtime = bundle.resolve_runtime("classifier", args.classifier_runtime, use_gpu=args.device != "cpu")
    detector_runtime = bundle.resolve_runtime("detector", args.detector_runtime, use_gpu=args.device != "cpu")
    photos = load_labelled_photos(args.data, bundle.labels, args.split)
    report = evaluate(
        classifier_dir=bundle.runtime_path("classifier", classifier_runtime),
        detector_path=bundle.runtime_path("detector", detector_runtime), labels=bundle.labels,
        classifier_size=bundle.classifier_input_size, detector_size=bundle.detector_input_size, photos=photos,
        out=Path(args.out), detector_data=args.detector_data, device=args.device,
        settings=serving_settings(args.serve_config), baseline_dir=args.baseline,
        target_precision=args.target_precision, data_description=str(args.data), hello_policy=bundle.hello_policy,
        unknown_threshold=None if args.recalibrate else bundle.unknown_threshold_for(classifier_runtime),
        classifier_runtime=classifier_runtime, detector_runtime=detector_runtime,
        whole_photo_share=bundle.whole_photo_share,
    )
    print((Path(args.out) / "evaluation.md").read_text(encoding="utf-8"))
    return report


if __name__ == "__main__":
    main()
