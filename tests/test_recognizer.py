"""The routes and the orchestration of deployments/recognizer.py, with stand-in model handles
(tests/ingress_fakes.py): every product answered in original pixels, /hello's answer, the decode bound, the model
calls' timeouts and retry, readiness, /v1/labels and live reconfiguration."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError
from starlette.testclient import TestClient

from deployments.payloads import Classification
from deployments.recognizer import DECODE_SLOTS
from deployments.schemas import Recognition
from pipeline.core import photo_to_answer
from pipeline.core.model_label import parse_label
from pipeline.core.preprocessing import decode_photo
from pipeline.core.settings import RecognizerSettings, SettingsError
from tests.ingress_fakes import (
    BLUE,
    BLUE_LABEL,
    BUNDLE,
    CLASSIFIER_VERSION,
    DEPLOYMENT_GONE,
    DETECTOR_VERSION,
    OTHER_LABEL,
    OVERLOADED,
    RED,
    RED_LABEL,
    TOP_K,
    Service,
    assert_box,
    assert_error,
    colour_mask,
    failing,
    in_process_service,
    jpeg,
    letterbox_pixel,
    probabilities,
    send_over_asgi,
    shelf_photo,
    use_policy,
)

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


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
    assert answer["models"] == {"detector": DETECTOR_VERSION, "classifier": CLASSIFIER_VERSION, "catalog": None}  # no catalog here
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

    (letterboxed,) = service.detector.detect.calls[-1][0]  # one call, a list of this request's one image
    assert letterboxed.shape == (BUNDLE.detector_input_size, BUNDLE.detector_input_size, 3) and letterboxed.dtype == np.uint8
    assert len(service.classifier.classify.calls[-1][0]) == 2  # one crop per box, one call per photo


@pytest.mark.parametrize("policy", ["average", "whole_photo"])
def test_a_policy_that_looks_at_the_whole_photo_sends_it_last(service, policy):
    use_policy(service.replica, policy)
    products = service.recognize(shelf_photo()).json()["products"]
    (crops,) = service.classifier.classify.calls[-1]
    assert len(crops) == 3 and len(products) == 2  # red, blue, then the whole (mostly white) photo
    assert colour_mask(crops[-1], (255, 255, 255)).mean() > 0.5
    # the whole photo is OTHER_LABEL at 0.3: folded into the red product's answer, it changes its confidence
    expected = (0.9 + 0.7 / (len(BUNDLE.labels) - 1)) / 2 if policy == "average" else 0.3
    assert products[0]["candidates"][0]["confidence"] == pytest.approx(expected, abs=1e-6)
    service.recognize(shelf_photo(size=(800, 600), red=None, blue=None))  # nothing detected: the crop is the whole photo
    (crops,) = service.classifier.classify.calls[-1]
    assert len(crops) == 1


def test_an_unknown_product_has_no_label_but_keeps_its_candidates(service):
    service.classifier.classify.answer = lambda crops: Classification(
        np.stack([probabilities(OTHER_LABEL, 0.3) for _ in crops]), CLASSIFIER_VERSION, None)
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
    (crops,) = service.classifier.classify.calls[-1]
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


@pytest.mark.parametrize("policy", ["crop", "average", "whole_photo"])
def test_hello_classifies_only_what_its_answer_reads(service, policy):
    """/hello names one product: the smaller one is never sent to the classifier; under the whole-photo policy with
    no product enrolled only the whole photo is, and the detector is not asked. The answer is /v1/recognize's first
    product's."""
    use_policy(service.replica, policy)
    data = shelf_photo(red=(400, 400, 1400, 1800), blue=(100, 100, 300, 300))
    first = service.recognize(data).json()["products"][0]
    detector_calls = len(service.detector.detect.calls)
    hello = service.hello(data)
    (crops,) = service.classifier.classify.calls[-1]
    assert len(crops) == {"crop": 1, "average": 2, "whole_photo": 1}[policy]
    assert len(service.detector.detect.calls) == detector_calls + (policy != "whole_photo")
    if policy == "whole_photo":
        assert 0.2 < colour_mask(crops[0], RED).mean() < 0.5 and colour_mask(crops[0], BLUE).mean() > 0  # the whole photo
    else:
        assert colour_mask(crops[0], RED).mean() > 0.5  # the largest product, red
        assert not any(colour_mask(crop, BLUE).mean() > 0.5 for crop in crops)  # the smaller, blue one is not sent
    assert base64.b64decode(hello.json()["item"]).decode("utf-8") == first["candidates"][0]["label"]


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
    (letterboxed,) = service.detector.detect.calls[-1][0]  # one call, a list of this request's one image
    assert letterboxed.shape == (BUNDLE.detector_input_size, BUNDLE.detector_input_size, 3)

    hello = service.hello(data)
    assert hello.status_code == 200 and list(hello.json()) == ["item"]


