"""The model deployments' own logic (deployments/detector.py, classifier.py), without their models: their
methods run as Ray's own batching tests run them, called directly, `@serve.batch` included, with a stand-in
model; and their settings' checks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from ray import serve

from deployments.classifier import Classifier
from deployments.detector import Detector
from pipeline.core.models import SavedModelClassifier, YoloDetector
from pipeline.core.settings import ClassifierSettings, DetectorSettings, SettingsError
from tests.ingress_fakes import BUNDLE, probabilities

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


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
    cls = with_own_batch_queue(Detector.func_or_class, "detect_batch", DetectorSettings)
    detector = cls.__new__(cls)
    detector.model = YoloDetector.__new__(YoloDetector)  # serving's adapter, around a stand-in ultralytics model
    detector.model.model, detector.model.device = StubYolo(), "cpu"
    detector.version, detector.settings = "d-test", DetectorSettings()
    return detector


def test_detector_batches_concurrent_callers_and_answers_each_its_own_boxes(in_a_replica):
    """As during a live resize of the letterbox, images of two sizes arrive together: one model call per size,
    and every caller gets the boxes of its own image."""
    detector = detector_without_a_model()
    detector.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.2, "confidence_threshold": 0.4})
    images = [np.full((s, s, 3), v, np.uint8) for s, v in ((224, 10), (224, 20), (640, 30), (224, 40), (640, 50))]

    async def together():  # each caller (an ingress replica) sends a list; here the first sends two images
        calls = [detector.detect(images[:2]), *(detector.detect([image]) for image in images[2:])]
        answers = await asyncio.wait_for(asyncio.gather(*calls), 10)
        return [detection for answer in answers for detection in answer]

    detections = asyncio.run(together())
    assert [d.boxes[0, 0] for d in detections] == [10, 20, 30, 40, 50]
    assert all(d.version == "d-test" and d.boxes.shape == (1, 5) and d.boxes.dtype == np.float32 for d in detections)
    calls = detector.model.model.calls
    assert sorted((n, size) for n, size, _ in calls) == [(2, 640), (3, 224)]
    assert all(options["conf"] == 0.4 and options["device"] == "cpu" and options["quantize"] is None for _, _, options in calls)


def test_detector_reconfigure_sets_the_batch_size_and_refuses_bad_settings(in_a_replica):
    detector = detector_without_a_model()
    detector.reconfigure({"max_batch_size": 2, "batch_wait_timeout_s": 0.2})
    images = [np.full((224, 224, 3), v, np.uint8) for v in range(5)]

    async def together():
        answers = await asyncio.wait_for(asyncio.gather(*(detector.detect([image]) for image in images)), 10)
        return [detection for (detection,) in answers]

    detections = asyncio.run(together())
    assert [d.boxes[0, 0] for d in detections] == [0, 1, 2, 3, 4]
    assert [n for n, _, _ in detector.model.model.calls] == [2, 2, 1]
    with pytest.raises(SettingsError, match="max_batch_size"):
        detector.reconfigure({"max_batch_size": 0})
    with pytest.raises(SettingsError, match="no setting 'top_k'"):  # a key of another deployment: refused, not ignored
        detector.reconfigure({"top_k": 3})
    assert detector.settings.max_batch_size == 2


@pytest.mark.parametrize("image", [
    np.zeros((224, 200, 3), np.uint8), np.zeros((200, 200, 3), np.uint8), np.zeros((224, 224, 3), np.float32),
    np.zeros((224, 224), np.uint8), np.zeros((224, 224, 4), np.uint8),
], ids=["not-square", "not-a-multiple-of-32", "float", "grey", "rgba"])
def test_detector_refuses_what_is_not_a_letterboxed_image(in_a_replica, image):
    detector = detector_without_a_model()
    with pytest.raises(ValueError, match="letterboxed uint8"):
        asyncio.run(detector.detect([np.zeros((224, 224, 3), np.uint8), image]))  # one bad image refuses the call
    assert not detector.model.model.calls


def unit_embedding(value: int, dim: int = 8) -> np.ndarray:
    """The stand-in model's embedding of a crop whose pixels are all `value`: a unit vector that says which it was."""
    embedding = np.zeros(dim, np.float32)
    embedding[value % dim], embedding[(value + 1) % dim] = 0.6, 0.8
    return embedding


