"""Make ultralytics work with no network: call `prepare_ultralytics()` before the first `import ultralytics`.

Ultralytics otherwise checks for updates, sends usage analytics, pip-installs missing requirements and
downloads a font for its plots (train/val fetch Arial.ttf even with plots=False). Training (pipeline/) and
serving (deployments/) both call this, so neither waits on a network that is not there.
No TensorFlow here: importing it next to torch's compiled parts can crash the process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.core.paths import YOLO_CONFIG_DIR

DEFAULT_CONFIG_DIR = YOLO_CONFIG_DIR
"""Ultralytics' settings and fonts live here (gitignored), not in the user's home directory."""

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # the names ultralytics looks for (ASCII / non-ASCII class names)


def offline_environment(config_dir: Path | str | None = None) -> dict[str, str]:
    """The YOLO_* variables, Python's one statement of them: ultralytics offline, its settings in `config_dir` (default
    the repository's .yolo/). prepare_ultralytics sets them in this process; a child process is started with them.

    Two places set the same values outside Python, because they configure a process before any of this code runs:
    the Makefile's exports (every `make` target, `make serve`'s Ray included) and serve_config.yaml's runtime_env
    (every Ray worker process of the application, on any node). The deploy/ images set them too (Dockerfile ENV,
    rayservice.yaml)."""
    return {
        "YOLO_OFFLINE": "1",  # is_online() answers False: no update checks, no downloads attempted
        "YOLO_AUTOINSTALL": "0",  # never pip-install a "missing" requirement at run time
        "YOLO_CONFIG_DIR": str(config_dir or DEFAULT_CONFIG_DIR),
    }


def prepare_ultralytics(config_dir: Path | str | None = None) -> Path:
    """Set the offline environment, put a local font where ultralytics looks, turn off settings sync.

    Returns the Ultralytics config directory. Safe to call more than once. An existing YOLO_CONFIG_DIR in
    the environment wins over the default, so a deployment can point it at a writable place.
    """
    environment = offline_environment(config_dir)
    if config_dir is None and "YOLO_CONFIG_DIR" in os.environ:  # one set already wins over the default
        environment["YOLO_CONFIG_DIR"] = os.environ["YOLO_CONFIG_DIR"]
    os.environ.update(environment)
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)

    import matplotlib  # a dependency of ultralytics; ships DejaVuSans, which covers the glyphs we need

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONTS:
        if not (font_dir / name).is_file():
            shutil.copyfile(dejavu, font_dir / name)

    from ultralytics import settings

    if settings.get("sync", True):
        settings.update({"sync": False})  # no analytics/crash reports sent
    return font_dir
