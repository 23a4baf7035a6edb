"""The operator page /ui in a real browser: Debian's headless Chromium, driven by selenium through Debian's
chromedriver (nothing downloaded: Selenium Manager is never asked), against the real served graph with the
shipped models and a fresh catalog folder. It enrolls a product from real photos (with the upload's progress and
the operator's name) and reads what the service will answer for them, lists it with its thumbnail, tries a photo and
reads the boxes, their legend and the answer off the page, removes one of its photos and adds one, is asked before
an enrolled SKU is replaced, reads the history and rolls the catalog back to a version, deletes the product, and sees
a refused write's error code. A product that looks like a trained class is given precedence over it from the
enrollment's feedback, and the precedence removed from the product's panel.

Skipped when the browser is not installed, except under CI=true, where .ci/run installs it and its absence fails.
The page's helpers are load_tests/operator_page.py's. docs/ui.png is not taken here (these photos are the data
sets', which the repository never holds): `python -m load_tests.ui_screenshot --out docs/ui.png` draws it again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from load_tests.operator_page import CHROMEDRIVER, CHROMIUM, OperatorPage, headless_chromium
from load_tests.photos import freiburg_category_photos, phone_photo
from load_tests.serve_app import ServeApp, free_port, shipped_config
from tests.test_catalog_service import val_photos
from tests.tiny_models import SHIPPED_MODEL_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.models, pytest.mark.data]

ADMIN_KEY = "ui-test-admin-key"
PRODUCT = "COFFEE"  # a Freiburg category: products the classifier never saw (what a store enrolls), which the detector finds
CATALOG_GREEN = (10, 125, 44)  # ui.html's stroke for a box the catalog named (#0a7d2c)


def require_browser() -> None:
    """Skip without Debian's chromium + chromedriver, or fail under CI, which installs them."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = f"the browser test needs Debian's chromium and chromium-driver packages: {', '.join(missing)} missing"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: .ci/run installs them)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[ServeApp]:
    config = shipped_config(os.environ.get("MODEL_LABEL_DIR") or SHIPPED_MODEL_DIR, free_port())
    application = config["applications"][0]
    application["args"]["catalog_dir"] = str(tmp_path_factory.mktemp("catalog"))
    application["runtime_env"]["env_vars"]["PRODUCT_ADMIN_KEY"] = ADMIN_KEY
    served = ServeApp(config).start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def page(request) -> Iterator[OperatorPage]:
    require_browser()  # before the graph starts: skipping (or failing under CI) takes no minutes
    app = request.getfixturevalue("app")
    with headless_chromium() as driver:
        yield OperatorPage(driver, app.url, fail=functools.partial(pytest.fail, pytrace=False))


def test_a_write_without_the_admin_key_shows_the_403_code(page):
    page.open()
    page.enroll("no-key-sku", "No key", freiburg_category_photos(PRODUCT, 1), admin_key="")
    error = page.find("#enroll-result .error")
    assert error.get_attribute("data-code") == "forbidden", error.text
    assert "forbidden" in error.text and "403" in error.text and "admin key" in error.text
    assert page.product_row("no-key-sku") is None


def assert_page_shows(page: OperatorPage, answer: dict) -> None:
    """The page lists each product of the service's answer as it answered it, and draws a box for each."""
    shown = page.shown_products()
    assert answer["products"]
    assert [(p["label_source"], p["sku"]) for p in shown] == [(p["label_source"], p["sku"]) for p in answer["products"]]
    for product, seen in zip(answer["products"], shown, strict=True):
        assert seen["name"] == (product["label"] if product["label"] is not None else "unknown")
        assert f"confidence {product['confidence']:.3f}" in seen["detail"]
        assert f"source: {product['label_source']}" in seen["detail"]
        if product["similarity"] is not None:
            assert f"similarity {product['similarity']:.3f}" in seen["detail"]
    assert int(page.find("#canvas").get_attribute("data-boxes")) == len(answer["products"])


