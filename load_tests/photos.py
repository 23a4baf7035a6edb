"""Real photos from ../shared/data, and phone-like versions of them: what the tests and the load tests send.

Full-size phone JPEGs (4032x3024, re-encoded) are made in memory; nothing is written to disk."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from pipeline.core.paths import SHARED_DATA
from pipeline.data.held_back import is_validation

GROCERY = SHARED_DATA / "grocery_store"
FREIBURG_IMAGES = SHARED_DATA / "freiburg_groceries" / "images" / "train"
PHONE_SIZE = (4032, 3024)


def grocery_val_photos(count: int) -> list[Path]:
    """The first photo of `count` different classes of the GroceryStoreDataset val split."""
    seen, photos = set(), []
    for line in (GROCERY / "val.txt").read_text().splitlines():
        path, class_id, _ = (part.strip() for part in line.split(","))
        if class_id not in seen:
            seen.add(class_id)
            photos.append(GROCERY / path)
        if len(photos) == count:
            break
    return photos


def freiburg_held_back_photos(count: int) -> list[Path]:
    """Shelf photos the shipped detector did not train on (its held-back validation split)."""
    photos = [p for p in sorted(FREIBURG_IMAGES.glob("*.jpg")) if is_validation(p.name, 0.1, 0)]
    step = max(1, len(photos) // count)
    return photos[::step][:count]


def jpeg_bytes(image: Image.Image, quality: int = 90, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def phone_photo(path: Path, size: tuple[int, int] = PHONE_SIZE, orientation: int | None = None) -> bytes:
    """A real photo upscaled and re-encoded the way a phone sends it (12 MP JPEG)."""
    return jpeg_bytes(Image.open(path).resize(size, Image.Resampling.BICUBIC), orientation=orientation)


def collage(paths: list[Path], tile: int = 448) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """Photos side by side in a 2-column grid, as one JPEG; returns it and each tile's (x1, y1, x2, y2)."""
    columns = 2
    rows = (len(paths) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * tile, rows * tile), (255, 255, 255))
    tiles = []
    for index, path in enumerate(paths):
        x, y = (index % columns) * tile, (index // columns) * tile
        canvas.paste(Image.open(path).convert("RGB").resize((tile, tile)), (x, y))
        tiles.append((x, y, x + tile, y + tile))
    return jpeg_bytes(canvas), tiles


def load_photos(originals: int = 8, phones: int = 4) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes): `originals` real photos (grocery and shelf) and `phones` of them made phone-sized."""
    paths = grocery_val_photos((originals + 1) // 2) + freiburg_held_back_photos(originals // 2)
    photos = [(path.name, path.read_bytes()) for path in paths]
    photos += [(f"phone-{path.stem}.jpg", phone_photo(path, PHONE_SIZE)) for path in paths[:phones]]
    return photos


def drawn_product(seed: int = 0, size: tuple[int, int] = (900, 1200)) -> bytes:
    """A drawn photo of a carton on a shelf (a JPEG), which the shipped detector finds as a product: for the
    catalog's pictures and tests that must not carry the datasets' pixels. `seed` moves the carton a little."""
    from PIL import ImageDraw

    offset = [int(v) for v in random.Random(seed).sample(range(-40, 40), 2)]
    image = Image.new("RGB", size, (200, 190, 170))
    draw = ImageDraw.Draw(image)
    for y in range(0, size[1], 300):
        draw.rectangle((0, y + 280, size[0], y + 300), fill=(120, 110, 100))  # shelves
    x0, y0 = 250 + offset[0], 250 + offset[1]
    draw.rectangle((x0, y0, x0 + 400, y0 + 650), fill=(30, 120, 200), outline=(10, 10, 10), width=6)
    draw.rectangle((x0 + 30, y0 + 150, x0 + 370, y0 + 350), fill=(250, 250, 250))
    draw.ellipse((x0 + 120, y0 + 420, x0 + 280, y0 + 580), fill=(250, 200, 40))
    return jpeg_bytes(image, quality=92)


def freiburg_category_photos(category: str, count: int) -> list[Path]:
    """The first `count` Freiburg shelf photos of one category (its file names' prefix, e.g. "COFFEE"): products
    the classifier was never trained on, so not in its gallery either (what a store enrolls in the catalog)."""
    return sorted(FREIBURG_IMAGES.glob(f"{category.upper()}[0-9]*.jpg"))[:count]
