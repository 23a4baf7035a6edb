"""The served graph over real HTTP, with the shipped models (or MODEL_LABEL_DIR), on real photos."""

import copy
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deployments.metrics import PRODUCTS_BOUNDARIES
from load_tests.photos import collage, freiburg_held_back_photos, grocery_val_photos, phone_photo
from load_tests.serve_app import ServeApp, free_port, shipped_config
from pipeline.core.model_label import load_model_label
from pipeline.core.paths import REPO_ROOT
from pipeline.core.settings import deployment_config
from tests.test_monitoring import RAY_SERVE_SERIES, alert_queries, dashboard_queries, series_and_labels
from tests.tiny_models import SHIPPED_MODEL_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.models]  # the shipped models, served on a local Ray

MODEL_DIR = os.environ.get("MODEL_LABEL_DIR") or str(SHIPPED_MODEL_DIR)


@pytest.fixture(scope="module")
def app():
    app = ServeApp(shipped_config(MODEL_DIR, free_port())).start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def bundle():
    return load_model_label(MODEL_DIR)


def recognize(app: ServeApp, data: bytes, part: str = "image", timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{app.url}/v1/recognize", files={part: ("photo.jpg", data, "image/jpeg")}, timeout=timeout)


def answer_key(answer: dict) -> list:
    """What must not change between a photo's lone answer and its answer under concurrent load."""
    return [
        (p["source"], p["label"], p["candidates"][0]["label"], [round(p["box"][k]) for k in ("x1", "y1", "x2", "y2")])
        for p in answer["products"]
    ]


@pytest.mark.data
def test_v1_answers_real_photos(app, bundle):
    top_k = deployment_config(app.config, "Recognizer")["user_config"]["top_k"]
    threshold = bundle.unknown_threshold_for(bundle.resolve_runtime("classifier", "auto", use_gpu=False))
    for path in grocery_val_photos(4) + freiburg_held_back_photos(2):
        response = recognize(app, path.read_bytes())
        assert response.status_code == 200, response.text
        answer = response.json()
        width, height = answer["photo"]["width"], answer["photo"]["height"]
        assert answer["products"], "every photo gets at least one entry (the whole photo when nothing is detected)"
        assert answer["models"] == bundle.versions | {"catalog": 0}  # the shipped config's catalog, empty here
        assert answer["timings"]["total_ms"] >= answer["timings"]["detect_ms"] > 0
        for product in answer["products"]:
            box = product["box"]
            assert 0 <= box["x1"] < box["x2"] <= width and 0 <= box["y1"] < box["y2"] <= height
            confidences = [c["confidence"] for c in product["candidates"]]
            assert len(confidences) == min(top_k, len(bundle.labels)) and confidences == sorted(confidences, reverse=True)
            assert {c["label"] for c in product["candidates"]} <= set(bundle.labels)
            assert product["confidence"] == confidences[0]
            # unknown_threshold is null in serve_config.yaml: the threshold calibrated at export for the classifier
            # runtime that serves (auto on this CPU-only cluster) applies
            assert product["known"] == (product["confidence"] >= threshold)
            if product["known"]:
                assert product["label"] == product["candidates"][0]["label"]
                assert product["fields"]["name"] == product["label"].split("_")[0]
            else:
                assert product["label"] is None
        if answer["whole_photo"]:
            assert len(answer["products"]) == 1 and answer["products"][0]["detector_confidence"] is None


@pytest.mark.data
def test_raw_body_and_img_part_give_the_same_answer(app):
    data = grocery_val_photos(1)[0].read_bytes()
    raw = httpx.post(f"{app.url}/v1/recognize", content=data, headers={"content-type": "image/jpeg"}, timeout=120)
    as_img = recognize(app, data, part="img")
    assert raw.status_code == as_img.status_code == 200
    assert answer_key(raw.json()) == answer_key(as_img.json())


@pytest.mark.data
def test_phone_photo_boxes_are_in_original_pixels(app):
    """A phone JPEG (a shelf photo enlarged to 3024 px a side) stored sideways with EXIF orientation 6, as a phone
    held upright stores it: answered in upright full-size pixels, each product where the shelf photo itself has
    it once the scale is undone (the same scene; the detector sees it at a different resolution only)."""
    from PIL import Image

    from load_tests.photos import jpeg_bytes

    path = freiburg_held_back_photos(1)[0]
    small = recognize(app, path.read_bytes()).json()
    upright = Image.open(path).convert("RGB")
    side = 3024
    sideways = upright.resize((side, round(side * upright.height / upright.width))).transpose(Image.Transpose.ROTATE_90)
    phone = recognize(app, jpeg_bytes(sideways, orientation=6)).json()
    scale = upright.width / side
    assert (phone["photo"]["width"], phone["photo"]["height"]) == (side, round(side * upright.height / upright.width))
    assert not small["whole_photo"] and not phone["whole_photo"]  # a shelf photo: products found in both

    def iou(a: dict, b: dict) -> float:
        inter = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"])) * max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
        area = lambda r: (r["x2"] - r["x1"]) * (r["y2"] - r["y1"])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    in_small_pixels = [{key: value * scale for key, value in product["box"].items()} for product in phone["products"]]
    assert iou(in_small_pixels[0], small["products"][0]["box"]) > 0.9  # the largest product: the same box
    for box in in_small_pixels:  # every product found is one the shelf photo has (one near the threshold may not be found)
        assert max(iou(box, theirs["box"]) for theirs in small["products"]) > 0.6, box


@pytest.mark.data
def test_several_products_in_one_photo_are_each_found_and_named(app):
    paths = freiburg_held_back_photos(4)
    data, tiles = collage(paths)
    response = recognize(app, data)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert not answer["whole_photo"]
    found_in = set()
    for product in answer["products"]:
        box = product["box"]
        centre = ((box["x1"] + box["x2"]) / 2, (box["y1"] + box["y2"]) / 2)
        for index, (x1, y1, x2, y2) in enumerate(tiles):
            if x1 <= centre[0] < x2 and y1 <= centre[1] < y2:
                found_in.add(index)
        assert product["candidates"][0]["label"]
    assert found_in == set(range(len(tiles))), f"products found in tiles {sorted(found_in)} of {len(tiles)}"


@pytest.mark.data
def test_concurrent_requests_each_get_their_own_answer(app):
    """32 distinct photos at once: batching mixes them in the models, never in the answers."""
    photos = [p.read_bytes() for p in grocery_val_photos(16) + freiburg_held_back_photos(16)]
    alone = [recognize(app, data).json() for data in photos]
    with ThreadPoolExecutor(max_workers=len(photos)) as pool:
        together = list(pool.map(lambda data: recognize(app, data), photos))
    assert all(r.status_code == 200 for r in together), [r.text for r in together if r.status_code != 200]
    assert [answer_key(r.json()) for r in together] == [answer_key(a) for a in alone]
    assert len({str(answer_key(a)) for a in alone}) > 4, "the photos should not all get the same answer"


BAD_REQUESTS = {  # each error through the real proxy and graph; every other bad input: tests/test_recognizer.py, test_uploads.py
    "not an image": (dict(files={"image": ("a.jpg", b"<html>no photo here</html>", "image/jpeg")}), 415, "not_an_image"),
    "truncated jpeg": (dict(content=None, truncated=True), 422, "truncated_image"),
    "oversized body": (dict(content=b"\xff\xd8" + b"\0" * (11 * 1024 * 1024), headers={"content-type": "image/jpeg"}),
                       413, "body_too_large"),
}


@pytest.mark.data
@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx_and_the_service_keeps_serving(app, case):
    request, status, code = BAD_REQUESTS[case]
    if request.pop("truncated", False):
        request = dict(content=phone_photo(grocery_val_photos(1)[0], (800, 600))[:6000], headers={"content-type": "image/jpeg"})
    response = httpx.post(f"{app.url}/v1/recognize", timeout=60, **request)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert recognize(app, grocery_val_photos(1)[0].read_bytes()).status_code == 200


def test_labels_and_health_name_the_served_models(app, bundle):
    labels = httpx.get(f"{app.url}/v1/labels").json()
    assert labels["labels"] == bundle.labels and labels["count"] == len(bundle.labels)
    assert httpx.get(f"{app.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{app.url}/readyz").json()
    catalog = ready["detail"].pop("catalog")
    assert ready["status"] == "ok" and ready["detail"] == bundle.versions
    assert catalog == "catalog version 0; this replica matches with version 0"


@pytest.mark.data
def test_live_user_config_change_loses_no_request(app, bundle):
    """Retune batching and top-k while requests flow: every request is answered, the new top-k takes effect."""
    photo = grocery_val_photos(1)[0].read_bytes()
    statuses, candidate_counts, stop = [], [], threading.Event()

    def send():
        while not stop.is_set():
            response = recognize(app, photo)
            statuses.append(response.status_code)
            if response.status_code == 200:
                candidate_counts.append(len(response.json()["products"][0]["candidates"]))

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    original = copy.deepcopy(app.config)
    try:
        time.sleep(2)
        changed = copy.deepcopy(app.config)
        deployment_config(changed, "Recognizer")["user_config"].update(top_k=2)
        deployment_config(changed, "Classifier")["user_config"].update(max_batch_size=4, batch_wait_timeout_s=0.05)
        deployment_config(changed, "Detector")["user_config"].update(max_batch_size=2, confidence_threshold=0.3)
        app.deploy(changed)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not candidate_counts or candidate_counts[-1] != 2):
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        for sender in senders:
            sender.join()
        app.deploy(original)
        app.wait_ready()
    assert statuses and set(statuses) == {200}, f"non-200 answers during the change: {statuses}"
    assert candidate_counts[0] == min(deployment_config(original, "Recognizer")["user_config"]["top_k"], len(bundle.labels))
    assert candidate_counts[-1] == 2


