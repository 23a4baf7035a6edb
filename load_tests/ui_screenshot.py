"""docs/ui.png drawn again: the operator page /ui on the real graph (the shipped models, a fresh temporary catalog
folder, an admin key), in Debian's headless Chromium, as an operator uses it.

    python -m load_tests.ui_screenshot --out docs/ui.png [--width 1280]

No photo of the data sets is on the page (the repository never holds their pixels): every photo is made here from
docs/quickstart/photo.jpg (a CC0 photo of a coffee cup, docs/quickstart/README.md), mirrored, cropped, turned and
its colours shifted. The operator (named, with the admin key) enrolls "Café cup" from three of them, reads the
enrollment's feedback and gives the product precedence over each trained class it names, opens the product's panel
(its photos and precedence), removes a photo and adds another (whose feedback shows there), and tries a new shot of
the cup: its boxes, the legend and the answer. The history then lists each version. The whole page is saved at
`--width`, as a PNG of at most 300 KB (colours reduced when needed). The graph and the browser are stopped at the
end, always. About half a minute on 2 shared cores (Ray and the models start).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from load_tests.operator_page import CHROMEDRIVER, CHROMIUM, OperatorPage, headless_chromium
from load_tests.serve_app import ServeApp, free_port, shipped_config
from pipeline.core.paths import MODEL_LABEL_DIR, REPO_ROOT

QUICKSTART_PHOTO = REPO_ROOT / "docs" / "quickstart" / "photo.jpg"
SKU, LABEL, OPERATOR = "cafe-cup", "Café cup", "Store operator"
ENROLL = ("cup-mirrored.jpg", "cup-closer.jpg", "cup-blue-glaze.jpg")  # the shipped models lose the blue one
ADD, TRY = "cup-warm.jpg", "cup-new-shot.jpg"
MAX_PNG_BYTES = 300 * 1024  # as tests/test_figures.py's pictures


def turned(photo: Image.Image, degrees: float) -> Image.Image:
    """Turned by `degrees`, cropped to the middle so that no corner is left empty, at the photo's size."""
    width, height = photo.size
    inner = photo.rotate(degrees, resample=Image.Resampling.BICUBIC).crop(
        (width // 10, height // 10, width - width // 10, height - height // 10))
    return inner.resize((width, height), Image.Resampling.BICUBIC)


def tinted(photo: Image.Image, red: float, blue: float) -> Image.Image:
    r, g, b = photo.split()
    return Image.merge("RGB", (r.point(lambda v: min(255, round(v * red))), g, b.point(lambda v: min(255, round(v * blue)))))


def derived_photos(folder: Path) -> dict[str, Path]:
    """The quick start's photo, five ways: three to enroll, one to add, one to try. With the shipped models the
    feedback answers the blue one unknown (a trained class's photos as close as the cup's other photos): the page
    offers precedence over that class."""
    photo = Image.open(QUICKSTART_PHOTO).convert("RGB")
    made = {
        "cup-mirrored.jpg": ImageOps.mirror(photo),
        "cup-closer.jpg": photo.crop((50, 0, 530, 400)).resize((600, 500), Image.Resampling.BICUBIC),
        "cup-warm.jpg": ImageEnhance.Color(turned(photo, 6)).enhance(1.4),
        "cup-blue-glaze.jpg": Image.merge("RGB", photo.split()[::-1]),  # red and blue swapped
        "cup-new-shot.jpg": tinted(ImageOps.mirror(turned(photo, -9)), 0.92, 1.1),
    }
    for name, image in made.items():
        image.save(folder / name, "JPEG", quality=90)
    return {name: folder / name for name in made}


def no_error(page: OperatorPage, selector: str) -> None:
    errors = [error.text for error in page.finds(f"{selector} .error")]
    if errors:
        raise RuntimeError(f"the page showed an error: {errors}; the page: {page.state()}")


def operate(page: OperatorPage, photos: dict[str, Path], admin_key: str) -> None:
    """What the picture shows, done as an operator does it."""
    page.open()
    page.type("#operator", OPERATOR)
    page.enroll(SKU, LABEL, [photos[name] for name in ENROLL], admin_key)
    no_error(page, "#enroll-result")
    accepted = int(page.text("#enroll-accepted"))
    for button in page.finds("#enroll-result button.give-precedence"):  # a trained class wins a photo: the operator's word
        button.click()
        page.driver.switch_to.alert.accept()
        page.wait(lambda button=button: button.get_attribute("data-done") or page.finds("#enroll-result .precedence-status .error"),
                  "the precedence's answer", 60)
        no_error(page, "#enroll-result .precedence-status")

    page.wait(lambda: page.product_row(SKU) is not None, "the product listed", 30)
    page.product_row(SKU).find_element("css selector", "button.photos").click()
    page.wait(lambda: page.product_photos() == accepted, "the product's photos listed", 30)
    if accepted > 1:  # one photo taken out, another added: two more versions
        page.confirm("#product-photos button.remove-photo")
        page.wait(lambda: page.product_photos() == accepted - 1 or page.finds("#product-status .error"), "a photo removed", 60)
        no_error(page, "#product-status")
    shown = page.product_photos()
    page.find("#add-photos").send_keys(str(photos[ADD].resolve()))
    page.find("#add-photos-submit").click()
    page.wait(lambda: page.product_photos() == shown + 1 or page.finds("#product-status .error"), "a photo added")
    no_error(page, "#product-status")

    page.try_photo(photos[TRY])
    version = page.driver.execute_script("return fetch('v1/catalog').then((r) => r.json()).then((info) => info.version)")
    page.wait(lambda: page.history(version) is not None and page.text("#catalog-version") == str(version),
              "the last version in the history", 30)
    page.wait(lambda: page.driver.execute_script(
        "return [...document.images].every((img) => img.closest('[hidden]') || (img.complete && img.naturalWidth > 0))"),
        "the thumbnails loaded", 30)


def full_page_png(page: OperatorPage, width: int) -> bytes:
    """The whole page, `width` CSS pixels wide, one device pixel each."""
    driver = page.driver
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    metrics = {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    metrics["height"] = int(driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver.get_screenshot_as_png()


def legend_colours() -> list[tuple[int, int, int]]:
    """The boxes' colours, as ui.html's legend gives them: kept exact when the picture's colours are reduced."""
    html = (REPO_ROOT / "deployments" / "catalog" / "ui.html").read_text(encoding="utf-8")
    found = re.findall(r'class="swatch" style="border-color: #([0-9a-f]{6})"', html)
    return [tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4)) for colour in found]


def reduced(image: Image.Image, colours: int) -> Image.Image:
    """`colours` colours: the page's most used ones (its flat backgrounds, borders, text) and the legend's, exact;
    median cut's for the rest (the photos), dithered."""
    exact = [rgb for _, rgb in sorted(image.getcolors(1 << 24), reverse=True)[:colours * 3 // 8]]
    exact += [rgb for rgb in legend_colours() if rgb not in exact]
    rest = image.quantize(colours - len(exact), method=Image.Quantize.MEDIANCUT).getpalette()[:3 * (colours - len(exact))]
    palette = Image.new("P", (1, 1))
    palette.putpalette([value for rgb in exact for value in rgb] + rest)
    indices = np.array(image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))
    pixels = np.array(image, dtype=np.int32)
    codes = pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]  # Pillow maps by a coarse cache: exact here
    for index, (r, g, b) in enumerate(exact):
        indices[codes == (r << 16 | g << 8 | b)] = index
    result = Image.fromarray(indices, "P")
    result.putpalette(palette.getpalette())
    return result


def write_png(png: bytes, out: Path) -> int:
    """Saved optimized; its colours reduced when it would be over MAX_PNG_BYTES. Returns its bytes."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (None, 256, 128, 64):
        buffer = io.BytesIO()
        (reduced(image, colours) if colours else image).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= MAX_PNG_BYTES:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return buffer.tell()


def take(out: Path, width: int) -> int:
    with tempfile.TemporaryDirectory(prefix="ui-screenshot-") as folder:
        photos = derived_photos(Path(folder))
        admin_key = secrets.token_urlsafe(16)
        config = shipped_config(os.environ.get("MODEL_LABEL_DIR") or MODEL_LABEL_DIR, free_port())
        application = config["applications"][0]
        shutil.rmtree(application["args"]["catalog_dir"], ignore_errors=True)  # shipped_config's own: not used
        application["args"]["catalog_dir"] = str(Path(folder) / "catalog")
        application["runtime_env"]["env_vars"]["PRODUCT_ADMIN_KEY"] = admin_key
        served = ServeApp(config)
        try:
            served.start()
            with headless_chromium(width, 1200) as driver:
                page = OperatorPage(driver, served.url)
                operate(page, photos, admin_key)
                png = full_page_png(page, width)
        finally:
            served.stop()
    return write_png(png, out)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "ui.png", help="the PNG to write (docs/ui.png)")
    parser.add_argument("--width", type=int, default=1280, help="the browser window's width in CSS pixels")
    args = parser.parse_args(argv)
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        parser.exit(2, f"needs Debian's chromium and chromium-driver packages: {', '.join(missing)} missing\n")
    size = take(args.out, args.width)
    print(f"{args.out} ({size // 1024} KB)", file=sys.stderr)
    return args.out


if __name__ == "__main__":
    main()
