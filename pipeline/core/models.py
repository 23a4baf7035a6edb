"""Model loading adapters, one per runtime: the only place a detector or classifier file becomes a callable.

Classifier runtimes: the TF SavedModel (the reference, and the GPU path) and TFLite fp32 / int8 run by LiteRT
(`ai_edge_litert`, the supported interpreter: `tf.lite.Interpreter` is deprecated). Detector runtimes: torch via
ultralytics (the reference, and the GPU path) and ONNX Runtime with ultralytics' NMS in numpy. Each takes a
thread count: a replica's share of the CPU.

Each framework is imported when a model is loaded, never when this module is, so the ingress imports the core
without TensorFlow, torch or ultralytics, and a CPU serving install (LiteRT, ONNX Runtime) has none of them: a
runtime whose framework is missing fails at load with the extra to install (MissingRuntime). Load torch (the
detector) before TensorFlow in one process: the other order can crash it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pipeline.core.nms import non_max_suppression
from pipeline.core.photo_to_answer import EMBEDDING_OUTPUT, PROBABILITIES_OUTPUT, Classified
from pipeline.core.settings import DetectorSettings
from pipeline.core.yolo_offline import prepare_ultralytics

logger = logging.getLogger("ray.serve")

RUNTIME_EXTRAS = {"savedmodel": "frameworks", "torch": "frameworks"}
"""The pyproject extra each runtime needs beyond the default (CPU serving) install: TensorFlow for the SavedModel,
torch and ultralytics for the torch detector. LiteRT and ONNX Runtime are in the default install."""


class MissingRuntime(ImportError):
    """A runtime was asked for whose framework this install lacks; the message names the extra to install."""


def require_runtime(module: str, runtime: str) -> None:
    """Raises MissingRuntime, naming the pyproject extra, when `module` (needed by `runtime`) is not installed."""
    if importlib.util.find_spec(module.split(".")[0]) is not None:
        return
    extra = RUNTIME_EXTRAS.get(runtime)
    install = f"pip install 'product-recognition[{extra}]'" if extra else "pip install product-recognition"
    raise MissingRuntime(f"the {runtime!r} runtime needs {module.split('.')[0]}, which this install lacks: {install} "
                         "(or choose a runtime this install has: `auto` on CPU serves TFLite and ONNX Runtime)")


def import_runtime(module: str, runtime: str) -> ModuleType:
    """`module`, imported for `runtime` (MissingRuntime when it is not installed)."""
    require_runtime(module, runtime)
    return importlib.import_module(module)


class BoxDetector:
    """A detector: letterboxed RGB uint8 images → boxes [K, 5] (x1, y1, x2, y2, confidence) in letterbox pixels.
    Subclasses load a runtime and run one batch of same-size images (`_predict`)."""

    device = "cpu"
    threads = 1

    def detect(self, images: Sequence[np.ndarray], settings: DetectorSettings) -> list[np.ndarray]:
        """Boxes per square image; images of several sizes (a live resize under way) take one call per size."""
        boxes: list[np.ndarray] = [np.empty((0, 5), np.float32)] * len(images)
        for shape in {image.shape for image in images}:
            if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
                raise ValueError(f"the detector takes letterboxed square RGB images; got shape {shape}")
            indices = [i for i, image in enumerate(images) if image.shape == shape]
            for index, found in zip(indices, self._predict([images[i] for i in indices], settings)):
                boxes[index] = found
        return boxes

    def _predict(self, images: list[np.ndarray], settings: DetectorSettings) -> list[np.ndarray]:
        raise NotImplementedError


class YoloDetector(BoxDetector):
    """An ultralytics YOLO checkpoint, run by torch (CPU, or CUDA when the replica has a GPU)."""

    def __init__(self, path: Path | str, use_gpu: bool = False, threads: int | None = None) -> None:
        torch = import_runtime("torch", "torch")
        require_runtime("ultralytics", "torch")
        prepare_ultralytics()
        from ultralytics import YOLO

        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.device = "cuda:0" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = YOLO(str(path), task="detect")
        # The first prediction loads the weights onto the device and makes ultralytics import the rest of torch
        # (torchvision ops, dynamo), which must happen before TensorFlow is loaded: now, not on a request.
        self.detect([np.zeros((64, 64, 3), np.uint8)], DetectorSettings())

    def _predict(self, images: list[np.ndarray], settings: DetectorSettings) -> list[np.ndarray]:
        results: Any = self.model.predict(
            [image[..., ::-1] for image in images],  # ultralytics reads numpy arrays as BGR
            imgsz=images[0].shape[0],  # already letterboxed: predict's own letterbox leaves them as they are
            quantize=16 if settings.fp16_on_gpu and self.device != "cpu" else None,  # ultralytics 8.4's half=True
            conf=settings.confidence_threshold,
            iou=settings.iou_threshold,
            max_det=settings.max_detections,
            device=self.device,
            rect=False,  # always the same square letterbox: an image gets the same boxes alone or in any batch
            verbose=False,
        )
        return [
            np.concatenate([r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy()[:, None]], axis=1).astype(np.float32)
            for r in results
        ]


class OnnxDetector(BoxDetector):
    """The YOLO network exported to ONNX (dynamic batch; fp32, or int8 from pipeline.release.runtimes.quantize_detector),
    run by ONNX Runtime on CPU, then ultralytics' NMS written in numpy (pipeline.core.nms): no torch or
    ultralytics, so a CPU serving node installs neither (export and tests measure the boxes against torch's)."""

    def __init__(self, path: Path | str, use_gpu: bool = False, threads: int | None = None) -> None:
        onnxruntime = import_runtime("onnxruntime", "onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads or 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threads, self.device = threads or 1, "cpu"
        self.detect([np.zeros((64, 64, 3), np.uint8)], DetectorSettings())

    def _predict(self, images: list[np.ndarray], settings: DetectorSettings) -> list[np.ndarray]:
        size = images[0].shape[0]
        pixels = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), np.float32) / 255.0  # RGB, 0-1, NCHW
        raw = self.session.run(None, {self.input_name: pixels})[0]  # [N, 4 + classes, anchors]
        found = non_max_suppression(raw, settings.confidence_threshold, settings.iou_threshold, settings.max_detections)
        return [np.concatenate([np.clip(f[:, :4], 0, size), f[:, 4:5]], axis=1).astype(np.float32) for f in found]


