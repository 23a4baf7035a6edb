"""Real photos from ../shared/data for the service tests, and phone-like versions of them."""

import io
from pathlib import Path

from PIL import Image

from pipeline.detector import is_validation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GROCERY = DATA / "grocery_store"
FREIBURG_IMAGES = DATA / "freiburg_groceries" / "images" / "train"


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


def phone_photo(path: Path, size: tuple[int, int] = (4032, 3024), orientation: int | None = None) -> bytes:
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