def test_enroll_list_try_and_delete_a_product(page, app, tmp_path):
    enroll_from = freiburg_category_photos(PRODUCT, 3)
    sku, label = "house-coffee-500g", "House coffee_bag_500g (enrolled)"
    page.open()
    page.type("#operator", "UI Tester")
    page.enroll(sku, label, enroll_from, admin_key=ADMIN_KEY)

    errors = [e.text for e in page.finds("#enroll-result .error")]
    assert not errors, errors
    accepted = int(page.text("#enroll-accepted"))
    assert accepted >= 2, page.text("#enroll-result")  # packaged products: the detector finds them
    assert len(page.finds("#enroll-result li.accepted")) == accepted
    assert len(page.finds("#enroll-result li.accepted, #enroll-result li.rejected")) == len(enroll_from)
    kept = enroll_from[int(page.find("#enroll-result li.accepted").get_attribute("data-index"))]
    # what the service will answer for each photo: "k of n photos will be answered as this product", and why not the others
    summary = page.find("#enroll-result .feedback-summary")
    answered = int(summary.get_attribute("data-photos"))
    assert summary.get_attribute("data-of") == str(accepted)
    assert summary.text == f"{answered} of {accepted} photos will be answered as this product."
    others = page.finds("#enroll-result ul.feedback-photos li")
    assert len(others) == accepted - answered and all(li.find_element("css selector", ".reason").text for li in others)
    assert page.find("#enroll-progress").get_attribute("data-uploaded") == "true"  # XMLHttpRequest's upload events
    assert page.find("#sku").get_attribute("value") == "" and page.find("#label").get_attribute("value") == ""  # reset
    info = httpx.get(f"{app.url}/v1/catalog", timeout=30).json()
    assert page.text("#enroll-version") == str(info["version"])
    page.wait(lambda: page.text("#catalog-version") == str(info["version"]), "the catalog version refreshed", 30)
    assert page.text("#catalog-products") == "1"

    page.wait(lambda: page.product_row(sku) is not None, "the product listed", 30)
    row = page.product_row(sku)
    assert row.find_element("css selector", ".label").text == label
    page.wait(lambda: page.thumbnail_width(sku) > 0, "the thumbnail loaded", 30)
    page.wait(lambda: page.history(info["version"]) is not None, "the enrollment in the history", 30)
    assert page.history(info["version"], ".change") == f"enrolled {sku} ({label}) with {accepted} photos"
    assert page.history(info["version"], ".who").startswith("UI Tester (")
    shown_time = page.driver.execute_script(  # local time shown, the UTC instant kept in datetime
        "const t = document.querySelector(arguments[0]); return [t.dateTime, t.textContent]",
        f'#history tr[data-version="{info["version"]}"] time')
    assert shown_time[0].endswith("+00:00") and shown_time[1] and shown_time[1] != shown_time[0]

    # The same shot as a phone sends it (12 MP, re-encoded): the catalog names it, with the enrolled sku and label.
    width, height = Image.open(enroll_from[0]).size
    scale = 4032 / max(width, height)
    phone = tmp_path / "phone-shot.jpg"
    phone.write_bytes(phone_photo(enroll_from[0], (round(width * scale), round(height * scale))))
    answer = page.try_photo(phone)
    assert answer["models"]["catalog"] == info["version"], "the replica answered from an older catalog copy"
    assert_page_shows(page, answer)
    first = answer["products"][0]
    assert (first["label_source"], first["sku"], first["label"]) == ("catalog", sku, label), first
    shown = page.shown_products()[0]
    assert shown["name"] == label and f"sku: {sku}" in shown["detail"] and "source: catalog" in shown["detail"]
    assert page.canvas_has_colour(CATALOG_GREEN), "no catalog box drawn on the canvas"
    assert [item.get_attribute("data-source") for item in page.finds("#legend li")] == ["catalog", "model", "unknown"]

    # Another shot of the product: whichever the rule picks (catalog or classifier), the page shows that answer.
    answer = page.try_photo(freiburg_category_photos(PRODUCT, 4)[3])
    assert_page_shows(page, answer)
    if answer["products"][0]["label_source"] == "catalog":
        assert answer["products"][0]["sku"] == sku

    # Its photos: one removed (confirmed), one added
    page.product_row(sku).find_element("css selector", "button.photos").click()
    page.wait(lambda: page.product_photos() == accepted, "the product's photos listed", 30)
    page.confirm("#product-photos button.remove-photo")
    page.wait(lambda: page.product_photos() == accepted - 1, "a photo removed", 30)
    assert page.text("#product-status .ok").startswith("Removed photo")
    page.find("#add-photos").send_keys(str(kept.resolve()))
    page.find("#add-photos-submit").click()
    page.wait(lambda: page.product_photos() == accepted or page.finds("#product-status .error"), "a photo added")
    assert not page.finds("#product-status .error"), page.text("#product-status")
    assert page.text("#product-status .ok").startswith(f"Added 1 of 1 photo(s) to {sku}")
    added = httpx.get(f"{app.url}/v1/catalog", timeout=30).json()["version"]
    assert added == info["version"] + 2

    # Enrolling it again asks before it replaces it
    page.enroll(sku, label, [kept], admin_key=ADMIN_KEY)
    assert page.find("#enroll-result .error").get_attribute("data-code") == "sku_exists"
    page.find("#enroll-replace").click()
    page.wait(lambda: page.finds("#enroll-result .ok, #enroll-result .error"), "the replacement's answer")
    assert page.text("#enroll-version") == str(added + 1), page.text("#enroll-result")
    page.wait(lambda: page.photo_count(sku) == "1", "one photo left", 30)

    # The history lists each change; rolled back to the version before the replacement
    page.wait(lambda: page.history(added + 1) is not None, "the replacement in the history", 30)
    assert page.history(added + 1, ".change").startswith(f"replaced {sku}'s {accepted} photos with 1")
    assert page.history(added, ".change") == f"added 1 photo to {sku}"
    page.confirm(f'#history tr[data-version="{added}"] button.rollback')
    page.wait(lambda: page.history(added + 2) is not None, "the rollback in the history", 60)
    assert page.history(added + 2, ".change") == f"rolled back to version {added}: {sku} as then"
    page.wait(lambda: page.photo_count(sku) == str(accepted), "its photos back", 30)

    page.product_row(sku).find_element("css selector", "button.delete").click()
    page.driver.switch_to.alert.accept()
    page.wait(lambda: page.product_row(sku) is None, "the product gone from the list", 30)
    assert page.find("#products-status .ok").text.startswith(f"Deleted {sku}")
    after = httpx.get(f"{app.url}/v1/catalog", timeout=30).json()
    assert after["products"] == 0 and after["version"] > info["version"]
    page.wait(lambda: page.text("#catalog-version") == str(after["version"]), "the catalog version after the delete", 30)