def test_concurrent_decodes_are_bounded_per_replica(service, monkeypatch):
    active, most = 0, 0
    prepare = photo_to_answer.prepare_photo

    def counting_prepare(*args):
        nonlocal active, most
        active += 1  # in worker threads: a race would only make `most` larger, never hide an excess
        most = max(most, active)
        time.sleep(0.1)
        try:
            return prepare(*args)
        finally:
            active -= 1

    monkeypatch.setattr(photo_to_answer, "prepare_photo", counting_prepare)  # the decode in the core's loop
    data = jpeg(64, 48)

    async def burst():
        return await asyncio.gather(*(
            send_over_asgi(service.replica, "POST", "/v1/recognize", content=data, headers={"content-type": "image/jpeg"})
            for _ in range(3 * DECODE_SLOTS)
        ))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert most == DECODE_SLOTS


# Model deployment failures: 503 with Retry-After, or 500 for a bug -------------------------------------------


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


@pytest.mark.parametrize("method", ["detect", "classify"])
def test_a_model_call_unanswered_within_its_timeout_is_a_503_and_the_next_photo_is_answered(service, method, monkeypatch):
    """MODEL_CALL_TIMEOUT_S bounds each model call: a replica that does not answer (here 5 s, against a 0.3 s bound)
    costs that photo a 503 `model_unavailable` with Retry-After, not a hang; the next photo is answered. The bound is
    set where the replica's code reads it: @serve.ingress runs a copy of the module's class, with its own globals."""
    monkeypatch.setitem(type(service.replica)._call.__globals__, "MODEL_CALL_TIMEOUT_S", 0.3)
    fake = getattr(service.detector if method == "detect" else service.classifier, method)
    answer = fake.answer

    async def slow(*args):
        await asyncio.sleep(5.0)
        return answer(*args)

    fake.answer = failing(then=slow)
    started = time.monotonic()
    response = service.recognize(shelf_photo())
    assert_error(response, 503, "model_unavailable")
    assert response.headers.get("retry-after") == "1"
    assert time.monotonic() - started < 5.0  # answered at the bound, not when the replica finally answered
    fake.answer = answer
    assert service.recognize(shelf_photo()).status_code == 200


def test_a_model_call_is_named_in_the_log_by_its_caller(service, caplog):
    fake = service.classifier.classify
    fake.answer = failing(RayActorError(), then=fake.answer)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert service.recognize(shelf_photo()).status_code == 200
    assert "model call Classifier.classify lost its replica (RayActorError); retrying once" in caplog.text


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


def test_labels_are_the_classifiers_in_its_output_order(service):
    labels = service.client.get("/v1/labels").json()
    assert labels == {"count": len(BUNDLE.labels), "labels": BUNDLE.labels, "classifier": BUNDLE.versions["classifier"]}


# Live reconfiguration (user_config) ---------------------------------------------------------------------------


