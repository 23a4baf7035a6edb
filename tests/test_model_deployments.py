"""The model deployments' own logic (deployments/detector.py, classifier.py), without their models: their
methods run as Ray's own batching tests run them, called directly, `@serve.batch` included, with a stand-in
model; and their settings' checks."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from ray import serve

from deployments.classifier import Classifier, ClassifierConfig
from deployments.detector import Detector, DetectorConfig
from deployments.recognizer import RecognizerConfig
from pipeline.core.recognition import deployment_config, read_serve_config
from tests.ingress_fakes import BUNDLE, probabilities, with_policy

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


def test_the_shipped_user_configs_are_valid_for_every_deployment():
    config = read_serve_config()
    for name, settings in (("Recognizer", RecognizerConfig), ("Detector", DetectorConfig), ("Classifier", ClassifierConfig)):
        settings(**(deployment_config(config, name).get("user_config") or {}))


@pytest.mark.parametrize("settings, fields", [
    (DetectorConfig, {"max_batch_size": 0}), (DetectorConfig, {"batch_wait_timeout_s": -1}),
    (DetectorConfig, {"confidence_threshold": 1.5}), (DetectorConfig, {"iou_threshold": 0}), (DetectorConfig, {"max_detections": 0}),
    (ClassifierConfig, {"max_batch_size": 0}), (ClassifierConfig, {"batch_wait_timeout_s": -0.1}),
    (ClassifierConfig, {"top_k": 0}), (ClassifierConfig, {"unknown_threshold": 1.5}),
])
def test_model_deployment_configs_refuse_invalid_values(settings, fields):
    with pytest.raises(ValueError):
        settings(**fields)


class StubTensor:
    """What ultralytics' boxes and a SavedModel's output hold: `.cpu().numpy()` / `.numpy()` give the array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def cpu(self):
        return self

    def numpy(self) -> np.ndarray:
        return self.array


class StubYolo:
    """A YOLO model's predict(): one box per image, whose x1 is the image's mean pixel value, so each answer
    tells which image it was computed from. The calls (batch size, imgsz, options) are kept."""

    def __init__(self) -> None:
        self.calls = []

    def predict(self, images, imgsz, **options):
        self.calls.append((len(images), imgsz, options))
        results = []
        for image in images:
            box = np.array([[float(image.mean()), 1, 2, 3]], np.float32)
            results.append(SimpleNamespace(boxes=SimpleNamespace(xyxy=StubTensor(box), conf=StubTensor(np.array([0.5], np.float32)))))
        return results


@pytest.fixture
def in_a_replica(monkeypatch):
    """What @serve.batch reads of its replica's context: max_ongoing_requests (it warns when batches could never
    fill), the shipped config's."""
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=16)))


def with_own_batch_queue(deployment_class: type, method: str, settings) -> type:
    """`deployment_class` with its @serve.batch `method` decorated afresh, as the class declares it (batch size
    and wait from the config's defaults). @serve.batch keeps one queue per decorated function, shared by every
    instance and bound to the event loop that first used it: one instance on one loop in a replica; here each
    test gets a queue of its own, whatever loop it runs on."""
    batched = serve.batch(max_batch_size=settings.max_batch_size, batch_wait_timeout_s=settings.batch_wait_timeout_s)(
        getattr(deployment_class, method).__wrapped__)
    return type(deployment_class.__name__, (deployment_class,), {method: batched})


def detector_without_a_model():
    """A Detector replica's state as __init__ leaves it, with a stand-in model (no torch, no ultralytics)."""
    cls = with_own_batch_queue(Detector.func_or_class, "detect_batch", DetectorConfig)
    detector = cls.__new__(cls)
    detector.version, detector.device, detector.model, detector.config = "d-test", "cpu", StubYolo(), DetectorConfig()
    return detector


def test_detector_batches_concurrent_callers_and_answers_each_its_own_boxes(in_a_replica):
    """As during a live resize of the letterbox, images of two sizes arrive together: one model call per size,
    and every caller gets the boxes of its own image."""
    detector = detector_without_a_model()
    detector.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.2, "confidence_threshold": 0.4})
    images = [np.full((s, s, 3), v, np.uint8) for s, v in ((224, 10), (224, 20), (640, 30), (224, 40), (640, 50))]

    async def together():
        return await asyncio.wait_for(asyncio.gather(*(detector.detect(image) for image in images)), 10)

    detections = asyncio.run(together())
    assert [d.boxes[0, 0] for d in detections] == [10, 20, 30, 40, 50]
    assert all(d.version == "d-test" and d.boxes.shape == (1, 5) and d.boxes.dtype == np.float32 for d in detections)
    assert sorted((n, size) for n, size, _ in detector.model.calls) == [(2, 640), (3, 224)]
    assert all(options["conf"] == 0.4 and options["device"] == "cpu" and options["quantize"] is None
               for _, _, options in detector.model.calls)


def test_detector_reconfigure_sets_the_batch_size_and_refuses_bad_settings(in_a_replica):
    detector = detector_without_a_model()
    detector.reconfigure({"max_batch_size": 2, "batch_wait_timeout_s": 0.2})
    images = [np.full((224, 224, 3), v, np.uint8) for v in range(5)]

    async def together():
        return await asyncio.wait_for(asyncio.gather(*(detector.detect(image) for image in images)), 10)

    detections = asyncio.run(together())
    assert [d.boxes[0, 0] for d in detections] == [0, 1, 2, 3, 4]
    assert [n for n, _, _ in detector.model.calls] == [2, 2, 1]
    with pytest.raises(ValueError):
        detector.reconfigure({"max_batch_size": 0})
    assert detector.config.max_batch_size == 2


