"""The settings family: serve_config.yaml's user_config through one loader, for startup, reconfigure() and
evaluation alike."""

from __future__ import annotations

import copy

import pytest

from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.settings import (
    ClassifierSettings,
    DetectorSettings,
    RecognizerSettings,
    SettingsError,
    deployment_config,
    read_serve_config,
    serving_settings,
)


def test_serving_settings_are_read_from_serve_config():
    settings = serving_settings(SERVE_CONFIG)
    assert settings.recognizer == RecognizerSettings(detector_image_max_side=640, decode_min_side=1000, crop_margin=0.2, top_k=5)
    assert settings.recognizer.unknown_threshold is None  # the manifest's calibrated threshold is used
    assert settings.detector.iou_threshold == 0.5 and settings.detector.max_detections == 10 and settings.detector.max_batch_size == 8
    assert settings.classifier == ClassifierSettings(max_batch_size=16, batch_wait_timeout_s=0.05)


def test_a_key_no_setting_has_is_refused_in_the_file_as_in_reconfigure(tmp_path):
    config = copy.deepcopy(read_serve_config())
    deployment_config(config, "Classifier")["user_config"]["top_k"] = 3  # moved to the Recognizer: the answer is made there
    path = tmp_path / "serve_config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SettingsError, match="ClassifierSettings has no setting 'top_k'"):
        serving_settings(path)
    with pytest.raises(SettingsError, match="'crop_margn'.*crop_margin"):
        RecognizerSettings.from_config({"crop_margn": 0.1})


@pytest.mark.parametrize("kind, fields, message", [
    (RecognizerSettings, {"detector_input_size": 100}, "multiple of 32"),
    (RecognizerSettings, {"detector_image_max_side": 640, "decode_min_side": 320}, "decode_min_side"),
    (RecognizerSettings, {"crop_margin": 1.5}, "crop_margin"),
    (RecognizerSettings, {"top_k": 0}, "top_k"),
    (RecognizerSettings, {"unknown_threshold": 1.5}, "unknown_threshold"),
    (RecognizerSettings, {"catalog_threshold": 25.0}, "catalog_threshold"),
    (DetectorSettings, {"max_detections": 0}, "max_detections"),
    (DetectorSettings, {"confidence_threshold": 1.5}, "confidence_threshold"),
    (DetectorSettings, {"iou_threshold": 0}, "iou_threshold"),
    (DetectorSettings, {"max_batch_size": 0}, "max_batch_size"),
    (ClassifierSettings, {"batch_wait_timeout_s": -0.1}, "batch_wait_timeout_s"),
])
def test_settings_refuse_values_the_models_cannot_use(kind, fields, message):
    with pytest.raises(SettingsError, match=message):
        kind.from_config(fields)


def test_defaults_and_empty_configs():
    assert RecognizerSettings.from_config(None) == RecognizerSettings()
    assert DetectorSettings.from_config({}).max_batch_size == 8 and ClassifierSettings.from_config({}).max_batch_size == 16
    assert DetectorSettings.from_config({"max_batch_size": 4}).max_detections == DetectorSettings().max_detections


def test_a_live_catalog_threshold_is_in_the_unit_of_the_manifests_policy():
    """A log-odds for the calibrated policy; a cosine (or a difference of two) for the others: the loop refuses 2.5
    for those, as the rule itself would."""
    from pipeline.core.catalog.rule import CatalogRule
    from pipeline.core.photo_to_answer import ModelFacts, PhotoToAnswer

    settings = RecognizerSettings.from_config({"catalog_threshold": 2.5})
    calibrated = ModelFacts(["a"], 224, 320, catalog_rule=CatalogRule("calibrated", 2.0, (0.0, 1.0, -1.0, 0.0)))
    assert PhotoToAnswer(calibrated, settings).catalog_rule == CatalogRule("calibrated", 2.5, (0.0, 1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="in \\[-2, 2\\]"):
        PhotoToAnswer(ModelFacts(["a"], 224, 320, catalog_rule=CatalogRule("beats_training", 0.07)), settings)