def test_precedence_is_given_from_the_feedback_and_removed_from_the_product(page, app):
    """Four GroceryStore val photos of the trained class Watermelon enrolled as the store's own product: under the
    shipped rule the service would answer all four as Watermelon (tests/test_catalog_service.py measures why), so the feedback offers to
    give the product precedence over it; given (confirmed), then removed from the product's panel (confirmed)."""
    label, sku = "Watermelon_ _ ", "store-watermelon-ui"
    page.open()
    page.type("#operator", "UI Tester")
    page.enroll(sku, "Store watermelon", val_photos(label)[:4], admin_key=ADMIN_KEY)
    errors = [e.text for e in page.finds("#enroll-result .error")]
    assert not errors, errors
    assert page.text("#enroll-result .feedback-summary") == "0 of 4 photos will be answered as this product."
    lost = page.finds('#enroll-result li[data-answered-as="trained_class"]')
    assert len(lost) == 4 and all(f"'{label}'" in li.get_attribute("textContent") for li in lost)
    buttons = page.finds("#enroll-result button.give-precedence")  # one per class that wins a photo
    assert [(b.get_attribute("data-class"), b.text) for b in buttons] == [
        (label, "Give Store watermelon precedence over Watermelon in this store")]

    page.confirm("#enroll-result button.give-precedence")
    page.wait(lambda: page.finds("#enroll-result .precedence-status .ok, #enroll-result .precedence-status .error"),
              "the precedence's answer", 60)
    assert page.text("#enroll-result .precedence-status .ok").startswith(f"{sku} now takes precedence over Watermelon in this store")
    product = httpx.get(f"{app.url}/v1/catalog/products/{sku}", timeout=30).json()
    assert product["precedence"] == [label]
    given = httpx.get(f"{app.url}/v1/catalog", timeout=30).json()["version"]
    page.wait(lambda: page.history(given) is not None, "the precedence in the history", 30)
    assert page.history(given, ".change") == f"{sku} now takes precedence over '{label}'"
    assert page.history(given, ".who").startswith("UI Tester (")

    page.wait(lambda: page.product_row(sku) is not None, "the product listed", 30)
    page.product_row(sku).find_element("css selector", "button.photos").click()
    page.wait(lambda: page.find("#product-panel").get_attribute("data-precedence") == "1", "its precedence listed", 30)
    assert page.live_text("#product-precedence li .class") == "Watermelon"
    page.confirm("#product-precedence button.remove-precedence")
    page.wait(lambda: page.find("#product-panel").get_attribute("data-precedence") == "0", "its precedence removed", 60)
    assert page.text("#product-status .ok").startswith(f"{sku} no longer takes precedence over Watermelon")
    assert httpx.get(f"{app.url}/v1/catalog/products/{sku}", timeout=30).json()["precedence"] == []
    page.wait(lambda: page.history(given + 1) is not None, "the removal in the history", 30)
    assert page.history(given + 1, ".change") == f"{sku} no longer takes precedence over '{label}'"
