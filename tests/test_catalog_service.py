"""The catalog on the served graph over real HTTP: real photos enrolled through the real Detector and Classifier,
two ingress replicas following the Catalog deployment, and the Catalog replica killed under load.
Traffic goes to 127.0.0.1 only, in loops bounded in count and time."""

from __future__ import annotations

import base64
import math
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from load_tests.photos import GROCERY, freiburg_category_photos, grocery_val_photos, phone_photo
from load_tests.serve_app import ServeApp, free_port, shipped_config
from pipeline.core.catalog.match import embedding_space
from pipeline.core.model_label import load_model_label
from pipeline.data.datasets import load_labelled_data
from tests.tiny_models import SHIPPED_MODEL_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.models, pytest.mark.data]

ADMIN_KEY = "catalog-service-test"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
WRITES = 12  # catalog writes whose enrolled → answered-by-every-replica delay is measured


def train_photos(class_index: int, count: int) -> list[Path]:
    data = load_labelled_data(GROCERY)
    return [Path(p) for p, c in zip(data.train.paths, data.train.class_ids) if c == class_index][:count]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = shipped_config(SHIPPED_MODEL_DIR, free_port())
    application = config["applications"][0]
    application["args"]["catalog_dir"] = str(tmp_path_factory.mktemp("catalog"))
    application["runtime_env"]["env_vars"]["PRODUCT_ADMIN_KEY"] = ADMIN_KEY
    recognizer = next(d for d in application["deployments"] if d["name"] == "Recognizer")
    recognizer["autoscaling_config"]["min_replicas"] = 2  # two replicas that match crops, each with its copy
    app = ServeApp(config).start()
    yield app
    app.stop()


