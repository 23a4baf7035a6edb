"""The photos a load test sends: real ones from ../shared/data as they are, and full-size phone JPEGs
(4032x3024, re-encoded) made from them once in memory at start. Nothing is written to disk."""

from __future__ import annotations

from tests.photos import freiburg_held_back_photos, grocery_val_photos, phone_photo

PHONE_SIZE = (4032, 3024)


def load_photos(originals: int = 8, phones: int = 4) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes): `originals` real photos (grocery and shelf) and `phones` of them made phone-sized."""
    paths = grocery_val_photos((originals + 1) // 2) + freiburg_held_back_photos(originals // 2)
    photos = [(path.name, path.read_bytes()) for path in paths]
    photos += [(f"phone-{path.stem}.jpg", phone_photo(path, PHONE_SIZE)) for path in paths[:phones]]
    return photos
