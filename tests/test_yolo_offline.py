"""The YOLO_* environment: pipeline/core/yolo_offline.py's offline_environment is Python's one statement of it; the
Makefile and serve_config.yaml's runtime_env set it before any Python runs and must say the same. (That ultralytics
then stays offline: tests/test_pipeline_detector.py.)"""

from __future__ import annotations

import re

from pipeline.core.paths import REPO_ROOT, YOLO_CONFIG_DIR
from pipeline.core.settings import read_serve_config
from pipeline.core.yolo_offline import offline_environment


def test_the_offline_environment_keeps_ultralytics_off_the_network_with_its_settings_in_the_repository():
    assert offline_environment() == {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(YOLO_CONFIG_DIR)}
    assert offline_environment("/elsewhere")["YOLO_CONFIG_DIR"] == "/elsewhere"


def test_the_makefile_and_serve_config_set_the_same_values():
    environment = offline_environment()
    makefile = dict(re.findall(r"^export (YOLO_\w+) := (\S+)$", (REPO_ROOT / "Makefile").read_text(), flags=re.M))
    assert makefile == environment | {"YOLO_CONFIG_DIR": "$(CURDIR)/.yolo"}
    workers = read_serve_config()["applications"][0]["runtime_env"]["env_vars"]
    # no config dir for the workers: the Makefile's, else prepare_ultralytics' default
    assert {name: value for name, value in workers.items() if name.startswith("YOLO_")} == {
        name: environment[name] for name in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL")}
