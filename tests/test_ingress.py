"""The fast tier (`make test-fast`): the ingress's HTTP behaviour and the model deployments' own logic, in this
process, without a Ray cluster and without the TensorFlow or torch models.

The Recognizer is built as a Serve replica builds it (the class @serve.ingress made, its async __init__), with
fake Detector and Classifier handles, and requests go through the app @serve.ingress froze (routes, middleware,
error handlers, upload reading, decoding, cropping) over Starlette's TestClient, or over httpx's ASGI transport
where a request body must stream or requests must overlap. The fake detector finds coloured rectangles in the
letterboxed image it is sent, the fake classifier names a crop by its colour, so boxes, crops and labels are
checked end to end. The Detector's and Classifier's methods run as Ray's own batching tests run them: called
directly, `@serve.batch` included, with a stand-in model. What needs the real graph (real answers, the proxy,
replica kills, `make serve`) is in tests/test_service.py and tests/test_make_serve.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from ray import serve
from ray.exceptions import RayActorError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.testclient import TestClient

import deployments.uploads as uploads
from deployments.classifier import Classifier, ClassifierConfig
from deployments.detector import Detector, DetectorConfig
from deployments.payloads import Classification, Detection
from deployments.recognizer import API_KEY_ENV, DECODE_SLOTS, Recognizer, RecognizerConfig
from deployments.schemas import Recognition
from pipeline.core.model_label import ModelLabel, load_model_label, parse_label
from pipeline.core.preprocessing import decode_photo
from pipeline.core.recognition import answer, deployment_config, read_serve_config
from tests.test_preprocessing import png_header_only
from tests.tiny_models import SHIPPED_MODEL_DIR

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]  # a hang fails in a minute, not at the suite's 900 s

BUNDLE = load_model_label(SHIPPED_MODEL_DIR, verify_checksums=False)  # labels and sizes only, as the ingress reads them
RED_LABEL, BLUE_LABEL, OTHER_LABEL = BUNDLE.labels[0], BUNDLE.labels[1], BUNDLE.labels[2]
RED, BLUE, WHITE = (220, 30, 30), (30, 30, 220), (255, 255, 255)
DETECTOR_VERSION, CLASSIFIER_VERSION = "detector-fake", "classifier-fake"
TOP_K, UNKNOWN_THRESHOLD = 3, 0.5


# The fake model deployments ----------------------------------------------------------------------------------


class FakeMethod:
    """A DeploymentHandle's method (`handle.detect`): `.remote(*args)` is awaitable, as a DeploymentResponse is,
    and gives `answer(*args)` (or raises what it raises). The calls are kept."""

    def __init__(self, deployment: str, method: str, answer: Callable) -> None:
        self.deployment_name, self.handle_options = deployment, SimpleNamespace(method_name=method)
        self.answer, self.calls = answer, []

    def remote(self, *args):
        self.calls.append(args)

        async def response():
            return self.answer(*args)

        return response()


class FakeHandle:
    def __init__(self, deployment: str, **methods: Callable) -> None:
        for method, respond in methods.items():
            setattr(self, method, FakeMethod(deployment, method, respond))


def colour_mask(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Pixels close to `colour` (JPEG and resizing blur the edges a little)."""
    return np.abs(pixels.astype(np.int16) - np.array(colour, np.int16)).max(axis=-1) < 60


def find_rectangles(pixels: np.ndarray) -> Detection:
    """The fake Detector: a box (letterbox pixels) around the red pixels and one around the blue ones."""
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[0] == pixels.shape[1], pixels.shape
    boxes = []
    for colour, confidence in ((RED, 0.9), (BLUE, 0.8)):
        ys, xs = np.nonzero(colour_mask(pixels, colour))
        if len(xs) > 4:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, confidence])
    return Detection(boxes=np.array(boxes, np.float32).reshape(-1, 5), version=DETECTOR_VERSION)