def classifier_without_a_model(input_size: int = 32, embeddings: bool = True):
    """A Classifier replica's state as __init__ leaves it, with serving's adapter around a stand-in SavedModel (no
    TensorFlow): a crop whose pixels are all `v` gets probability 0.9 on label `v` and the embedding
    `unit_embedding(v)`, as named outputs (`embeddings` False: one unnamed output, as a model exported before
    embeddings has). The batch sizes the model saw are kept."""
    cls = with_own_batch_queue(Classifier.func_or_class, "classify_batch", ClassifierSettings)
    classifier = cls.__new__(cls)
    classifier.bundle, classifier.version, classifier.input_size = BUNDLE, "c-test", input_size
    classifier.settings, classifier.batches = ClassifierSettings(), []

    def serve_(batch: np.ndarray) -> StubTensor | dict[str, StubTensor]:
        classifier.batches.append(len(batch))
        values = [int(crop[0, 0, 0]) for crop in batch]
        rows = StubTensor(np.stack([probabilities(BUNDLE.labels[v], 0.9) for v in values]))
        return {"embedding": StubTensor(np.stack([unit_embedding(v) for v in values])), "probabilities": rows} if embeddings else rows

    classifier.model = SavedModelClassifier.__new__(SavedModelClassifier)
    classifier.model.tf, classifier.model.batch = SimpleNamespace(constant=lambda array: array), 32
    classifier.model.model, classifier.model.path = SimpleNamespace(serve=serve_), "stand-in"
    return classifier


def crops_of(*values: int, size: int = 32) -> list[np.ndarray]:
    return [np.full((size, size, 3), v, np.uint8) for v in values]


def test_classifier_batches_the_crops_of_concurrent_photos_and_answers_each_in_order(in_a_replica):
    """The crops of several photos share batches; each photo gets its crops' probabilities back, in the order sent
    (the answer, top-k and known, is the ingress's: tests/test_photo_to_answer.py)."""
    classifier = classifier_without_a_model()
    classifier.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.2})
    photos = [crops_of(1, 2, 3), crops_of(4), crops_of(5, 6, 7, 8, 9)]

    async def together():
        return await asyncio.wait_for(asyncio.gather(*(classifier.classify(crops) for crops in photos)), 10)

    classifications = asyncio.run(together())
    assert [c.probabilities.argmax(axis=1).tolist() for c in classifications] == [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    assert all(c.probabilities.shape[1] == len(BUNDLE.labels) and c.version == "c-test" for c in classifications)
    for classification, crops in zip(classifications, photos):  # each crop's embedding row, from the same model call
        assert np.array_equal(classification.embeddings, np.stack([unit_embedding(int(c[0, 0, 0])) for c in crops]))
    assert classifier.batches == [4, 4, 1]  # the crops of three photos, in batches of at most 4
    with pytest.raises(SettingsError, match="no setting 'top_k'"):  # the answer moved to the Recognizer's settings
        classifier.reconfigure({"top_k": 2})


def test_a_classifier_without_embeddings_answers_probabilities_and_no_embeddings(in_a_replica):
    """A model_label/ exported before embeddings still serves; the catalog is then off (embeddings None)."""
    classifier = classifier_without_a_model(embeddings=False)
    classification = asyncio.run(asyncio.wait_for(classifier.classify(crops_of(3, 1)), 10))
    assert classification.probabilities.argmax(axis=1).tolist() == [3, 1] and classification.embeddings is None


def test_classifier_refuses_a_crop_of_the_wrong_size(in_a_replica):
    """The error the ingress answers as a 500 internal_error (a bug), not a 503."""
    classifier = classifier_without_a_model()
    with pytest.raises(ValueError, match="crop shape"):
        asyncio.run(classifier.classify(crops_of(1) + crops_of(2, size=16)))
    assert not classifier.batches  # refused before anything reached the model
