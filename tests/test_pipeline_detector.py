"""The detector pipeline on tiny synthetic data: dataset view, offline setup, train → checkpoint → load → predict."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
from pathlib import Path

import numpy as np
import pytest
from synthetic_data import make_yolo_folder

from pipeline.core.paths import IMAGE_SUFFIXES, REPO_ROOT, SHARED_DATA
from pipeline.core.yolo_offline import prepare_ultralytics
from pipeline.data.held_back import is_validation
from pipeline.train import yolo_detector as detector
from pipeline.train.dataclass_cli import config_argv, config_from_args
from pipeline.train.yolo_detector import DetectorTrainConfig


@pytest.mark.models
def test_prepare_ultralytics_sets_offline_mode_and_font():
    font_dir = prepare_ultralytics()
    from ultralytics import settings
    from ultralytics.utils import is_online

    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"
    assert (font_dir / "Arial.ttf").stat().st_size > 10_000
    assert not is_online()
    assert settings["sync"] is False


def test_validation_split_is_fixed_by_name_and_seed():
    """Pinned to SHA-256 digests worked out outside Python (`printf '0:image3.jpg' | sha256sum`: below
    0x1999999999999999, so held back at 10%): a changed split would quietly move held-back photos into training."""
    names = [f"image{i}.jpg" for i in range(60)]
    assert [n for n in names if is_validation(n, 0.1, seed=0)] == [
        "image0.jpg", "image3.jpg", "image8.jpg", "image11.jpg", "image13.jpg", "image14.jpg",
        "image30.jpg", "image36.jpg", "image43.jpg", "image48.jpg", "image54.jpg", "image57.jpg",
    ]
    assert [n for n in names if is_validation(n, 0.1, seed=1)] == [
        "image4.jpg", "image19.jpg", "image20.jpg", "image31.jpg", "image32.jpg", "image33.jpg",
        "image43.jpg", "image45.jpg", "image52.jpg",
    ]
    many = [f"image{i}.jpg" for i in range(2000)]
    held = {n for n in many if is_validation(n, 0.1, seed=0)}
    assert 150 < len(held) < 250
    assert held < {n for n in many if is_validation(n, 0.2, seed=0)}  # a larger share only adds images


@pytest.mark.data
def test_split_of_the_real_photos_is_the_shipped_detectors():
    """Over the real Freiburg photos, the split gives the held-back count the shipped manifest recorded (the
    photos the service tests use as unseen by the detector)."""
    dataset = json.loads((REPO_ROOT / "model_label" / "manifest.json").read_text())["detector"]["training"]["dataset"]
    images = [p for p in (SHARED_DATA / Path(dataset["source"]).name / "images").rglob("*")
              if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        pytest.skip(f"the photos of {dataset['source']} are not beside this checkout")
    held = sum(is_validation(p.name, dataset["val_fraction"], dataset["split_seed"]) for p in images)
    assert {"train": len(images) - held, "val": held} == dataset["images"]


def test_train_options_are_the_config_fields():
    """`train`'s options are generated from DetectorTrainConfig: the command recorded in the shipped manifest
    parses to the settings recorded beside it, and any config is a command line that repeats it."""
    training = json.loads((REPO_ROOT / "model_label" / "manifest.json").read_text())["detector"]["training"]
    argv = shlex.split(training["command"])[len(["python", "-m", "pipeline.train.yolo_detector"]):]
    config = config_from_args(DetectorTrainConfig, detector._parser().parse_args(argv))
    assert {"command": "train", **dataclasses.asdict(config)} == training["args"]
    assert config_from_args(DetectorTrainConfig, detector._parser().parse_args(["train", *config_argv(config)])) == config
    assert config_from_args(DetectorTrainConfig, detector._parser().parse_args(["train", "--data", "d"])) == \
        DetectorTrainConfig(data="d")


def test_labels_become_one_class_and_bad_lines_are_named(tmp_path):
    assert detector.single_class_lines("17 0.5 0.5 0.2 0.2\n\n3 0.1 0.2 0.1 0.1\n", tmp_path) == [
        "0 0.5 0.5 0.2 0.2",
        "0 0.1 0.2 0.1 0.1",
    ]
    with pytest.raises(ValueError, match=r"x\.txt:1"):
        detector.single_class_lines("3 0.5 0.5 0.2\n", tmp_path / "x.txt")
    with pytest.raises(ValueError, match="normalised"):
        detector.single_class_lines("3 0.5 0.5 1.2 0.2\n", tmp_path / "x.txt")


def test_dataset_view_links_images_and_rewrites_labels(tmp_path):
    source = make_yolo_folder(tmp_path / "source", count=12)
    data_yaml = detector.build_dataset_view(source, tmp_path / "view", val_fraction=0.25, seed=0)
    data = json.loads(data_yaml.read_text())
    view = tmp_path / "view"
    assert data["names"] == {"0": "product"}
    assert data["images"]["train"] + data["images"]["val"] == 12 and data["images"]["val"] > 0
    images = sorted((view / "images").rglob("*.jpg"))
    assert len(images) == 12 and all(p.is_symlink() and p.resolve().is_relative_to(source) for p in images)
    labels = [line for p in (view / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    assert labels and all(line.startswith("0 ") for line in labels)
    # a data.yaml is used as given; an evaluation-only view puts everything in val
    assert detector.resolve_data(data_yaml, tmp_path / "other", 0.1, 0) == data_yaml
    all_val = json.loads(detector.build_dataset_view(source, tmp_path / "eval", val_fraction=1.0).read_text())
    assert all_val["images"] == {"train": 0, "val": 12} and all_val["train"] == "images/val"


def test_missing_images_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        detector.build_dataset_view(tmp_path, tmp_path / "view")


@pytest.mark.train
@pytest.mark.models
def test_train_writes_a_checkpoint_that_loads_and_predicts_offline(tmp_path, monkeypatch):
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)

    source = make_yolo_folder(tmp_path / "source", count=12)
    out = tmp_path / "run"
    detector.main(["train", "--data", str(source), "--out", str(out), "--imgsz", "64", "--epochs", "2",
                   "--batch", "4", "--workers", "0", "--val-fraction", "0.25"])

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["input_size"] == 64
    assert set(summary["val_metrics"]) == {"precision", "recall", "mAP50", "mAP50-95"}
    assert summary["dataset"]["images"]["train"] + summary["dataset"]["images"]["val"] == 12

    from ultralytics import YOLO

    model = YOLO(str(out / "best.pt"))
    assert model.names == {0: "product"}
    results = model.predict(np.zeros((64, 48, 3), np.uint8), imgsz=64, verbose=False)
    assert results[0].boxes.xyxy.shape[1] == 4
    assert attempts == []