def probabilities(label: str, top: float) -> np.ndarray:
    p = np.full(len(BUNDLE.labels), (1 - top) / (len(BUNDLE.labels) - 1), np.float32)
    p[BUNDLE.labels.index(label)] = top
    return p


def name_by_colour(crops: list[np.ndarray], whole_photo_last: bool = False) -> Classification:
    """The fake Classifier: a mostly red crop is RED_LABEL, a mostly blue one BLUE_LABEL (both sure); anything
    else is OTHER_LABEL at 0.3, under the unknown threshold. A whole photo sent last gets no answer of its own."""
    answers = []
    for crop in crops:
        assert crop.shape == (BUNDLE.classifier_input_size,) * 2 + (3,) and crop.dtype == np.uint8
        red, blue = colour_mask(crop, RED).mean(), colour_mask(crop, BLUE).mean()
        label, top = (RED_LABEL, 0.9) if red > max(blue, 0.2) else (BLUE_LABEL, 0.9) if blue > 0.2 else (OTHER_LABEL, 0.3)
        answers.append(answer(probabilities(label, top), BUNDLE.labels, TOP_K, UNKNOWN_THRESHOLD))
    return Classification(answers=answers[:-1] if whole_photo_last else answers, version=CLASSIFIER_VERSION)


def with_policy(bundle: ModelLabel, policy: str) -> ModelLabel:
    """The bundle with another /hello policy in its manifest."""
    return dataclasses.replace(bundle, manifest={**bundle.manifest, "classifier": {**bundle.manifest["classifier"],
                                                                                   "hello_policy": policy}})


# The ingress, as a replica runs it ---------------------------------------------------------------------------


class InProcessRecognizer(Recognizer.func_or_class):
    """The class @serve.ingress made of Recognizer (Recognizer and Serve's ASGIAppReplicaWrapper), as is, but for
    its destructor: Serve awaits the async one, which shuts down the ASGI lifespan Serve started. Here TestClient
    runs the app's lifespan itself, so there is nothing to shut down, and a plain __del__ spares the warning
    about a never-awaited coroutine."""

    def __del__(self) -> None:
        pass


def start_replica(detector: FakeHandle, classifier: FakeHandle) -> InProcessRecognizer:
    """What a Serve replica does with the deployment's class: `__new__`, then await the async `__init__` that
    @serve.ingress gave it (Recognizer.__init__, then the frozen FastAPI app kept as the replica's ASGI app)."""
    replica = InProcessRecognizer.__new__(InProcessRecognizer)
    asyncio.run(InProcessRecognizer.__init__(replica, detector, classifier, str(SHIPPED_MODEL_DIR)))
    return replica


@dataclass
class Service:
    replica: object  # the Recognizer replica: an ASGI app
    detector: FakeHandle
    classifier: FakeHandle
    client: TestClient

    def recognize(self, data: bytes, content_type: str = "image/jpeg", **request) -> httpx.Response:
        return self.client.post("/v1/recognize", content=data, headers={"content-type": content_type}, **request)

    def hello(self, data: bytes, **request) -> httpx.Response:
        return self.client.post("/hello", files={"img": ("photo.jpg", data, "image/jpeg")}, **request)


@pytest.fixture
def service(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    detector = FakeHandle("Detector", detect=find_rectangles, ready=lambda: DETECTOR_VERSION)
    classifier = FakeHandle("Classifier", classify=name_by_colour, ready=lambda: CLASSIFIER_VERSION)
    replica = start_replica(detector, classifier)
    replica.bundle = with_policy(replica.bundle, "crop")  # the tests that need the whole photo too say so
    # The routes' `self` is what Serve's class-based view asks for: the replica's servable object.
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(servable_object=replica))
    with TestClient(replica) as client:
        yield Service(replica, detector, classifier, client)