def enroll(app: ServeApp, sku: str, label: str, photos: list[Path], replace: bool = False) -> httpx.Response:
    files = [("photo", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    return httpx.post(f"{app.url}/v1/catalog/products", data={"sku": sku, "label": label, "replace": str(replace).lower()},
                      files=files, headers=ADMIN, timeout=120)


def recognize(app: ServeApp, photo: bytes) -> dict:
    response = httpx.post(f"{app.url}/v1/recognize", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


class Clients:
    """`count` threads sending `photo` to /v1/recognize until stopped (at most `limit` requests each); each
    response goes to `record(started, response)`."""

    def __init__(self, app: ServeApp, photo: bytes, record, count: int, limit: int = 2000) -> None:
        self.stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=60) as http:
                for _ in range(limit):
                    if self.stop.is_set():
                        return
                    started = time.monotonic()
                    record(started, http.post(f"{app.url}/v1/recognize", files={"image": ("p.jpg", photo, "image/jpeg")}))

        self.threads = [threading.Thread(target=client) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def test_an_enrolled_product_is_named_by_the_catalog_on_real_photos(app):
    photos = freiburg_category_photos("COFFEE", 3)  # a product the classifier never saw
    response = enroll(app, "own-brand-1", "Own brand_box_500g", photos)
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["accepted"]) + len(body["rejected"]) == 3 and body["accepted"], body
    enrolled = photos[[a["index"] for a in body["accepted"]][0]]
    deadline = time.monotonic() + 5
    while (answer := recognize(app, enrolled.read_bytes()))["models"]["catalog"] != body["catalog_version"]:
        assert time.monotonic() < deadline, answer["models"]
    product = answer["products"][0]
    assert product["label_source"] == "catalog" and product["sku"] == "own-brand-1" and product["similarity"] > 0.95
    assert product["label"] == "Own brand_box_500g" and product["known"]
    hello = httpx.post(f"{app.url}/hello", files={"img": ("p.jpg", enrolled.read_bytes(), "image/jpeg")}, timeout=60)
    assert base64.b64decode(hello.json()["item"]).decode() == "Own brand_box_500g"
    # a photo of a product the classifier was trained on keeps the classifier's answer
    other = recognize(app, grocery_val_photos(1)[0].read_bytes())["products"][0]
    assert other["label_source"] == "model" and other["sku"] is None and other["similarity"] < product["similarity"]
    info = httpx.get(f"{app.url}/v1/catalog", timeout=10).json()
    assert info["products"] >= 1 and info["model_version"] == embedding_space(answer["models"]["classifier"],
                                                                                   load_model_label(SHIPPED_MODEL_DIR).whole_photo_share)


def val_photos(label: str) -> list[Path]:
    data = load_labelled_data(GROCERY)
    return [Path(p) for p, c in zip(data.val.paths, data.val.class_ids) if data.labels[c] == label]


def answered_by(app: ServeApp, photo: bytes, version: int) -> dict:
    """The largest product's answer from a replica whose copy is at catalog `version` (two replicas follow)."""
    deadline = time.monotonic() + 5
    while (answer := recognize(app, photo))["models"]["catalog"] != version:
        assert time.monotonic() < deadline, answer["models"]
    return answer["products"][0]


def test_precedence_over_a_trained_class_changes_the_served_answer(app):
    """A store's own watermelon enrolled from four GroceryStore val photos of the trained class Watermelon; the fifth
    is asked. Under the shipped rule (beats_training, +0.0735) the classifier answers it: its crop is 0.901 from the
    enrolled photos and 0.896 from a Watermelon training photo (0.069 short of the margin, measured with the served
    runtimes, tflite_int8 and onnx_int8). The enrollment's feedback says all four photos lose to Watermelon.
    Given precedence over Watermelon, the catalog answers it (its nearest other training photo, Papaya's, is at 0.639);
    cleared, the classifier again. A new rule in the manifest may answer otherwise: measure a class again then."""
    label = "Watermelon_ _ "
    photos = val_photos(label)
    assert len(photos) == 5
    response = enroll(app, "store-watermelon", "Store watermelon", photos[:4])
    assert response.status_code == 201 and len(response.json()["accepted"]) == 4, response.text
    body = response.json()
    assert body["answered_as_product"] == {"photos": 0, "of": 4}, body["feedback"]
    lost = [f for f in body["feedback"] if f["answered_as"] == "trained_class"]
    assert len(lost) == 4 and {(f["label"], f["training_label"]) for f in lost} == {(label, label)}, body["feedback"]
    query, version = photos[4].read_bytes(), body["catalog_version"]
    product = answered_by(app, query, version)
    assert (product["label_source"], product["label"], product["sku"]) == ("model", label, None), product

    given = httpx.put(f"{app.url}/v1/catalog/products/store-watermelon/precedence", json={"over": [label]},
                      headers=ADMIN | {"X-Operator": "Service test"}, timeout=30)
    assert given.status_code == 200 and given.json()["product"]["precedence"] == [label], given.text
    product = answered_by(app, query, given.json()["catalog_version"])
    assert (product["label_source"], product["label"], product["sku"]) == ("catalog", "Store watermelon", "store-watermelon")

    cleared = httpx.put(f"{app.url}/v1/catalog/products/store-watermelon/precedence", json={"over": []}, headers=ADMIN,
                        timeout=30)
    assert cleared.status_code == 200, cleared.text
    product = answered_by(app, query, cleared.json()["catalog_version"])
    assert (product["label_source"], product["label"]) == ("model", label), product
    history = httpx.get(f"{app.url}/v1/catalog/history", params={"limit": 2}, timeout=10).json()["versions"]
    assert [(v["action"], v["operator"]) for v in history] == [("precedence", "admin"), ("precedence", "Service test")]
    assert history[1]["change"] == f"store-watermelon now takes precedence over '{label}'"
    assert httpx.delete(f"{app.url}/v1/catalog/products/store-watermelon", headers=ADMIN, timeout=30).status_code == 200


def test_a_write_is_answered_by_every_replica_within_a_second(app):
    """Clients keep asking while the catalog changes (a product deleted and restored by rollback, alternately); a
    request started after a write returned, but answered with an older catalog, is stale. Per write: how long
    after it returned a stale answer could still start. p99 (the max, over WRITES writes) must be <= 1 s."""
    photo = train_photos(class_index=3, count=1)[0].read_bytes()
    enroll(app, "refresh-1", "Refresh test", train_photos(class_index=7, count=2))
    seen: list[tuple[float, int]] = []  # (request start, catalog version answered)
    clients = Clients(app, photo, lambda started, response: seen.append((started, response.json()["models"]["catalog"])), 4)
    writes: list[tuple[float, int]] = []  # (write returned, its version)
    sent: list[float] = []  # when each write was sent
    try:
        time.sleep(2)
        for i in range(WRITES):
            sent.append(time.monotonic())
            if i % 2 == 0:
                response = httpx.delete(f"{app.url}/v1/catalog/products/refresh-1", headers=ADMIN, timeout=30)
            else:
                version = writes[-1][1] - 1  # the version before the delete: the product back
                response = httpx.post(f"{app.url}/v1/catalog/rollback", json={"version": version}, headers=ADMIN, timeout=30)
            assert response.status_code == 200, response.text
            writes.append((time.monotonic(), response.json()["catalog_version"]))
            time.sleep(1.5)
    finally:
        clients.join()
    delays, from_send = [], []
    for (returned, version), start in zip(writes, sent):
        stale = [started for started, answered in seen if started > start and answered < version]
        delays.append(max([t - returned for t in stale if t > returned], default=0.0))
        from_send.append(max([t - start for t in stale], default=0.0))
    print(f"\nwrite returned → a stale answer could still start: max {max(delays):.3f} s over {len(delays)} writes; "
          f"write sent → last stale start: max {max(from_send):.3f} s, mean {np.mean(from_send):.3f} s; {len(seen)} requests")
    assert len(seen) > 5 * WRITES
    # The bound is the product's promise (README: every replica recognises an enrolled product within a second),
    # not a speed figure: each replica's long-poll answers as soon as a write lands, so the delay is one snapshot
    # transfer and a request's start (a few tens of ms when idle); a slow machine has the rest of the second.
    assert max(delays) <= 1.0, delays


def test_the_catalog_replica_killed_under_load_recognition_goes_on_and_writes_wait(app):
    from load_tests.control import kill_one_replica, replica_actors

    photos = freiburg_category_photos("TEA", 3)
    assert enroll(app, "kill-test-1", "Kill test", photos[:2]).status_code == 201
    photo = photos[0].read_bytes()
    deadline = time.monotonic() + 5
    while recognize(app, photo)["products"][0]["sku"] != "kill-test-1":
        assert time.monotonic() < deadline
    statuses, skus = [], []

    def record(started: float, response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code == 200:
            skus.append(response.json()["products"][0]["sku"])

    clients = Clients(app, photo, record, 2, limit=500)
    write_statuses = []
    try:
        time.sleep(1)
        killed = kill_one_replica("Catalog")
        assert killed
        time.sleep(0.5)
        down = enroll(app, "kill-test-2", "Kill test 2", photos[2:3])
        write_statuses.append(down.status_code)
        if down.status_code == 503:
            assert down.json()["error"]["code"] == "catalog_unavailable" and down.headers["retry-after"]
        deadline = time.monotonic() + 120
        while killed in replica_actors().get("Catalog", [killed]) or down.status_code != 201:
            assert time.monotonic() < deadline, "the Catalog replica was not replaced"
            time.sleep(1)
            down = enroll(app, "kill-test-2", "Kill test 2", photos[2:3], replace=True)  # a retry: the same write again
            write_statuses.append(down.status_code)
    finally:
        clients.join()
    assert set(statuses) == {200}, statuses
    assert set(skus) == {"kill-test-1"}  # every answer matched from the replicas' copies meanwhile
    assert set(write_statuses) <= {201, 503} and write_statuses[-1] == 201, write_statuses
    assert httpx.get(f"{app.url}/v1/catalog/products/kill-test-1", timeout=10).status_code == 200  # nothing lost
    # The replicas' copies, whose long-polls failed while the Catalog was gone, follow the new replica: the product
    # enrolled once it was back is answered.
    new_photo, deadline = photos[2].read_bytes(), time.monotonic() + 10
    while recognize(app, new_photo)["products"][0]["sku"] != "kill-test-2":
        assert time.monotonic() < deadline, "the ingress replicas did not follow the replaced Catalog"
        time.sleep(0.2)


def wait_replaced(app, killed: str, timeout_s: float = 120) -> None:
    """Until a new Catalog replica has replaced `killed` and answers."""
    from load_tests.control import replica_actors

    deadline = time.monotonic() + timeout_s
    while killed in replica_actors().get("Catalog", [killed]) or \
            httpx.get(f"{app.url}/v1/catalog", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the Catalog replica was not replaced"
        time.sleep(1)


def test_the_catalog_replica_killed_during_a_write_leaves_it_whole_or_absent(app):
    """An enrollment of 20 phone-sized photos (7 MP, ~30 MB) is under way when the Catalog replica is killed, a third
    of the way through the time the same enrollment took just before, warm (measured here, so the kill lands inside
    the write on a fast machine as on a slow one; earlier again if the write still beat it): the write is answered,
    503 `catalog_unavailable` or 201, never a hang or a 500, and once a new replica has reopened the store the
    product is there with every photo the answer accepted, or not at all: nothing half-written. A 503 says whether
    the write may have been applied: killed after the commit, before the answer, the product is there whole though
    the answer was a 503 (CI found that, once), so "applied" is "unknown" there, and false only when the write was
    never sent. This test found two 500s: any enrollment over 4 MiB (the gRPC message limit of Serve's throughput
    mode, raised in serve_config.yaml), and the gRPC error of a Catalog killed under a call (now taken for the
    Catalog being down: deployments/catalog/calls.py)."""
    from load_tests.control import kill_one_replica

    photos = [phone_photo(path, (3024, 2268)) for path in freiburg_category_photos("COFFEE", 20)]
    files = [("photo", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    answer: dict[str, object] = {}

    def write(sku: str) -> None:
        answer["response"] = httpx.post(f"{app.url}/v1/catalog/products", data={"sku": sku, "label": "Half written"},
                                        files=files, headers=ADMIN, timeout=120)
        answer["at"] = time.monotonic()

    took = math.inf
    for timing in ("timing-1", "timing-2"):  # how long this enrollment takes here, warm (the first pays for the cold
        sent = time.monotonic()               # start: CI measured it twice the second); then out of the way
        write(timing)
        took = min(took, answer["at"] - sent)  # type: ignore[operator]
        assert answer["response"].status_code == 201, answer["response"].text  # type: ignore[attr-defined]
        whole = len(answer["response"].json()["accepted"])  # type: ignore[attr-defined]  # the same photos, the same answer
        assert httpx.delete(f"{app.url}/v1/catalog/products/{timing}", headers=ADMIN, timeout=30).status_code == 200
    for attempt, share in enumerate((1 / 3, 1 / 6, 1 / 12)):  # a kill must land inside the write: earlier if it did not
        sku = f"half-{attempt + 1}"
        sent = time.monotonic()
        writer = threading.Thread(target=write, args=(sku,))
        writer.start()
        time.sleep(took * share)
        killed_at, killed = time.monotonic(), kill_one_replica("Catalog")
        assert killed
        writer.join(150)
        assert not writer.is_alive(), "the write hung"
        response = answer["response"]
        assert isinstance(response, httpx.Response)
        if answer["at"] > killed_at:  # type: ignore[operator]
            break
        assert response.status_code == 201, response.text  # answered before the kill: a plain write, then the next try
        wait_replaced(app, killed)
        assert httpx.delete(f"{app.url}/v1/catalog/products/{sku}", headers=ADMIN, timeout=30).status_code == 200
    assert answer["at"] > killed_at, f"every write was answered before its kill ({response.status_code}): nothing was tested"
    assert response.status_code in (201, 503), response.text
    wait_replaced(app, killed)
    stored = httpx.get(f"{app.url}/v1/catalog/products/{sku}", timeout=10)
    print(f"\nthe write took {took:.1f} s; Catalog killed {killed_at - sent:.1f} s after it was sent, "
          f"{answer['at'] - killed_at:.1f} s before its answer: {response.status_code}; then the product: {stored.status_code}",
          flush=True)
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "catalog_unavailable" and response.headers["retry-after"]
        if response.json()["applied"] is False:  # the Catalog was gone before the write was sent
            assert stored.status_code == 404, stored.text
        else:  # killed under the write: committed whole, or not at all, and the answer says it cannot know which
            assert response.json()["applied"] == "unknown", response.text
            assert stored.status_code == 404 or stored.json()["photos"] == whole, stored.text
    else:
        assert stored.status_code == 200 and stored.json()["photos"] == len(response.json()["accepted"]), stored.text