def red_share_of_crops(service: Service) -> float:
    (crops,) = service.classifier.classify.calls[-1]
    return float(colour_mask(crops[0], RED).mean())


def test_reconfigure_changes_the_crops_and_the_detectors_input(service):
    data = shelf_photo()
    assert service.recognize(data).status_code == 200
    default_share = red_share_of_crops(service)  # crop_margin 0.2: the red box and some white around it

    service.replica.reconfigure({"crop_margin": 0.0, "detector_input_size": 640})
    tight = service.recognize(data).json()
    assert red_share_of_crops(service) > 0.9 > default_share
    assert service.detector.detect.calls[-1][0][0].shape == (640, 640, 3)
    assert_box(tight["products"][0]["box"], (200, 300, 900, 1100), 2 * letterbox_pixel(2000, 640))

    service.replica.reconfigure({"crop_margin": 0.5})
    assert service.recognize(data).status_code == 200
    assert red_share_of_crops(service) < default_share
    assert service.detector.detect.calls[-1][0][0].shape == (BUNDLE.detector_input_size,) * 2 + (3,)  # back to the manifest's


@pytest.mark.parametrize("user_config", [
    {"crop_margin": 1.5}, {"detector_input_size": 100}, {"detector_image_max_side": 16},
    {"detector_image_max_side": 2000, "decode_min_side": 1000},
])
def test_reconfigure_refuses_an_invalid_user_config_and_keeps_the_last_good_one(service, user_config):
    service.replica.reconfigure({"crop_margin": 0.0})
    with pytest.raises(SettingsError):
        service.replica.reconfigure(user_config)
    assert service.replica.photo_to_answer.settings == RecognizerSettings(crop_margin=0.0)
    with pytest.raises(SettingsError, match="crop_margn"):  # a misspelt key is refused too, not ignored
        service.replica.reconfigure({"crop_margn": 0.1})
    assert service.recognize(shelf_photo()).status_code == 200


def test_photos_arriving_together_share_one_call_per_model_and_each_gets_its_own_answer(service):
    """The ingress gathers the photos of requests that arrive within gather_wait_s into one Detector call and one
    Classifier call (Ray's per-call cost paid once), and splits the answers back: a red photo is answered red, a
    blue one blue, whatever else shared its call; a photo that cannot be decoded is answered 415 alone."""
    from concurrent.futures import ThreadPoolExecutor

    settings = dataclasses.asdict(service.replica.photo_to_answer.settings) | {"gather_wait_s": 0.3}
    service.replica.reconfigure(settings)
    red = shelf_photo(blue=None)
    blue = shelf_photo(red=None, blue=(300, 400, 1200, 1600))
    photos = [red, blue, b"not a photo", blue, red, red, blue]
    detector_calls, classifier_calls = len(service.detector.detect.calls), len(service.classifier.classify.calls)
    with ThreadPoolExecutor(len(photos)) as pool:
        answers = list(pool.map(service.recognize, photos))
    assert [a.status_code for a in answers] == [200, 200, 415, 200, 200, 200, 200]
    for photo, answer in zip(photos, answers):
        if photo is not photos[2]:
            (product,) = answer.json()["products"]
            assert product["label"] == (RED_LABEL if photo is red else BLUE_LABEL)
    gathered = service.classifier.classify.calls[classifier_calls:]
    assert sum(len(crops) for (crops,) in gathered) == 6  # one crop a photo, every one classified once ...
    assert len(gathered) < 6 and len(service.detector.detect.calls) - detector_calls == len(gathered)  # ... in fewer calls
    assert max(len(images) for (images,) in service.detector.detect.calls[detector_calls:]) > 1

    settings["gather_wait_s"] = 0.0  # a call per request, at once
    service.replica.reconfigure(settings)
    classifier_calls = len(service.classifier.classify.calls)
    assert all(service.recognize(red).status_code == 200 for _ in range(3))
    assert len(service.classifier.classify.calls) - classifier_calls == 3