async def _send(app, method: str, url: str, **request) -> httpx.Response:
    """A request over httpx's ASGI transport, which streams the body as it is produced (TestClient reads it whole)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        return await client.request(method, url, **request)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(width: int, height: int) -> bytes:
    return encode(Image.new("RGB", (width, height), (200, 40, 40)))


def shelf_photo(size=(1500, 2000), red=(200, 300, 900, 1100), blue=(1000, 1500, 1300, 1800), orientation=None) -> bytes:
    """An upright photo (white, a red and a blue rectangle at these original-pixel boxes) as a JPEG; with EXIF
    `orientation` 6 it is stored sideways, as phones store portrait photos, and must be turned upright."""
    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    for box, colour in ((red, RED), (blue, BLUE)):
        if box:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    if orientation is None:
        return encode(image, quality=95)
    assert orientation == 6
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image.transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif.tobytes())


def assert_box(box: dict, expected: tuple, tolerance: float) -> None:
    assert [box[k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(expected, abs=tolerance), box


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def letterbox_pixel(original_side: int, detector_input_size: int, max_side: int = 640) -> float:
    """Original pixels per letterbox pixel for a photo whose long side is `original_side`."""
    return original_side / min(detector_input_size, max_side)


# /v1/recognize and /hello answers ----------------------------------------------------------------------------


def test_every_product_is_answered_in_upright_original_pixels_of_an_exif_rotated_photo(service):
    """Stored 2000x1500 with EXIF orientation 6, decoded at reduced size, shrunk, letterboxed: the boxes come back
    in the upright full-size photo's pixels, largest first, each with its crop's label."""
    response = service.recognize(shelf_photo(orientation=6))
    assert response.status_code == 200, response.text
    answer = response.json()
    Recognition.model_validate(answer)
    assert answer["photo"] == {"width": 1500, "height": 2000, "format": "JPEG"}
    assert not answer["whole_photo"]
    assert answer["models"] == {"detector": DETECTOR_VERSION, "classifier": CLASSIFIER_VERSION}
    tolerance = 2 * letterbox_pixel(2000, BUNDLE.detector_input_size)
    red, blue = answer["products"]  # the red rectangle is the larger: first
    assert_box(red["box"], (200, 300, 900, 1100), tolerance)
    assert_box(blue["box"], (1000, 1500, 1300, 1800), tolerance)
    for product, label, confidence in ((red, RED_LABEL, 0.9), (blue, BLUE_LABEL, 0.8)):
        assert product["source"] == "detector" and product["detector_confidence"] == pytest.approx(confidence)
        assert product["known"] and product["label"] == label and product["confidence"] == pytest.approx(0.9)
        assert product["fields"] == parse_label(label)
        assert len(product["candidates"]) == TOP_K and product["candidates"][0] == {"label": label, "confidence": pytest.approx(0.9)}
    timings = answer["timings"]
    assert set(timings) == {f"{stage}_ms" for stage in ("read", "decode", "detect", "crop", "classify", "total")}
    assert timings["total_ms"] >= timings["decode_ms"] >= 0

    letterboxed = service.detector.detect.calls[-1][0]
    assert letterboxed.shape == (BUNDLE.detector_input_size, BUNDLE.detector_input_size, 3) and letterboxed.dtype == np.uint8
    assert len(service.classifier.classify.calls[-1][0]) == 2  # one crop per box, one call per photo


@pytest.mark.parametrize("policy", ["average", "whole_photo"])
def test_a_policy_that_looks_at_the_whole_photo_sends_it_last(service, policy):
    service.replica.bundle = with_policy(service.replica.bundle, policy)
    products = service.recognize(shelf_photo()).json()["products"]
    crops, whole_photo_last = service.classifier.classify.calls[-1]
    assert whole_photo_last and len(crops) == 3 and len(products) == 2  # red, blue, then the whole (mostly white) photo
    assert colour_mask(crops[-1], (255, 255, 255)).mean() > 0.5
    service.recognize(shelf_photo(size=(800, 600), red=None, blue=None))  # nothing detected: the crop is the whole photo
    crops, whole_photo_last = service.classifier.classify.calls[-1]
    assert not whole_photo_last and len(crops) == 1


def test_an_unknown_product_has_no_label_but_keeps_its_candidates(service):
    service.classifier.classify.answer = lambda crops, *_: Classification(
        [answer(probabilities(OTHER_LABEL, 0.3), BUNDLE.labels, TOP_K, UNKNOWN_THRESHOLD) for _ in crops], CLASSIFIER_VERSION)
    products = service.recognize(shelf_photo()).json()["products"]
    assert len(products) == 2
    for product in products:
        assert not product["known"] and product["label"] is None and product["fields"] is None
        assert product["candidates"][0]["label"] == OTHER_LABEL and product["confidence"] == pytest.approx(0.3)


def test_nothing_detected_classifies_the_whole_photo(service):
    data = shelf_photo(size=(800, 600), red=None, blue=None)
    answer = service.recognize(data).json()
    assert answer["whole_photo"]
    (product,) = answer["products"]
    assert product["source"] == "whole_photo" and product["detector_confidence"] is None
    assert product["box"] == {"x1": 0, "y1": 0, "x2": 800, "y2": 600}
    assert not product["known"] and product["label"] is None  # white: the fake classifier is unsure
    crops, _ = service.classifier.classify.calls[-1]
    assert len(crops) == 1
    # /hello always names something: the top candidate, even when it is unknown
    hello = service.hello(data)
    assert hello.json() == {"item": base64.b64encode(OTHER_LABEL.encode()).decode("ascii")}


@pytest.mark.parametrize("larger", ["red", "blue"])
def test_hello_answers_the_largest_products_label_in_base64(service, larger):
    small, big = (100, 100, 300, 300), (400, 400, 1400, 1800)
    red, blue = (big, small) if larger == "red" else (small, big)
    response = service.hello(shelf_photo(red=red, blue=blue))
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["item"]
    label = RED_LABEL if larger == "red" else BLUE_LABEL
    assert base64.b64decode(response.json()["item"]).decode("utf-8") == label


def test_the_raw_body_and_the_image_and_img_parts_get_one_answer(service):
    data = shelf_photo()
    raw = service.recognize(data).json()
    for part in ("image", "img"):
        as_part = service.client.post("/v1/recognize", files={part: ("a.jpg", data, "image/jpeg")}).json()
        assert as_part["products"] == raw["products"]


@pytest.mark.parametrize("size", [(4032, 4), (1, 1001), (4, 4032), (1001, 1), (8000, 2)])
def test_elongated_jpegs_decode_and_are_answered(service, size):
    data = jpeg(*size)
    photo = decode_photo(data)  # the draft size used to round a side to 0: ZeroDivisionError, a 500
    assert photo.original_size == size and min(photo.image.size) >= 1

    response = service.recognize(data)
    assert response.status_code == 200, response.text
    assert (response.json()["photo"]["width"], response.json()["photo"]["height"]) == size
    letterboxed = service.detector.detect.calls[-1][0]
    assert letterboxed.shape == (BUNDLE.detector_input_size, BUNDLE.detector_input_size, 3)

    hello = service.hello(data)
    assert hello.status_code == 200 and list(hello.json()) == ["item"]


# Bad input: a JSON 4xx with a stable code --------------------------------------------------------------------


def noisy_jpeg() -> bytes:
    return encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)))


def multipart(data: bytes, part: str = "img", boundary: str = "xyz", closed: bool = True) -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    return head.encode() + data + (f"\r\n--{boundary}--\r\n".encode() if closed else b"")


OVERSIZED = b"\xff\xd8" + b"\0" * (11 * 1024 * 1024)
BAD_REQUESTS = {
    "empty body": (dict(content=b"", headers={"content-type": "image/jpeg"}), 400, "empty_image"),
    "empty part": (dict(files={"image": ("a.jpg", b"", "image/jpeg")}), 400, "empty_image"),
    "missing part": (dict(files={"photo": ("a.jpg", b"\xff\xd8", "image/jpeg")}), 400, "missing_image_part"),
    "broken multipart": (dict(content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"}), 400, "bad_multipart"),
    "oversized body": (dict(content=OVERSIZED, headers={"content-type": "image/jpeg"}), 413, "body_too_large"),
    "oversized part": (dict(files={"image": ("a.jpg", OVERSIZED, "image/jpeg")}), 413, "body_too_large"),
    "decompression bomb": (dict(files={"image": ("b.png", png_header_only(60_000, 60_000), "image/png")}), 413, "too_many_pixels"),
    "too many pixels raw": (dict(content=png_header_only(60_000, 60_000), headers={"content-type": "image/png"}), 413, "too_many_pixels"),
    "not an image": (dict(files={"image": ("a.jpg", b"<html>no photo here</html>", "image/jpeg")}), 415, "not_an_image"),
    "not an image raw": (dict(content=b"<html>", headers={"content-type": "image/jpeg"}), 415, "not_an_image"),
    "wrong content type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
    "truncated": (dict(content=noisy_jpeg()[:20_000], headers={"content-type": "image/jpeg"}), 422, "truncated_image"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx_with_a_stable_code_and_reaches_no_model(service, case):
    request, status, code = BAD_REQUESTS[case]
    assert_error(service.client.post("/v1/recognize", **request), status, code)
    assert not service.detector.detect.calls and not service.classifier.classify.calls
    assert service.recognize(shelf_photo()).status_code == 200


def test_hello_takes_only_a_multipart_img_part(service):
    data = shelf_photo()
    assert_error(service.client.post("/hello", content=data, headers={"content-type": "image/jpeg"}), 415, "unsupported_media_type")
    assert_error(service.client.post("/hello", files={"image": ("a.jpg", data, "image/jpeg")}), 400, "missing_image_part")
    assert_error(service.client.post("/hello", files={"img": ("a.jpg", b"", "image/jpeg")}), 400, "empty_image")


def test_a_multipart_body_that_never_closes_is_bad_multipart(service):
    data = jpeg(64, 48)
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    post = service.client.post
    assert_error(post("/hello", content=multipart(data, closed=False), headers=headers), 400, "bad_multipart")
    assert_error(post("/v1/recognize", content=multipart(data, closed=False)[:40], headers=headers), 400, "bad_multipart")
    assert post("/hello", content=multipart(data), headers=headers).status_code == 200
    assert_error(post("/hello", content=multipart(data, part="photo"), headers=headers), 400, "missing_image_part")


def test_unknown_paths_and_methods_answer_json(service):
    assert_error(service.client.get("/v2/nothing"), 404, "not_found")
    response = service.client.get("/v1/recognize")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert_error(service.client.delete("/hello"), 405, "method_not_allowed")


# Slow bodies: 408 ---------------------------------------------------------------------------------------------


async def trickle(data: bytes, chunk: int, every_s: float, limit_s: float = 10.0) -> AsyncIterator[bytes]:
    """`data` in `chunk`-byte pieces, one every `every_s` seconds (bounded: the test never hangs)."""
    started = time.monotonic()
    for start in range(0, len(data), chunk):
        if time.monotonic() - started > limit_s:
            return
        await asyncio.sleep(every_s)
        yield data[start:start + chunk]


@pytest.fixture
def short_body_deadline(monkeypatch):
    """0.3 s of grace, then 20 KB/s at least."""
    monkeypatch.setattr(uploads, "BODY_GRACE_S", 0.3)
    monkeypatch.setattr(uploads, "BODY_MIN_BYTES_PER_S", 20_000)


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_slow_body_gets_408_within_the_deadline_while_others_are_answered(service, short_body_deadline, kind):
    data = jpeg(64, 48)
    body, content_type = (data, "image/jpeg") if kind == "raw" else (multipart(data), "multipart/form-data; boundary=xyz")
    url = "/v1/recognize" if kind == "raw" else "/hello"
    app = service.replica

    async def scene():
        slow = [_send(app, "POST", url, content=trickle(body, 1, 0.2), headers={"content-type": content_type}) for _ in range(5)]
        started = time.monotonic()
        fast_done = asyncio.ensure_future(_send(app, "POST", url, content=body, headers={"content-type": content_type}))
        slow_done = asyncio.gather(*slow)
        answered = await fast_done
        fast_s = time.monotonic() - started
        return answered, fast_s, await slow_done, time.monotonic() - started

    answered, fast_s, slow, slow_s = asyncio.run(scene())
    assert answered.status_code == 200 and fast_s < 1.0
    for response in slow:  # a byte every 0.2 s: out after the 0.3 s grace, not after the whole body
        assert_error(response, 408, "request_timeout")
        assert response.headers["connection"] == "close"
    assert slow_s < 2.0


def test_a_body_sent_above_the_rate_floor_is_read_whole(service, short_body_deadline):
    data = jpeg(640, 480)
    assert len(data) > 3_000
    response = asyncio.run(_send(service.replica, "POST", "/v1/recognize", content=trickle(data, 1_000, 0.02),
                                 headers={"content-type": "image/jpeg"}))
    assert response.status_code == 200, response.text  # 50 KB/s over a floor of 20 KB/s: takes its time, passes


def test_concurrent_decodes_are_bounded_per_replica(service, monkeypatch):
    active, most = 0, 0
    globals_ = service.replica._recognize.__globals__
    prepare = globals_["prepare_photo"]

    def counting_prepare(*args):
        nonlocal active, most
        active += 1  # in worker threads: a race would only make `most` larger, never hide an excess
        most = max(most, active)
        time.sleep(0.1)
        try:
            return prepare(*args)
        finally:
            active -= 1

    # @serve.ingress froze a by-value copy of the class (cloudpickle), whose methods have their own globals:
    # the decode is patched there, not in deployments.recognizer.
    monkeypatch.setitem(globals_, "prepare_photo", counting_prepare)
    data = jpeg(64, 48)

    async def burst():
        return await asyncio.gather(*(
            _send(service.replica, "POST", "/v1/recognize", content=data, headers={"content-type": "image/jpeg"})
            for _ in range(3 * DECODE_SLOTS)
        ))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert most == DECODE_SLOTS


# Model deployment failures: 503 with Retry-After, or 500 for a bug -------------------------------------------


def failing(*errors: Exception, then: Callable | None = None) -> Callable:
    """An answer that raises `errors` in turn, then answers with `then`."""
    pending = list(errors)

    def respond(*args):
        if pending:
            raise pending.pop(0)
        return then(*args)

    return respond


DEPLOYMENT_GONE = DeploymentUnavailableError(DeploymentID(name="Detector", app_name="recognizer"))
OVERLOADED = BackPressureError(num_queued_requests=32, max_queued_requests=32)


@pytest.mark.parametrize("method", ["detect", "classify"])
@pytest.mark.parametrize("errors, status, code, calls", [
    ([OVERLOADED], 503, "overloaded", 1),
    ([DEPLOYMENT_GONE], 503, "model_unavailable", 1),
    ([RayActorError(), RayActorError()], 503, "model_unavailable", 2),  # lost twice: one retry only
    ([ReplicaUnavailableError("r1"), ReplicaUnavailableError("r2")], 503, "model_unavailable", 2),
    ([ValueError("crop shape (10, 10, 3)")], 500, "internal_error", 1),  # a bug, not an outage: no 503
    ([RuntimeError("the model fell over")], 500, "internal_error", 1),
], ids=["backpressure", "deployment-unavailable", "actor-died-twice", "replica-unavailable-twice", "value-error", "runtime-error"])
def test_a_failing_model_call_answers_json_with_the_right_status(service, method, errors, status, code, calls):
    handle = service.detector if method == "detect" else service.classifier
    fake = getattr(handle, method)
    fake.answer = failing(*errors, then=fake.answer)
    with TestClient(service.replica, raise_server_exceptions=False) as client:  # a 500 is re-raised to the server
        response = client.post("/v1/recognize", content=shelf_photo(), headers={"content-type": "image/jpeg"})
        assert_error(response, status, code)
        assert (response.headers.get("retry-after") == "1") == (status == 503)
        assert len(fake.calls) == calls
        assert client.post("/hello", files={"img": ("a.jpg", shelf_photo(), "image/jpeg")}).status_code == 200


@pytest.mark.parametrize("lost", [RayActorError(), ReplicaUnavailableError("r1")], ids=["actor-died", "replica-unavailable"])
@pytest.mark.parametrize("method", ["detect", "classify"])
def test_a_replica_lost_once_is_retried_and_the_photo_answered(service, method, lost):
    handle = service.detector if method == "detect" else service.classifier
    fake = getattr(handle, method)
    fake.answer = failing(lost, then=fake.answer)
    response = service.recognize(shelf_photo())
    assert response.status_code == 200, response.text
    assert len(fake.calls) == 2 and len(response.json()["products"]) == 2


def test_readiness_follows_the_model_deployments(service):
    assert service.client.get("/healthz").json() == {"status": "ok", "detail": {}}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "detail": {"detector": DETECTOR_VERSION, "classifier": CLASSIFIER_VERSION}}
    service.classifier.ready.answer = failing(DEPLOYMENT_GONE)
    ready = service.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "detail": {
        "detector": DETECTOR_VERSION, "classifier": "unavailable: DeploymentUnavailableError"}}


def test_each_answer_is_counted_with_its_outcome(service):
    """The ingress's counters (deployments/metrics.py) get the endpoint, status and code of every answer."""
    counted = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def inc(self, value=1.0, tags=None):
            counted.append((self.name, value, tags))

    metrics = service.replica.metrics
    metrics.photos, metrics.decode_refusals = Recorder("photos"), Recorder("decode_refusals")
    assert service.recognize(shelf_photo()).status_code == 200
    assert service.recognize(b"<html>").status_code == 415
    assert service.client.post("/hello", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    service.detector.detect.answer = failing(OVERLOADED)
    assert service.recognize(shelf_photo()).status_code == 503
    assert counted == [
        ("photos", 1.0, {"endpoint": "/v1/recognize", "status": "200", "code": "ok"}),
        ("photos", 1.0, {"endpoint": "/v1/recognize", "status": "415", "code": "not_an_image"}),
        ("decode_refusals", 1.0, {"code": "not_an_image"}),
        ("photos", 1.0, {"endpoint": "/hello", "status": "415", "code": "unsupported_media_type"}),
        ("photos", 1.0, {"endpoint": "/v1/recognize", "status": "503", "code": "overloaded"}),
    ]


# The contract: labels, OpenAPI, /docs ------------------------------------------------------------------------


def test_labels_are_the_classifiers_in_its_output_order(service):
    labels = service.client.get("/v1/labels").json()
    assert labels == {"count": len(BUNDLE.labels), "labels": BUNDLE.labels, "classifier": BUNDLE.versions["classifier"]}


def test_openapi_lists_the_endpoints_their_bodies_and_the_error_schema(service):
    schema = service.client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Product recognition"
    paths = schema["paths"]
    assert set(paths) == {"/hello", "/v1/recognize", "/v1/labels", "/healthz", "/readyz"}
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path in ("/hello", "/v1/recognize"):
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "401", "408", "413", "415", "422", "500", "503"} <= set(responses), path
        for status in ("400", "413", "415", "422", "500", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == error_ref, (path, status)
    assert set(paths["/hello"]["post"]["requestBody"]["content"]) == {"multipart/form-data"}
    assert paths["/hello"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["img"]
    assert set(paths["/v1/recognize"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "image/*", "application/octet-stream"}
    recognize_200 = paths["/v1/recognize"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert recognize_200 == {"$ref": "#/components/schemas/Recognition"}
    assert {"ErrorBody", "ErrorDetail", "Recognition", "Product", "HelloAnswer", "Labels", "Health"} <= set(schema["components"]["schemas"])


def test_docs_list_the_endpoints_without_the_internet(service):
    docs = service.client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for endpoint in ("POST /hello", "POST /v1/recognize", "GET /v1/labels", "GET /healthz", "GET /readyz"):
        assert endpoint in docs.text  # in the HTML itself, not in a script fetched from a CDN
    assert 'href="/openapi.json"' in docs.text
    assert_error(service.client.get("/redoc"), 404, "not_found")


# The optional API key -----------------------------------------------------------------------------------------


def test_no_api_key_is_asked_by_default(service):
    assert service.hello(jpeg(64, 48)).status_code == 200
    assert service.client.get("/v1/labels").status_code == 200


def test_api_key_when_set(service, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "s3cret-key")
    client = service.client
    files = {"img": ("a.jpg", jpeg(64, 48), "image/jpeg")}
    for method, url in [("POST", "/hello"), ("POST", "/v1/recognize"), ("GET", "/v1/labels"), ("GET", "/docs"),
                        ("GET", "/openapi.json"), ("GET", "/nowhere")]:
        response = client.request(method, url, files=files) if method == "POST" else client.request(method, url)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/labels", headers={"x-api-key": "wrong"}), 401, "unauthorized")
    assert_error(client.get("/v1/labels", headers={"authorization": "Bearer s3cret"}), 401, "unauthorized")
    assert not service.detector.detect.calls  # refused before any route ran

    assert client.post("/hello", files=files, headers={"x-api-key": "s3cret-key"}).status_code == 200
    assert client.post("/v1/recognize", files=files, headers={"authorization": "Bearer s3cret-key"}).status_code == 200
    assert client.get("/docs", headers={"x-api-key": "s3cret-key"}).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"  # probes need no key
    assert client.get("/readyz").json()["status"] == "ok"


# Live reconfiguration (user_config) ---------------------------------------------------------------------------


def red_share_of_crops(service: Service) -> float:
    crops, _ = service.classifier.classify.calls[-1]
    return float(colour_mask(crops[0], RED).mean())


def test_reconfigure_changes_the_crops_and_the_detectors_input(service):
    data = shelf_photo()
    assert service.recognize(data).status_code == 200
    default_share = red_share_of_crops(service)  # crop_margin 0.2: the red box and some white around it

    service.replica.reconfigure({"crop_margin": 0.0, "detector_input_size": 640})
    tight = service.recognize(data).json()
    assert red_share_of_crops(service) > 0.9 > default_share
    assert service.detector.detect.calls[-1][0].shape == (640, 640, 3)
    assert_box(tight["products"][0]["box"], (200, 300, 900, 1100), 2 * letterbox_pixel(2000, 640))

    service.replica.reconfigure({"crop_margin": 0.5})
    assert service.recognize(data).status_code == 200
    assert red_share_of_crops(service) < default_share
    assert service.detector.detect.calls[-1][0].shape == (BUNDLE.detector_input_size,) * 2 + (3,)  # back to the manifest's


@pytest.mark.parametrize("user_config", [
    {"crop_margin": 1.5}, {"detector_input_size": 100}, {"detector_image_max_side": 16},
    {"detector_image_max_side": 2000, "decode_min_side": 1000},
])
def test_reconfigure_refuses_an_invalid_user_config_and_keeps_the_last_good_one(service, user_config):
    service.replica.reconfigure({"crop_margin": 0.0})
    with pytest.raises(ValueError):
        service.replica.reconfigure(user_config)
    assert service.replica.config == RecognizerConfig(crop_margin=0.0)
    with pytest.raises(TypeError):  # a misspelt key is refused too, not ignored
        service.replica.reconfigure({"crop_margn": 0.1})
    assert service.recognize(shelf_photo()).status_code == 200


# The model deployments' own logic, without their models ------------------------------------------------------


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
