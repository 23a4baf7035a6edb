"""Stand-ins for the ingress's tests (test_recognizer, test_errors, test_uploads, test_auth, test_api): the
Recognizer built as a Serve replica builds it, with fake Detector and Classifier handles, in this process,
without a Ray cluster and without the TensorFlow or torch models.

The replica is the class @serve.ingress made, started with its async __init__; requests go through the app
@serve.ingress froze (routes, middleware, error handlers, upload reading, decoding, cropping) over Starlette's
TestClient, or over httpx's ASGI transport where a request body must stream or requests must overlap. The fake
detector finds coloured rectangles in the letterboxed image it is sent, the fake classifier names a crop by its
colour, so boxes, crops and labels are checked end to end. What needs the real graph (real answers, the proxy,
replica kills, `make serve`) is in tests/test_service.py and tests/test_make_serve.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from ray import serve
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from starlette.testclient import TestClient

from deployments.auth import API_KEY_ENV
from deployments.payloads import Classification, Detection
from deployments.recognizer import Recognizer
from pipeline.core.model_label import ModelLabel, load_model_label
from pipeline.core.settings import deployment_config, read_serve_config
from tests.tiny_models import SHIPPED_MODEL_DIR

BUNDLE = load_model_label(SHIPPED_MODEL_DIR, verify_checksums=False)  # labels and sizes only, as the ingress reads them
RED_LABEL, BLUE_LABEL, OTHER_LABEL = BUNDLE.labels[0], BUNDLE.labels[1], BUNDLE.labels[2]
RED, BLUE, WHITE = (220, 30, 30), (30, 30, 220), (255, 255, 255)
DETECTOR_VERSION, CLASSIFIER_VERSION = "detector-fake", "classifier-fake"
TOP_K, UNKNOWN_THRESHOLD = 3, 0.5


# The fake model deployments ----------------------------------------------------------------------------------


class FakeMethod:
    """A DeploymentHandle's method (`handle.detect`): `.remote(*args)` is awaitable, as a DeploymentResponse is,
    and gives `answer(*args)` (or raises what it raises; awaited first when it is awaitable: a slow replica). The
    calls are kept."""

    def __init__(self, answer: Callable) -> None:
        self.answer, self.calls = answer, []

    def remote(self, *args):
        self.calls.append(args)

        async def response():
            result = self.answer(*args)
            return await result if inspect.isawaitable(result) else result

        return response()


class FakeHandle:
    """A DeploymentHandle with the methods named here, each a FakeMethod."""

    def __init__(self, **methods: Callable) -> None:
        for method, respond in methods.items():
            setattr(self, method, FakeMethod(respond))


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


def colour_embedding(crop: np.ndarray) -> np.ndarray:
    """A stand-in embedding as wide as the shipped classifier's: the crop's mean colour, L2-normalised, so crops of
    one colour are alike (cosine near 1) and red and blue ones are not."""
    embedding = np.zeros(BUNDLE.embedding_dim or 3, np.float32)
    embedding[:3] = crop.reshape(-1, 3).mean(axis=0) + 1
    return embedding / np.linalg.norm(embedding)


def name_by_colour(crops: list[np.ndarray]) -> Classification:
    """The fake Classifier: a mostly red crop is RED_LABEL, a mostly blue one BLUE_LABEL (both sure); anything
    else is OTHER_LABEL at 0.3, under the unknown threshold. Embeddings: `colour_embedding`."""
    rows = []
    for crop in crops:
        assert crop.shape == (BUNDLE.classifier_input_size,) * 2 + (3,) and crop.dtype == np.uint8
        red, blue = colour_mask(crop, RED).mean(), colour_mask(crop, BLUE).mean()
        label, top = (RED_LABEL, 0.9) if red > max(blue, 0.2) else (BLUE_LABEL, 0.9) if blue > 0.2 else (OTHER_LABEL, 0.3)
        rows.append(probabilities(label, top))
    return Classification(probabilities=np.stack(rows), version=CLASSIFIER_VERSION,
                          embeddings=np.stack([colour_embedding(crop) for crop in crops]))


def with_policy(bundle: ModelLabel, policy: str) -> ModelLabel:
    """The bundle with another /hello policy in its manifest, and the whole photo as its whole-photo view: the
    stand-in classifier names a crop by its share of a colour, which a centre view would change (the view itself
    is tested in tests/test_photo_to_answer.py, and through the real graph)."""
    return dataclasses.replace(bundle, manifest={**bundle.manifest, "classifier": {**bundle.manifest["classifier"],
                                                                                   "hello_policy": policy,
                                                                                   "whole_photo_share": 1.0}})


def use_policy(replica, policy: str) -> None:
    """The replica answering as if its manifest said `policy`, its settings as they were (reconfigure() rebuilds
    its photo→answer loop from its bundle)."""
    replica.bundle = with_policy(replica.bundle, policy)
    replica.reconfigure(dataclasses.asdict(replica.photo_to_answer.settings))


# The ingress, as a replica runs it ---------------------------------------------------------------------------


class InProcessRecognizer(Recognizer.func_or_class):
    """The class @serve.ingress made of Recognizer (Recognizer and Serve's ASGIAppReplicaWrapper), as is, but for
    its destructor: Serve awaits the async one, which shuts down the ASGI lifespan Serve started. Here TestClient
    runs the app's lifespan itself, so there is nothing to shut down, and a plain __del__ spares the warning
    about a never-awaited coroutine."""

    def __del__(self) -> None:
        pass


def start_replica(detector: FakeHandle, classifier: FakeHandle, catalog: object | None = None) -> InProcessRecognizer:
    """What a Serve replica does with the deployment's class: `__new__`, then await the async `__init__` that
    @serve.ingress gave it (Recognizer.__init__, then the frozen FastAPI app kept as the replica's ASGI app)."""
    replica = InProcessRecognizer.__new__(InProcessRecognizer)
    asyncio.run(InProcessRecognizer.__init__(replica, detector, classifier, str(SHIPPED_MODEL_DIR), "savedmodel", catalog))
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


def in_process_service(monkeypatch, catalog: Callable[[FakeHandle, FakeHandle], object] | None = None) -> Iterator[Service]:
    """The body of each test module's `service` fixture: a replica with the stand-in handles behind a TestClient,
    the API key off, the /hello policy `crop` (the tests that need the whole photo too say so). `catalog`: makes
    the Catalog's handle from the model handles (tests/test_catalog_routes.py)."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    detector = FakeHandle(detect=lambda images: [find_rectangles(image) for image in images], ready=lambda: DETECTOR_VERSION)
    classifier = FakeHandle(classify=name_by_colour, ready=lambda: CLASSIFIER_VERSION)
    # The replica's context: the routes' `self` is what Serve's class-based view asks it for (the servable object),
    # and @serve.batch reads its deployment config (to warn when batches cannot fill).
    config = SimpleNamespace(max_ongoing_requests=deployment_config(read_serve_config(), "Recognizer")["max_ongoing_requests"])
    context = SimpleNamespace(servable_object=None, _deployment_config=config)
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    replica = start_replica(detector, classifier, catalog(detector, classifier) if catalog else None)
    context.servable_object = replica
    replica.reconfigure({"top_k": TOP_K, "unknown_threshold": UNKNOWN_THRESHOLD})
    use_policy(replica, "crop")
    with TestClient(replica) as client:
        yield Service(replica, detector, classifier, client)
        follower = replica.catalog_copy.task  # the catalog long-poll, on the client's event loop: ended there

        async def stop_following() -> None:
            if follower is not None:
                follower.cancel()

        client.portal.call(stop_following)  # type: ignore[union-attr]


async def send_over_asgi(app, method: str, url: str, **request) -> httpx.Response:
    """A request over httpx's ASGI transport, which streams the body as it is produced (TestClient reads it whole)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        return await client.request(method, url, **request)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def multipart(parts: dict[str, bytes], closed: bool = True) -> bytes:
    """A multipart/form-data body (boundary `xyz`) with these file parts; unless `closed`, cut before its end."""
    body = b"".join(f'--xyz\r\nContent-Disposition: form-data; name="{name}"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
                    + data + b"\r\n" for name, data in parts.items())
    return body + b"--xyz--\r\n" if closed else body[:-2]


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