@pytest.mark.data
def test_hello_names_the_most_prominent_product(app):
    """/hello answers the label of the largest product that /v1/recognize finds in the same photo."""
    import base64

    for path in freiburg_held_back_photos(3):
        data = path.read_bytes()
        products = recognize(app, data).json()["products"]
        hello = httpx.post(f"{app.url}/hello", files={"img": ("photo.jpg", data, "image/jpeg")}, timeout=60)
        assert hello.status_code == 200, hello.text
        largest = max(products, key=lambda p: (p["box"]["x2"] - p["box"]["x1"]) * (p["box"]["y2"] - p["box"]["y1"]))
        assert base64.b64decode(hello.json()["item"]).decode("utf-8") == largest["candidates"][0]["label"]


@pytest.mark.data
def test_serving_answers_what_the_evaluation_measured(app, tmp_path):
    """/hello and pipeline.evaluation.evaluate go through one recognition core: for the same photos, the evaluation's
    per-photo answers (label and confidence) are what the served graph answers."""
    import base64
    import json
    import subprocess
    import sys

    photos = grocery_val_photos(6)
    (tmp_path / "val.txt").write_text("".join(f"{path}, {index}, 0\n" for index, path in enumerate(photos)))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluation.evaluate", "--model-label", MODEL_DIR, "--data", str(tmp_path / "val.txt"),
         "--out", str(tmp_path / "evaluation")],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())["answers"]
    assert [Path(a["path"]) for a in answers] == photos
    for path, measured in zip(photos, answers):
        data = path.read_bytes()
        hello = httpx.post(f"{app.url}/hello", files={"img": ("photo.jpg", data, "image/jpeg")}, timeout=60)
        assert base64.b64decode(hello.json()["item"]).decode("utf-8") == measured["label"]
        prominent = recognize(app, data).json()["products"][0]
        assert prominent["candidates"][0]["label"] == measured["label"]
        assert prominent["confidence"] == pytest.approx(measured["confidence"], abs=1e-4)
        assert (prominent["source"] == "whole_photo") == measured["whole_photo"]


