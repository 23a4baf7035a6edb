"""The shipped models in CPU runtimes, written by pipeline.release.export beside the SavedModel and the checkpoint: the
classifier as TFLite fp32 and int8 (calibrated on train photos), the detector as ONNX; and what each costs
and answers, measured against the framework runtime.

A runtime meets the accuracy bar when, on the selection split (never val), /hello's top-1 is within
CLASSIFIER_TOP1_BAR of the SavedModel's (classifier), or mAP50 on the detector's held-back split is within
DETECTOR_MAP50_BAR of torch's (detector). The unknown threshold is fitted per classifier runtime on the selection
split, as for the SavedModel; val is measured once. `auto` in serve_config.yaml then picks, on CPU, the fastest
runtime that met the bar (pipeline.core.model_label.ModelLabel.resolve_runtime).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.classification_metrics import calibrate_unknown, precision_at, top_k_accuracy
from pipeline.core.loop_modes import LARGEST_PRODUCT
from pipeline.core.model_label import FRAMEWORK_RUNTIME, fastest_within_bar
from pipeline.core.models import BoxDetector, load_classifier, load_detector
from pipeline.core.photo_to_answer import ModelFacts, PhotoToAnswer, Recognized
from pipeline.core.preprocessing import load_training_image
from pipeline.core.progress import progress
from pipeline.core.recognition import crops, hello_probabilities, prepare_photo
from pipeline.core.settings import ServingSettings
from pipeline.core.yolo_offline import prepare_ultralytics
from pipeline.evaluation.evaluate import crop_and_whole, photo_pass
from pipeline.train.yolo_detector import validate

CLASSIFIER_FILES = {"tflite": "classifier.tflite", "tflite_int8": "classifier_int8.tflite"}
DETECTOR_FILES = {"onnx": "detector.onnx", "onnx_int8": "detector_int8.onnx"}
DETECTOR_INT8_CHOSEN_ON = ("the recipe (which head nodes stay float) and the bar: mAP50 on the detector's held-back "
                           "split, the one its training recorded; calibration on its fit photos; GroceryStore val read "
                           "once, for /hello's figures, nothing chosen on it")
DETECTOR_CALIBRATION_PHOTOS = 64  # fit photos, seeded; what the int8 detector's activation ranges are taken from
DETECTOR_DECODING = "/model.22/"
"""ultralytics' Detect head in the exported graph. Its convolutions are quantised, its decoding (DFL, sigmoid,
box arithmetic) stays float: the output concatenates box coordinates (0 to the input side) and class scores (0-1),
and one int8 scale for both rounds every score to 0 (mAP50 0.000 when it was tried)."""
CLASSIFIER_TOP1_BAR = 0.005  # half a point of /hello top-1 on the selection split
DETECTOR_MAP50_BAR = 0.005
INT8_FLOAT_ERROR_STEPS = 0.3
"""A classifier layer whose int8 output's RMSE against float is over this many of its quantization steps stays float
(the criterion of TensorFlow's quantization debugger guide). Chosen on the selection split for the classifier of
2026-12-07 (/hello's whole-photo view, one thread): at 0.7 (11 float nodes) int8 kept top-1 but called 71.1% of the
photos known at 95% precision against fp32's 74.8%, at 0.5 71.7%, at 0.3 (42 float nodes) 74.8%, at 4.4 ms a crop
against 2.2 (0.7) and 5.9 (fp32): the coverage int8 lost is won back for 2 ms (BENCHMARKS.md, "The int8 classifier")."""
INT8_FLOAT_RULE = (f"layers whose int8 RMSE is over {INT8_FLOAT_ERROR_STEPS} of their quantization step on the "
                   "calibration crops, and the pooling and the head after it (probabilities and embedding in float)")
DEBUG_EVERY = 6  # the debugger's per-layer error: every 6th calibration crop (about 30 crops)
REPRESENTATIVE_PHOTOS = 100  # int8 calibration: 300 whole photos were measured no better than 100
TIMING_ROUNDS = 15


def export_detector(directory: Path, checkpoint_name: str, imgsz: int) -> dict[str, dict[str, Any]]:
    """`checkpoint_name` in `directory` exported to ONNX with a dynamic batch axis (a static one would make
    ultralytics split every batch), unsimplified (onnxslim is not a dependency). Torch work: run before TensorFlow."""
    prepare_ultralytics()
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as scratch:  # ultralytics writes beside the checkpoint
        copy = Path(scratch) / "detector.pt"
        shutil.copyfile(directory / checkpoint_name, copy)
        exported = YOLO(str(copy)).export(format="onnx", dynamic=True, simplify=False, imgsz=imgsz, device="cpu")
        shutil.move(str(exported), str(directory / DETECTOR_FILES["onnx"]))
    return {"onnx": {"path": DETECTOR_FILES["onnx"], "format": "onnx, dynamic batch, fp32", "runner": "onnxruntime + ultralytics NMS"}}


def quantize_detector(directory: Path, calibration_photos: Sequence[Path], settings: ServingSettings,
                      imgsz: int) -> dict[str, dict[str, Any]]:
    """`detector.onnx` in `directory` as static int8 (ONNX Runtime's QDQ format: per-channel int8 weights, uint8
    activations), calibrated on `calibration_photos` prepared as served (shrunk, letterboxed to `imgsz`); the
    Detect head's decoding stays float (DETECTOR_DECODING). Whether it meets the mAP50 bar is `measure`'s to say."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self.input_name = input_name
            self.photos = iter(progress(calibration_photos, desc="int8 detector: calibration", unit="photo"))

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self.photos, None)
            if path is None:
                return None
            pixels = prepare_photo(Path(path).read_bytes(), settings.recognizer, imgsz)[1].pixels
            return {self.input_name: (pixels.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]}  # as OnnxDetector feeds it

    directory, calibration_photos = Path(directory).resolve(), [Path(p).resolve() for p in calibration_photos]
    # In a scratch folder: ONNX Runtime's shape inference and calibration leave their temporary models in the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        prepared = Path(scratch) / "prepared.onnx"  # shapes inferred for the quantiser (symbolic: the axes are dynamic)
        quant_pre_process(str(directory / DETECTOR_FILES["onnx"]), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        decoding = [node.name for node in graph.node if node.name.startswith(DETECTOR_DECODING) and node.op_type != "Conv"]
        quantize_static(str(prepared), str(directory / DETECTOR_FILES["onnx_int8"]), Photos(graph.input[0].name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=decoding)
    return {"onnx_int8": {"path": DETECTOR_FILES["onnx_int8"], "runner": "onnxruntime + ultralytics NMS",
                          "format": "onnx, dynamic batch, int8 (QDQ: per-channel int8 weights, uint8 activations; "
                                    "the Detect head's decoding in float)",
                          "calibration": {"photos": len(calibration_photos),
                                          "of": "the detector's fit photos (not its held-back split), prepared as served"},
                          "chosen_on": DETECTOR_INT8_CHOSEN_ON}}


def detector_calibration_photos(data_yaml: Path | str, count: int = DETECTOR_CALIBRATION_PHOTOS) -> list[Path]:
    """`count` seeded photos of the detector's fit split: the images/train of the dataset view its data.yaml
    describes (pipeline.train.yolo_detector.build_dataset_view), never its held-back ones."""
    photos = sorted((Path(data_yaml).parent / "images" / "train").glob("*.jpg"))
    return random.Random(0).sample(photos, min(count, len(photos)))


def convert_classifier(directory: Path, saved_model_name: str, fit: Sequence[str | Path], facts: ModelFacts,
                       detector: BoxDetector, settings: ServingSettings, source: str) -> dict[str, dict[str, Any]]:
    """The SavedModel's `serve` function as TFLite fp32 and as int8 (float input and output, so both take the
    crops as the SavedModel does), int8 calibrated on the crops /hello cuts (`served_crops`) from a seeded sample of
    `fit`, the photos the classifier was fitted on (`source` says which). Both keep the signature's named outputs
    (probabilities and, when the model has it, the embedding). In int8 a few nodes stay float (`int8_float_nodes`);
    their names go in the manifest."""
    import tensorflow as tf

    photos = representative_photos(fit)
    calibration = served_crops(photos, facts, detector, settings)
    representative = {"photos": len(photos), "seed": 0, "from": source,
                      "inputs_per_photo": "the largest detector box's crop and the whole photo, as /hello classifies them"}

    def converter() -> Any:
        return tf.lite.TFLiteConverter.from_saved_model(str(directory / saved_model_name), signature_keys=["serve"])

    fp32 = converter()
    (directory / CLASSIFIER_FILES["tflite"]).write_bytes(fp32.convert())

    def calibration_crops(every: int = 1) -> Callable[[], Any]:
        def crops():
            for crop in progress(calibration[::every], desc="int8 classifier: calibration", unit="crop"):
                yield [crop[None].astype(np.float32)]  # by position: the signature names its input as the model was built
        return crops

    def int8_converter() -> Any:
        int8 = converter()
        int8.optimizations = [tf.lite.Optimize.DEFAULT]
        int8.representative_dataset = calibration_crops()
        return int8

    measured = tf.lite.experimental.QuantizationDebugger(converter=int8_converter(),
                                                         debug_dataset=calibration_crops(DEBUG_EVERY))
    measured.run()
    statistics = io.StringIO()
    measured.layer_statistics_dump(statistics)
    layers = list(csv.DictReader(io.StringIO(statistics.getvalue())))
    floats = int8_float_nodes(layers)
    if len(floats) < len(layers):
        selective = tf.lite.experimental.QuantizationDebugger(  # its debug dataset (one crop) is not run for this model
            converter=int8_converter(), debug_dataset=calibration_crops(len(calibration)),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=[n["node"] for n in floats]))
        int8 = selective.get_nondebug_quantized_model()
    else:  # the rule would leave no layer int8 (a toy network): plain full int8, judged by the bar like any file
        floats, full = [], int8_converter()
        full.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        int8 = full.convert()
    (directory / CLASSIFIER_FILES["tflite_int8"]).write_bytes(int8)
    return {
        "tflite": {"path": CLASSIFIER_FILES["tflite"], "format": "tflite fp32", "runner": "ai_edge_litert (XNNPACK)"},
        "tflite_int8": {"path": CLASSIFIER_FILES["tflite_int8"],
                        "format": "tflite int8 (per-channel int8 weights, int8 activations), float32 input and output; "
                                  "the float nodes below stay float",
                        "runner": "ai_edge_litert (XNNPACK)",
                        "representative": representative | {"inputs": len(calibration)},
                        "float_nodes": {"rule": INT8_FLOAT_RULE, "nodes": floats}},
    }


def int8_float_nodes(statistics: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """The nodes of the int8 classifier that stay float, from the quantization debugger's per-layer statistics
    (its rows in execution order): each layer whose int8 output is off by more than INT8_FLOAT_ERROR_STEPS of its
    own quantization step (RMSE / scale), and the global pooling and everything after it."""
    floats, pooled = [], False
    for row in statistics:
        pooled = pooled or row["op_name"] == "MEAN"
        scale = float(row["scale"])
        steps = float(row["mean_squared_error"]) ** 0.5 / scale if scale else 0.0
        if pooled or steps > INT8_FLOAT_ERROR_STEPS:
            floats.append({"node": row["tensor_name"], "op": row["op_name"], "error_steps": round(steps, 3)})
    return floats


def representative_photos(fit: Sequence[str | Path], count: int = REPRESENTATIVE_PHOTOS, seed: int = 0) -> list[Path]:
    """A seeded sample of the photos the classifier was fitted on (never selection or val photos)."""
    photos = sorted(Path(p) for p in fit)
    return sorted(random.Random(seed).sample(photos, min(count, len(photos))))


def served_crops(photos: Sequence[Path], facts: ModelFacts, detector: BoxDetector, settings: ServingSettings) -> list[np.ndarray]:
    """What /hello sends the classifier for each photo: the largest detector box's crop and the whole photo (the
    whole photo alone when nothing is detected). int8 calibrated on these, rather than on whole photos only, kept
    /hello's selection top-1 within the bar (BENCHMARKS.md, "CPU runtimes")."""
    with progress(desc="int8 classifier: calibration photos", total=len(photos), unit="photo") as bar:
        recognized = PhotoToAnswer(facts, settings.recognizer).run_files(
            photos, lambda pixels: detector.detect(pixels, settings.detector), None, LARGEST_PRODUCT, progress=bar.update)
    return [crop for r in recognized
            for crop in crops(r.photo.image, r.regions[:1] + ([None] if r.detected else []), facts.classifier_input_size,
                              facts.whole_photo_share)]


def served_embeddings(recognized: Sequence[Recognized]) -> np.ndarray | None:
    """The embeddings of what /hello classified, photo by photo: the largest box's crop, then the whole photo
    when it was looked at too; None from a model without embeddings."""
    rows = []
    for r in recognized:
        if r.embeddings is None:
            return None
        rows += [r.embeddings[:1]] + ([r.whole_embedding[None]] if r.whole_embedding is not None else [])
    return np.concatenate(rows) if rows else None


def embedding_agreement(embeddings: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Cosine similarity of each row to the reference's row (the same crop): mean, 1st percentile and minimum."""
    cosine = np.sum(embeddings * reference, axis=1) / (np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1))
    return {"mean": round(float(cosine.mean()), 5), "p01": round(float(np.quantile(cosine, 0.01)), 5),
            "min": round(float(cosine.min()), 5), "crops": len(cosine), "data": "val: the crops /hello classifies"}


def ms_per_item(calls: dict[str, Callable[[], Any]], items: int, rounds: int = TIMING_ROUNDS) -> dict[str, float]:
    """Median milliseconds per item of each call, the calls interleaved round by round so the machine's drift
    hits every runtime alike; one warm-up call each."""
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return {name: round(1000 * float(np.median(s)) / items, 2) for name, s in seconds.items()}


def hello_answers(facts: ModelFacts, detector: BoxDetector, classifier: Callable[[list[np.ndarray]], Any],
                  photos: Sequence[tuple[Path, int]], settings: ServingSettings,
                  hello_policy: str) -> tuple[np.ndarray, np.ndarray, list[Recognized]]:
    """What /hello answers for each labelled photo (its policy's probabilities), the labels, and the loop's output."""
    recognized = photo_pass(facts, detector, classifier, [p for p, _ in photos], settings, "runtime accuracy")
    crop, whole = crop_and_whole(recognized)
    probabilities = hello_probabilities(crop, whole, [r.detected for r in recognized], hello_policy)
    return probabilities, np.array([t for _, t in photos]), recognized


def top1_top5(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {"top1": top_k_accuracy(probabilities, targets, 1), "top5": top_k_accuracy(probabilities, targets, 5)}


def detector_timing_images(photos: Sequence[tuple[Path, int]], side: int) -> list[np.ndarray]:
    """What every detector runtime is timed on: a grey (empty) square and three photos, letterboxed to `side`."""
    return [np.full((side, side, 3), 114, np.uint8)] + [load_training_image(str(p), side) for p, _ in photos[:3]]


def measure(directory: Path, facts: ModelFacts, classifier_runtimes: dict[str, dict[str, Any]],
            detector_runtimes: dict[str, dict[str, Any]], *, selection_photos: Sequence[tuple[Path, int]],
            val_photos: Sequence[tuple[Path, int]], settings: ServingSettings, hello_policy: str,
            reference: dict[str, Any], detector_data: Path | str | None, target_precision: float,
            held_back_runtimes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per runtime: its accuracy against the framework runtime's (`reference`: the SavedModel's selection top-1
    and torch's mAP50), whether it meets the bar, its calibrated threshold, its val figures and its speed (one
    thread, also in each entry's `ms_per_item`); and /hello on val with what `auto` serves on CPU (the fastest
    runtimes that met the bar). Returns {"classifier": {runtime: entry}, "detector": {runtime: entry},
    "ms_per_item": {...}, "served_on_cpu": {...}}.
    `held_back_runtimes`: a final fit's held-back release's runtimes. Its selection photos were trained on, so each
    runtime keeps the held-back threshold, and the bar is judged against this SavedModel on the same photos (what
    int8 loses to the float model, which training on them does not hide)."""
    hello = functools.partial(hello_answers, facts, settings=settings, hello_policy=hello_policy)

    detectors = {"torch": load_detector(directory / "detector.pt", "torch", threads=1)}
    detectors |= {name: load_detector(directory / entry["path"], name, threads=1) for name, entry in detector_runtimes.items()}
    classifiers = {"savedmodel": load_classifier(directory / "classifier", "savedmodel", threads=1)}
    classifiers |= {name: load_classifier(directory / entry["path"], name, threads=1) for name, entry in classifier_runtimes.items()}

    result: dict[str, Any] = {"classifier": {}, "detector": {}}
    reference_embeddings = served_embeddings(hello(detectors["torch"], classifiers["savedmodel"], val_photos)[2])
    result["embedding"] = None if reference_embeddings is None else {"dim": reference_embeddings.shape[1]}
    if held_back_runtimes is not None and selection_photos:
        chosen_on, targets, _ = hello(detectors["torch"], classifiers["savedmodel"], selection_photos)
        reference = reference | {"selection_top1": top_k_accuracy(chosen_on, targets, 1)}
    for name, entry in classifier_runtimes.items():
        top1, calibration = None, {"unknown_threshold": reference["unknown_threshold"], "note": "no selection split: the SavedModel's"}
        if selection_photos:
            chosen_on, targets, _ = hello(detectors["torch"], classifiers[name], selection_photos)
            top1 = top_k_accuracy(chosen_on, targets, 1)
            if held_back_runtimes is None:  # a final fit trained on these photos: its threshold is the held-back release's
                calibration = {"fitted_on": "the selection split", **calibrate_unknown(chosen_on, targets, target_precision)}
        if held_back_runtimes is not None:
            calibration = held_back_runtimes[name]["calibration"] | {
                "fitted_on": "the held-back run's selection split (its release; a final fit holds nothing back)"}
        measured, val_targets, recognized = hello(detectors["torch"], classifiers[name], val_photos)
        embeddings = served_embeddings(recognized)
        result["classifier"][name] = {
            **entry,
            "meets_bar": bool(top1 is not None and top1 >= reference["selection_top1"] - CLASSIFIER_TOP1_BAR),
            "selection": {"hello_top1": top1, "savedmodel_hello_top1": reference["selection_top1"], "bar": CLASSIFIER_TOP1_BAR},
            "calibration": calibration,
            "metrics": {"hello": top1_top5(measured, val_targets),
                        "known": precision_at(measured, val_targets, calibration["unknown_threshold"])},
            **({} if embeddings is None or reference_embeddings is None else
               {"embedding": {"cosine_to_savedmodel": embedding_agreement(embeddings, reference_embeddings)}}),
        }
    for name, entry in detector_runtimes.items():
        figures = validate(directory / entry["path"], detector_data, facts.detector_input_size) if detector_data else {}
        result["detector"][name] = {**entry, "meets_bar": bool(figures and figures["mAP50"] >= reference["mAP50"] - DETECTOR_MAP50_BAR),
                                    "metrics": figures, "bar": {"mAP50_within": DETECTOR_MAP50_BAR, "of_torch": reference["mAP50"]}}

    size, side = facts.classifier_input_size, facts.detector_input_size
    crops = [load_training_image(str(p), size) for p, _ in val_photos[:8]]
    images = detector_timing_images(val_photos, side)
    classify_calls: dict[str, Callable[[], Any]] = {name: functools.partial(c, crops) for name, c in classifiers.items()}
    detect_calls: dict[str, Callable[[], Any]] = {
        name: functools.partial(d.detect, images, settings.detector) for name, d in detectors.items()}
    result["ms_per_item"] = {
        "classifier": ms_per_item(classify_calls, len(crops)), "detector": ms_per_item(detect_calls, len(images)),
        "threads": 1, "classifier_batch": len(crops), "detector_batch": len(images),
    }
    for part in ("classifier", "detector"):
        for name, entry in result[part].items():
            entry["ms_per_item"] = result["ms_per_item"][part][name]

    def served_by_auto(part: str) -> str:  # what ModelLabel.resolve_runtime will pick from the manifest on CPU
        framework = FRAMEWORK_RUNTIME[part]
        return fastest_within_bar(part, {framework: {"ms_per_item": result["ms_per_item"][part][framework]}, **result[part]})

    classifier, detector = served_by_auto("classifier"), served_by_auto("detector")
    measured, val_targets, _ = hello(detectors[detector], classifiers[classifier], val_photos)
    threshold = result["classifier"][classifier]["calibration"]["unknown_threshold"] if classifier in result["classifier"] \
        else reference["unknown_threshold"]
    result["served_on_cpu"] = {"classifier": classifier, "detector": detector,
                               "hello": top1_top5(measured, val_targets), "known": precision_at(measured, val_targets, threshold)}
    return result


def to_markdown(measured: dict[str, Any], reference: dict[str, Any]) -> str:
    """The runtimes section of evaluation.md: accuracy against the framework runtime, the bar, speed."""
    speeds = measured["ms_per_item"]
    lines = ["## Runtimes", "",
             f"One thread each; classifier ms per crop at batch {speeds['classifier_batch']}, detector ms per photo at batch "
             f"{speeds['detector_batch']}. The bar is judged on the selection split; val is measured once.", "",
             "| classifier runtime | ms per crop | selection /hello top-1 | meets the bar | val /hello top-1 / top-5 "
             "| known: precision at coverage (val) | embedding: cosine to the SavedModel's, mean / min (val crops) |",
             "|---|---|---|---|---|---|---|",
             f"| savedmodel (reference) | {speeds['classifier']['savedmodel']:.2f} | {reference['selection_top1']:.2%} | - "
             f"| {reference['val_top1']:.2%} / {reference['val_top5']:.2%} | | |"]
    for name, entry in measured["classifier"].items():
        top1, hello, known = entry["selection"]["hello_top1"], entry["metrics"]["hello"], entry["metrics"]["known"]
        cosine = entry.get("embedding", {}).get("cosine_to_savedmodel")
        agreement = f"{cosine['mean']:.4f} / {cosine['min']:.4f}" if cosine else "no embedding"
        lines.append(f"| {name} | {speeds['classifier'][name]:.2f} | {'-' if top1 is None else f'{top1:.2%}'} | "
                     f"{'yes' if entry['meets_bar'] else 'no'} | {hello['top1']:.2%} / {hello['top5']:.2%} | "
                     f"{known['precision']:.1%} at {known['coverage']:.1%} | "
                     f"{agreement} |")
    lines += ["", "| detector runtime | ms per photo | mAP50 (held-back split) | meets the bar |", "|---|---|---|---|",
              f"| torch (reference) | {speeds['detector']['torch']:.2f} | {reference['mAP50']:.4f} | - |"]
    for name, entry in measured["detector"].items():
        lines.append(f"| {name} | {speeds['detector'][name]:.2f} | {entry['metrics'].get('mAP50', float('nan')):.4f} | "
                     f"{'yes' if entry['meets_bar'] else 'no'} |")
    served = measured["served_on_cpu"]
    lines += ["", f"Served on CPU (`auto`): {served['classifier']} + {served['detector']}: /hello top-1 "
              f"{served['hello']['top1']:.2%}, top-5 {served['hello']['top5']:.2%} on val; known {served['known']['precision']:.1%} "
              f"precise at {served['known']['coverage']:.1%} coverage.", ""]
    return "\n".join(lines)
