"""Hostile inputs (issue 9, item 3): what decoding a photo costs in memory, measured in a subprocess of its own,
where peak RSS means something. The ingress's handling of hostile clients and inputs over HTTP (elongated JPEGs,
slow bodies, bounded concurrent decodes, error statuses, 405, /docs offline, the API key) is in the fast tier:
tests/test_recognizer.py, test_uploads.py, test_errors.py, test_api.py, test_auth.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from pipeline.core.preprocessing import DECODE_PEAK_BYTES_PER_PIXEL

# Item 3: memory amplification -------------------------------------------------------------------------------

MEASURE = """
import sys
from pipeline.core.preprocessing import decode_photo
def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))
data = open(sys.argv[1], "rb").read()
before = kib("VmRSS:")
photo = decode_photo(data)
print(photo.image.width, photo.image.height, (kib("VmHWM:") - before) * 1024)
"""


def peak_decode_bytes(path) -> tuple[tuple[int, int], int]:
    """Decoded size and peak RSS over the process's RSS just before the decode (an upper bound of its cost)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120, check=True)
    width, height, peak = map(int, out.stdout.split())
    return (width, height), peak


def test_16_bit_png_decodes_within_a_stated_memory_budget(tmp_path):
    """The issue's photo: 7000x7000 16-bit grayscale, ~100 KB. It cost 1,218 MiB through float64 copies; now the
    decode holds the 98 MB full-size image and a band at a time, and keeps 1000x1000."""
    pixels = np.zeros((7000, 7000), np.uint16)
    pixels[::7, ::3] = 40000
    path = tmp_path / "gray16.png"
    Image.fromarray(pixels).save(path, "PNG")
    del pixels
    assert path.stat().st_size < 200_000

    size, peak = peak_decode_bytes(path)
    assert size == (1000, 1000)
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"  # the budget: under 200 MiB (measured ~135)
    assert peak < DECODE_PEAK_BYTES_PER_PIXEL * 7000 * 7000


def test_the_costliest_format_fits_the_per_pixel_bound_the_ingress_is_sized_with(tmp_path):
    """WebP at the 50 MP limit: Pillow's decoder holds about four full copies. DECODE_PEAK_BYTES_PER_PIXEL, and so
    the ingress's DECODE_SLOTS, must cover it."""
    side = 7071  # 50 MP
    pixels = np.zeros((side, side), np.uint8)
    pixels[::5, ::3] = 200
    path = tmp_path / "big.webp"
    Image.fromarray(pixels).convert("RGBA").save(path, "WEBP", lossless=True, method=0)
    del pixels

    size, peak = peak_decode_bytes(path)
    assert size == (1011, 1011)
    assert peak < DECODE_PEAK_BYTES_PER_PIXEL * side * side, f"{peak / (side * side):.1f} bytes a pixel"