def scrape_product_metrics(labels_by_series: dict[str, set[str]] | None = None) -> dict[tuple[str, tuple], float]:
    """Every `ray_product_*` sample of the Prometheus endpoints of Ray's nodes, summed over replicas:
    {(sample name, sorted (tag, value) pairs without Serve's replica tags): value}. `labels_by_series`, when given,
    gets every `ray_` series' name and label names, Ray's own included."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, tuple], float] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        text = httpx.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if labels_by_series is not None and sample.name.startswith("ray_"):
                    labels_by_series.setdefault(sample.name, set()).update(sample.labels)
                if sample.name.startswith("ray_product_"):
                    tags = tuple(sorted((k, v) for k, v in sample.labels.items()
                                        if k in ("endpoint", "status", "code", "stage", "le")))
                    samples[(sample.name, tags)] = samples.get((sample.name, tags), 0.0) + sample.value
    return samples


@pytest.mark.data
def test_product_metrics_are_exported_for_prometheus(app):
    """The product's own metrics (deployments/metrics.py) reach Ray's Prometheus endpoint with sane values, and
    every series deploy/monitoring's dashboard and alert rules query is exported, with the labels they use."""
    def value(samples: dict, name: str, **tags: str) -> float:
        return sum(v for (n, t), v in samples.items() if n == name and set(tags.items()) <= set(t))

    time.sleep(3)  # what earlier tests did has been reported (ServeApp: every second)
    before = scrape_product_metrics()
    photos = grocery_val_photos(3)
    answers = [recognize(app, path.read_bytes()) for path in photos]
    assert [answer.status_code for answer in answers] == [200] * 3
    products_answered = [len(answer.json()["products"]) for answer in answers]
    unknown_answered = sum(not product["known"] for answer in answers for product in answer.json()["products"])
    assert httpx.post(f"{app.url}/hello", files={"img": ("x.jpg", photos[0].read_bytes(), "image/jpeg")}, timeout=120).status_code == 200
    assert recognize(app, b"this is not a photo").status_code == 415

    def arrived(samples: dict) -> bool:
        return value(samples, "ray_product_photos_total", endpoint="/v1/recognize", code="not_an_image") > \
            value(before, "ray_product_photos_total", endpoint="/v1/recognize", code="not_an_image")

    labels_by_series: dict[str, set[str]] = {}  # every `ray_` series seen from here on, with its labels
    deadline, after = time.monotonic() + 60, before
    while time.monotonic() < deadline and not arrived(after := scrape_product_metrics(labels_by_series)):
        time.sleep(1)
    time.sleep(3)  # the last request's report, and any other replica's
    after = scrape_product_metrics(labels_by_series)
    delta = lambda name, **tags: value(after, name, **tags) - value(before, name, **tags)  # noqa: E731
    assert delta("ray_product_photos_total", endpoint="/v1/recognize", status="200", code="ok") == 3
    assert delta("ray_product_photos_total", endpoint="/hello", status="200", code="ok") == 1
    assert delta("ray_product_photos_total", endpoint="/v1/recognize", status="415", code="not_an_image") == 1
    assert delta("ray_product_decode_refusals_total", code="not_an_image") == 1
    answered = delta("ray_product_products_per_photo_count", endpoint="/v1/recognize")
    products = delta("ray_product_products_per_photo_sum", endpoint="/v1/recognize")
    assert answered == 3 and products >= 3
    # Each answer in its bucket: the counts are exact (Ray exports a histogram's sum from its buckets' midpoints)
    for bound in PRODUCTS_BOUNDARIES:
        in_bucket = delta("ray_product_products_per_photo_bucket", endpoint="/v1/recognize", le=str(bound))
        assert in_bucket == sum(count <= bound for count in products_answered), (bound, products_answered)
    assert delta("ray_product_unknown_products_total", endpoint="/v1/recognize") == unknown_answered
    # Stage seconds by endpoint. With the shipped models (the whole-photo policy) and an empty catalog, /hello
    # answers from the whole photo without asking the detector: no detect sample, not one of 0 s.
    assert delta("ray_product_whole_photo_answers_total", endpoint="/hello") == 1
    for stage in ("decode", "crop", "classify", "total"):
        for endpoint, answered in (("/v1/recognize", 3), ("/hello", 1)):
            assert delta("ray_product_stage_seconds_count", endpoint=endpoint, stage=stage) == answered, (endpoint, stage)
            assert delta("ray_product_stage_seconds_sum", endpoint=endpoint, stage=stage) > 0, (endpoint, stage)
    assert delta("ray_product_stage_seconds_count", endpoint="/v1/recognize", stage="detect") == 3
    assert delta("ray_product_stage_seconds_count", endpoint="/hello", stage="detect") == 0
    total_s = delta("ray_product_stage_seconds_sum", endpoint="/v1/recognize", stage="total")
    # Ray exports a histogram's sum from its buckets' midpoints, so sums compare only roughly: the total holds the
    # classify stage, and three photos take between 10 ms and a minute; the stage counts above are exact.
    assert 0.01 < total_s < 60 and total_s >= delta("ray_product_stage_seconds_sum", endpoint="/v1/recognize", stage="classify")
    assert value(after, "ray_product_photos_in_flight", endpoint="/v1/recognize") == 0
    # What deploy/monitoring queries is exported (Ray Serve's own series too), with the labels it queries
    queried = {name: labels for source in (dashboard_queries, alert_queries) for _, expression in source()
               for name, labels in series_and_labels(expression)[0].items()}
    not_counted_yet = set() if unknown_answered else {"ray_product_unknown_products_total"}  # a counter appears once counted
    # A gauge is exported for two metrics intervals after it is set (2 s here, RAY_metrics_report_interval_ms=1000);
    # Serve sets a replica's health every 10 s, the Recognizer its in-flight gauges at each health check (10 s)
    deadline = time.monotonic() + 30
    while set(queried) - set(labels_by_series) - not_counted_yet and time.monotonic() < deadline:
        time.sleep(1)
        scrape_product_metrics(labels_by_series)
    assert set(queried) - set(labels_by_series) <= not_counted_yet, set(queried) - set(labels_by_series)
    for name, labels in RAY_SERVE_SERIES.items():
        assert labels <= labels_by_series[name], (name, labels - labels_by_series[name])