def classified(outputs: dict[str, np.ndarray], where: Path | str) -> Classified:
    """A classifier's named outputs as Classified: `probabilities`, and `embedding` when the model has it (one
    exported before embeddings has only an unnamed output: its probabilities).

    The model normalises its embedding; int8 then rounds each component to 1/128, which leaves norms up to ~1%
    off 1, so the rows are normalised again here: every runtime answers unit rows (a no-op for float ones)."""
    if len(outputs) == 1 and EMBEDDING_OUTPUT not in outputs:
        return Classified(next(iter(outputs.values())), None)
    if PROBABILITIES_OUTPUT not in outputs:
        raise ValueError(f"{where} has outputs {sorted(outputs)}, none named {PROBABILITIES_OUTPUT!r}")
    embeddings = outputs.get(EMBEDDING_OUTPUT)
    if embeddings is not None:
        embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return Classified(outputs[PROBABILITIES_OUTPUT], embeddings)


def concatenated(parts: list[Classified]) -> Classified:
    """The batches' answers as one, rows in order."""
    embeddings = [part.embeddings for part in parts if part.embeddings is not None]
    return Classified(np.concatenate([part.probabilities for part in parts]),
                      np.concatenate(embeddings) if len(embeddings) == len(parts) else None)


class SavedModelClassifier:
    """The classifier's TF SavedModel: uint8 crops [N, S, S, 3] → Classified (class probabilities [N, C] and, when
    the model has them, embeddings [N, D]), through its `serve` function (no Keras predict()), in batches of at
    most `batch`."""

    def __init__(self, path: Path | str, threads: int | None = None, batch: int = 32) -> None:
        tf = import_runtime("tensorflow", "savedmodel")
        try:
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)  # TF takes the whole card otherwise
        except RuntimeError:  # TensorFlow already started in this process (tests, notebooks)
            logger.warning("TensorFlow was initialised before this classifier: thread and GPU settings unchanged")
        self.tf = tf
        self.path = path
        self.gpus = tf.config.list_physical_devices("GPU")
        self.batch = batch
        self.model = tf.saved_model.load(str(path))

    def __call__(self, crops: Sequence[np.ndarray]) -> Classified:
        return concatenated([self._run(np.stack(crops[at:at + self.batch])) for at in range(0, len(crops), self.batch)])

    def _run(self, batch: np.ndarray) -> Classified:
        outputs = self.model.serve(self.tf.constant(batch.astype(np.float32)))
        named = outputs if isinstance(outputs, dict) else {"output_0": outputs}  # a model's single output is unnamed
        return classified({name: tensor.numpy() for name, tensor in named.items()}, self.path)


