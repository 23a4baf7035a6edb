"""Where things are: the one place that knows the repository's layout and the data beside it."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SERVE_CONFIG = REPO_ROOT / "serve_config.yaml"
MODEL_LABEL_DIR = REPO_ROOT / "model_label"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # read-only photos (DESIGN.md), beside the checkout
YOLO_CONFIG_DIR = REPO_ROOT / ".yolo"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""Files the dataset readers take as photos (what Pillow reads)."""