@pytest.mark.data
def test_a_replica_killed_under_load_costs_no_answer(app):
    """ray.kill a Detector and then a Classifier replica while requests are in flight: Serve replaces each,
    the Recognizer retries the calls the dead replica held, and every request is answered 200."""
    from ray import serve

    from load_tests.control import APP_NAME, kill_one_replica, replica_actors

    def replaced(deployment: str, killed: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            actors = replica_actors().get(deployment, [])
            status = serve.status().applications[APP_NAME].deployments[deployment].status
            if actors and killed not in actors and status == "HEALTHY":
                return
            time.sleep(0.5)
        raise TimeoutError(f"{deployment} replica {killed} not replaced in {timeout_s}s")

    photo = grocery_val_photos(1)[0].read_bytes()
    statuses, stop = [], threading.Event()

    def send():
        while not stop.is_set():
            statuses.append(recognize(app, photo).status_code)

    senders = [threading.Thread(target=send) for _ in range(12)]
    for sender in senders:
        sender.start()
    killed = []
    try:
        for deployment in ("Detector", "Classifier", "Detector", "Classifier"):
            time.sleep(2)
            killed.append(kill_one_replica(deployment))
            replaced(deployment, killed[-1])
        time.sleep(2)
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    assert all(killed), f"no replica to kill: {killed}"
    assert statuses and set(statuses) == {200}, f"non-200 answers around the kills: {statuses}"
