"""The original business server's call, byte for byte, against a model whose labels are the original Korean ones."""

import base64

import httpx
import pytest

from load_tests.bodies import rest_template_body
from load_tests.photos import grocery_val_photos, phone_photo
from load_tests.serve_app import ServeApp, free_port, shipped_config
from pipeline.core.model_label import read_labels
from tests.test_model_label import ORIGINAL_LABELS
from tests.tiny_models import make_model_label

pytestmark = [pytest.mark.cluster, pytest.mark.models, pytest.mark.data]  # a tiny model served on a local Ray; real photos

ANSWER = "신라면_컵_114"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    labels = read_labels(ORIGINAL_LABELS)
    # A real (tiny) classifier that always answers ANSWER; an untrained detector finds nothing, so the
    # whole photo is classified, as /hello must do when nothing is detected.
    model_dir = make_model_label(tmp_path_factory.mktemp("korean"), labels, favourite=labels.index(ANSWER))
    app = ServeApp(shipped_config(model_dir, free_port())).start()
    yield app
    app.stop()


def rest_template_request(url: str, photo: bytes, filename: str = "photo.jpg") -> httpx.Response:
    """The request Spring's RestTemplate sends for a MultiValueMap with one Resource part named `img`."""
    body, headers = rest_template_body(photo, filename)
    return httpx.post(f"{url}/hello", content=body, headers=headers, timeout=120)


def client_side_name(answer: dict) -> str:
    """What the business server does with the answer: base64 → UTF-8 → the text before the first '_'."""
    return base64.b64decode(answer["item"]).decode("utf-8").split("_")[0]


@pytest.mark.parametrize("photo", ["grocery", "phone"])
def test_original_client_call_round_trips_a_korean_label(app, photo):
    path = grocery_val_photos(1)[0]
    data = path.read_bytes() if photo == "grocery" else phone_photo(path)  # a 12 MP phone JPEG, several MB
    response = rest_template_request(app.url, data)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert list(answer) == ["item"] and isinstance(answer["item"], str)  # a flat object of strings
    assert base64.b64decode(answer["item"]).decode("utf-8") == ANSWER
    assert client_side_name(answer) == "신라면"


def test_korean_filename_and_missing_part(app):
    data = grocery_val_photos(1)[0].read_bytes()
    assert rest_template_request(app.url, data, filename="사진.jpg").status_code == 200
    response = httpx.post(f"{app.url}/hello", files={"image": ("a.jpg", data, "image/jpeg")}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["code"] == "missing_image_part"


def test_v1_reports_the_same_label_with_its_fields(app):
    response = httpx.post(f"{app.url}/v1/recognize", files={"img": ("a.jpg", grocery_val_photos(1)[0].read_bytes())}, timeout=60)
    product = response.json()["products"][0]
    assert response.json()["whole_photo"] and product["source"] == "whole_photo"
    assert product["label"] == ANSWER and product["fields"] == {"name": "신라면", "container": "컵", "size": "114"}