@pytest.mark.parametrize("image", [
    np.zeros((224, 200, 3), np.uint8), np.zeros((200, 200, 3), np.uint8), np.zeros((224, 224, 3), np.float32),
    np.zeros((224, 224), np.uint8), np.zeros((224, 224, 4), np.uint8),
], ids=["not-square", "not-a-multiple-of-32", "float", "grey", "rgba"])
def test_detector_refuses_what_is_not_a_letterboxed_image(in_a_replica, image):
    detector = detector_without_a_model()
    with pytest.raises(ValueError, match="letterboxed uint8"):
        asyncio.run(detector.detect(image))
    assert not detector.model.calls


def classifier_without_a_model(input_size: int = 32):
    """A Classifier replica's state as __init__ leaves it, with a stand-in SavedModel (no TensorFlow): a crop
    whose pixels are all `v` gets probability 0.9 on label `v`. The batch sizes the model saw are kept."""
    cls = with_own_batch_queue(Classifier.func_or_class, "classify_batch", ClassifierConfig)
    classifier = cls.__new__(cls)
    classifier.bundle, classifier.version, classifier.labels = BUNDLE, "c-test", BUNDLE.labels
    classifier.input_size, classifier.config, classifier.batches = input_size, ClassifierConfig(), []

    def serve_(batch: np.ndarray) -> StubTensor:
        classifier.batches.append(len(batch))
        return StubTensor(np.stack([probabilities(BUNDLE.labels[int(crop[0, 0, 0])], 0.9) for crop in batch]))

    classifier.tf = SimpleNamespace(constant=lambda array: array)
    classifier.model = SimpleNamespace(serve=serve_)
    return classifier


def crops_of(*values: int, size: int = 32) -> list[np.ndarray]:
    return [np.full((size, size, 3), v, np.uint8) for v in values]


def test_classifier_batches_the_crops_of_concurrent_photos_and_answers_each_in_order(in_a_replica):
    classifier = classifier_without_a_model()
    classifier.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.2, "top_k": 2, "unknown_threshold": 0.5})
    photos = [crops_of(1, 2, 3), crops_of(4), crops_of(5, 6, 7, 8, 9)]

    async def together():
        return await asyncio.wait_for(asyncio.gather(*(classifier.classify(crops) for crops in photos)), 10)

    answers = asyncio.run(together())
    expected = [[BUNDLE.labels[v] for v in values] for values in ((1, 2, 3), (4,), (5, 6, 7, 8, 9))]
    assert [[a.label for a in c.answers] for c in answers] == expected
    assert all(len(a.candidates) == 2 and a.known for c in answers for a in c.answers)
    assert all(c.version == "c-test" for c in answers)
    assert classifier.batches == [4, 4, 1]  # the crops of three photos, in batches of at most 4


def test_classifier_unknown_threshold_comes_from_the_manifest_unless_configured(in_a_replica):
    classifier = classifier_without_a_model()
    classifier.bundle = dataclasses.replace(BUNDLE, manifest={**BUNDLE.manifest, "classifier": {
        **BUNDLE.manifest["classifier"], "calibration": {"unknown_threshold": 0.95}}})

    async def scene():  # one event loop, as in a replica: the batch queue belongs to the loop that first used it
        (default,) = (await classifier.classify(crops_of(3))).answers
        classifier.reconfigure({"unknown_threshold": 0.85, "top_k": 1})
        (configured,) = (await classifier.classify(crops_of(3))).answers
        return default, configured

    default, configured = asyncio.run(asyncio.wait_for(scene(), 10))
    assert classifier.bundle.unknown_threshold == 0.95 and not default.known  # 0.9 is under the calibrated threshold
    assert len(default.candidates) == ClassifierConfig().top_k
    assert configured.known and configured.candidates == [(BUNDLE.labels[3], pytest.approx(0.9))]


@pytest.mark.parametrize("policy, expected", [("average", (1, 3, 0.45)), ("whole_photo", (3, 3, 0.9)), ("crop", (1, 1, 0.9))])
def test_classifier_folds_the_whole_photo_into_the_first_answer_by_the_manifest_policy(in_a_replica, policy, expected):
    classifier = classifier_without_a_model()
    classifier.bundle = with_policy(BUNDLE, policy)
    classifier.reconfigure({"top_k": 2, "unknown_threshold": 0.5})
    first, second = asyncio.run(asyncio.wait_for(classifier.classify(crops_of(1, 2, 3), True), 10)).answers
    top, runner_up, confidence = expected
    assert first.candidates[0] == (BUNDLE.labels[top], pytest.approx(confidence, abs=0.01))
    assert first.candidates[1][0] == BUNDLE.labels[runner_up] or top == runner_up
    assert second.label == BUNDLE.labels[2]  # the other products keep their own answers


def test_classifier_refuses_a_crop_of_the_wrong_size(in_a_replica):
    """The error the ingress answers as a 500 internal_error (a bug), not a 503."""
    classifier = classifier_without_a_model()
    with pytest.raises(ValueError, match="crop shape"):
        asyncio.run(classifier.classify(crops_of(1) + crops_of(2, size=16)))
    assert not classifier.batches  # refused before anything reached the model
