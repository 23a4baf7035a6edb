"""The shipped detector in int8, added to a model_label/ folder without exporting the rest again.

    python -m pipeline.release.detector_int8 --model-label model_label --eval-data ../shared/data/grocery_store

`pipeline.release.export` writes `detector_int8.onnx` with the other runtimes; this adds it to a folder exported before
it existed. It quantises `detector.onnx` (pipeline.release.runtimes.quantize_detector: calibrated on the detector's fit
photos), validates it on the detector's held-back split (the split its training recorded) against the torch
model's mAP50 bar, times torch, ONNX and int8 in one interleaved run (their `ms_per_item`, which `auto`
compares), and, when `auto` then serves another detector on CPU, measures /hello on val with the served pair
again. The manifest gets the entry, its checksum and the new timings.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.classification_metrics import precision_at
from pipeline.core.model_label import MANIFEST_NAME, fastest_within_bar, load_model_label
from pipeline.core.models import load_detector
from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.settings import serving_settings
from pipeline.data.datasets import load_labelled_photos
from pipeline.evaluation.evaluate import ModelsUnderTest
from pipeline.release.runtimes import (
    DETECTOR_MAP50_BAR,
    detector_calibration_photos,
    detector_timing_images,
    hello_answers,
    ms_per_item,
    quantize_detector,
    top1_top5,
)
from pipeline.train.yolo_detector import build_dataset_view, validate


def add_detector_int8(model_label: Path, eval_data: Path, serve_config: Path = SERVE_CONFIG) -> dict[str, Any]:
    bundle = load_model_label(model_label)
    manifest_path = model_label / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    detector = manifest["detector"]
    dataset = detector["training"]["dataset"]
    settings, side = serving_settings(serve_config), bundle.detector_input_size
    with tempfile.TemporaryDirectory() as scratch:
        data_yaml = build_dataset_view(Path(dataset["source"]), Path(scratch) / "detector_dataset",
                                       dataset.get("val_fraction", 0.1), dataset.get("split_seed", 0))
        entry = quantize_detector(model_label, detector_calibration_photos(data_yaml), settings, side)["onnx_int8"]
        path = model_label / entry["path"]
        metrics = validate(path, data_yaml, side)
    reference = detector["metrics"]["mAP50"]
    entry |= {"meets_bar": bool(metrics["mAP50"] >= reference - DETECTOR_MAP50_BAR), "metrics": metrics,
              "bar": {"mAP50_within": DETECTOR_MAP50_BAR, "of_torch": reference},
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    # The three detectors timed in one run, as pipeline.release.runtimes.measure times them (one thread, the same photos).
    val_photos = load_labelled_photos(eval_data, bundle.labels, "val")
    images = detector_timing_images(val_photos, side)
    names = {"torch": "detector.pt", "onnx": detector["runtimes"]["onnx"]["path"], "onnx_int8": entry["path"]}
    detectors = {name: load_detector(model_label / file, name, threads=1) for name, file in names.items()}
    timing = ms_per_item({name: functools.partial(d.detect, images, settings.detector) for name, d in detectors.items()},
                         len(images))
    detector["ms_per_item"] = timing["torch"]
    detector["runtimes"]["onnx"]["ms_per_item"] = timing["onnx"]
    detector["runtimes"]["onnx_int8"] = entry | {"ms_per_item": timing["onnx_int8"]}
    manifest["cpu_runtimes"]["timing"]["detector"] = timing

    served = manifest["cpu_runtimes"]["served_on_cpu"]
    chosen = fastest_within_bar("detector", {"torch": {"ms_per_item": timing["torch"]}, **detector["runtimes"]})
    if chosen != served["detector"]:  # /hello on val with what `auto` now serves
        classifier = served["classifier"]
        models = ModelsUnderTest.load(model_label / names[chosen], bundle.runtime_path("classifier", classifier), bundle.labels,
                                      bundle.classifier_input_size, side, classifier_runtime=classifier, detector_runtime=chosen,
                                      whole_photo_share=bundle.whole_photo_share)
        probabilities, targets, _ = hello_answers(models.facts, models.detector, models.classifier, val_photos, settings,
                                                  bundle.hello_policy)
        served |= {"detector": chosen, "hello": top1_top5(probabilities, targets),
                   "known": precision_at(probabilities, targets, bundle.unknown_threshold_for(classifier))}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return {"onnx_int8": detector["runtimes"]["onnx_int8"], "timing": timing, "served_on_cpu": served}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.release.detector_int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-label", default="model_label")
    parser.add_argument("--eval-data", required=True, help="the labelled photos export measured /hello on (its val split)")
    parser.add_argument("--serve-config", default=str(SERVE_CONFIG))
    args = parser.parse_args(argv)
    print(json.dumps(add_detector_int8(Path(args.model_label), Path(args.eval_data), Path(args.serve_config)), indent=2))


if __name__ == "__main__":
    main()