class TfliteClassifier:
    """The classifier converted to TFLite (fp32, or int8 inside with float input and output), run by LiteRT with
    XNNPACK: uint8 crops [N, S, S, 3] → Classified, its outputs found by their names in the file's signature. The
    batch axis is dynamic: the input is resized when the batch size changes."""

    def __init__(self, path: Path | str, threads: int | None = None, batch: int = 32) -> None:
        Interpreter = import_runtime("ai_edge_litert.interpreter", "tflite").Interpreter
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or 1)
        self.path = path
        self.input = self.interpreter.get_input_details()[0]
        if self.interpreter.get_signature_list():  # converted from the SavedModel's `serve`: outputs by name
            outputs = self.interpreter.get_signature_runner().get_output_details()
            self.outputs = {name: details["index"] for name, details in outputs.items()}
        else:
            (only,) = self.interpreter.get_output_details()
            self.outputs = {"output_0": only["index"]}
        self.batch = batch
        self.shape: tuple[int, ...] | None = None
        self.gpus: list = []

    def __call__(self, crops: Sequence[np.ndarray]) -> Classified:
        return concatenated([self._run(np.stack(crops[at:at + self.batch])) for at in range(0, len(crops), self.batch)])

    def _run(self, batch: np.ndarray) -> Classified:
        if batch.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input["index"], batch.astype(self.input["dtype"]))
        self.interpreter.invoke()
        return classified({name: self.interpreter.get_tensor(index).copy() for name, index in self.outputs.items()}, self.path)


Classifier = SavedModelClassifier | TfliteClassifier


def load_classifier(path: Path | str, runtime: str, threads: int | None = None, batch: int = 32) -> Classifier:
    """The classifier file of `runtime` (pipeline.core.model_label.RUNTIMES) as a callable."""
    if runtime == "savedmodel":
        return SavedModelClassifier(path, threads=threads, batch=batch)
    if runtime in ("tflite", "tflite_int8"):
        return TfliteClassifier(path, threads=threads, batch=batch)
    raise ValueError(f"unknown classifier runtime {runtime!r}")


def load_detector(path: Path | str, runtime: str, use_gpu: bool = False, threads: int | None = None) -> BoxDetector:
    """The detector file of `runtime` as a detector; ONNX runs on CPU only (`use_gpu` asks for the torch runtime)."""
    if runtime == "torch":
        return YoloDetector(path, use_gpu=use_gpu, threads=threads)
    if runtime in ("onnx", "onnx_int8"):
        return OnnxDetector(path, threads=threads)
    raise ValueError(f"unknown detector runtime {runtime!r}")
