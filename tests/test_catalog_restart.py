"""`make serve` stopped and started again keeps the catalog: the products enrolled, their photos and the answers
they give (the Catalog reopens its SQLite store; each ingress replica gets its copy from it)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from load_tests.photos import freiburg_category_photos
from tests.test_make_serve import makefile_ray_env, start_served, stop

pytestmark = [pytest.mark.cluster, pytest.mark.models, pytest.mark.data]

ADMIN_KEY = "restart-test-key"


def test_a_restarted_make_serve_keeps_the_catalog(tmp_path):
    photos = freiburg_category_photos("JUICE", 2)  # a product the classifier never saw
    environment = {"PRODUCT_ADMIN_KEY": ADMIN_KEY}
    served = start_served(tmp_path, makefile_ray_env(), environment)
    try:
        files = [("photo", (f"{i}.jpg", Path(p).read_bytes(), "image/jpeg")) for i, p in enumerate(photos)]
        enrolled = httpx.post(f"{served.url}/v1/catalog/products", data={"sku": "kept-1", "label": "Kept product"},
                              files=files, headers={"X-Admin-Key": ADMIN_KEY}, timeout=120)
        assert enrolled.status_code == 201, enrolled.text
        version = enrolled.json()["catalog_version"]
        before = httpx.get(f"{served.url}/v1/catalog/products/kept-1", timeout=10).json()
    finally:
        stop(served)
    served = start_served(tmp_path, makefile_ray_env(), environment)
    try:
        assert httpx.get(f"{served.url}/v1/catalog/products/kept-1", timeout=10).json() == before
        assert httpx.get(f"{served.url}/v1/catalog", timeout=10).json()["version"] == version
        photo = Path(photos[0]).read_bytes()
        deadline = time.monotonic() + 10
        while True:
            answer = httpx.post(f"{served.url}/v1/recognize", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=60).json()
            if answer["models"]["catalog"] == version or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer["products"][0]["sku"] == "kept-1" and answer["products"][0]["label_source"] == "catalog"
    finally:
        stop(served)
