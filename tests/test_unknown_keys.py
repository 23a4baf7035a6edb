"""pipeline/core/unknown_keys.py: a configuration name nobody knows is refused with the ones it could have meant, in
serve_config.yaml's user_config (pipeline.core.settings), its application args (deployments.placement.AppArgs,
build_app's typed argument) and their runtime names (pipeline.core.model_label.RUNTIMES)."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from deployments.app import build_app
from deployments.placement import AppArgs
from pipeline.core.model_label import AUTO_RUNTIME, RUNTIMES
from pipeline.core.settings import ClassifierSettings, RecognizerSettings, SettingsError, read_serve_config
from pipeline.core.unknown_keys import unknown_keys


def test_an_unknown_key_is_told_its_close_ones_else_every_known_one():
    known = ["crop_margin", "top_k", "decode_min_side"]
    assert unknown_keys("S", "setting", ["crop_margn", "top_k"], known) == "S has no setting 'crop_margn'; did you mean 'crop_margin'?"
    told = "S has no setting 'colour'; known: ['crop_margin', 'decode_min_side', 'top_k']"
    assert unknown_keys("S", "setting", ["colour"], known) == told
    assert unknown_keys("S", "setting", {"top_k": 1}, known) is None


def test_settings_name_the_key_meant_rather_than_list_them_all():
    with pytest.raises(SettingsError) as raised:
        RecognizerSettings.from_config({"crop_margn": 0.1})
    assert str(raised.value) == "RecognizerSettings has no setting 'crop_margn'; did you mean 'crop_margin'?"
    with pytest.raises(SettingsError, match=r"ClassifierSettings has no setting 'top_k'; known: \['batch_wait_timeout_s'"):
        ClassifierSettings.from_config({"top_k": 3})


def test_app_args_refuse_an_unknown_key_with_the_one_meant():
    with pytest.raises(ValidationError, match="AppArgs has no argument 'clasifier_runtime'; did you mean 'classifier_runtime'?"):
        AppArgs.model_validate({"clasifier_runtime": "tflite"})
    assert AppArgs.model_validate(read_serve_config()["applications"][0]["args"]).catalog_dir == "catalog_data"


@pytest.mark.parametrize("part", sorted(RUNTIMES))
def test_app_args_take_the_runtime_names_of_model_label(part):
    for runtime in (AUTO_RUNTIME, *RUNTIMES[part]):
        assert getattr(AppArgs.model_validate({f"{part}_runtime": runtime}), f"{part}_runtime") == runtime
    with pytest.raises(ValidationError, match=f"unknown {part} runtime '{RUNTIMES[part][-1]}x'; did you mean"):
        AppArgs.model_validate({f"{part}_runtime": f"{RUNTIMES[part][-1]}x"})


def test_build_app_is_typed_so_serve_validates_the_args_into_app_args():
    """Serve converts the config's args into the builder's pydantic annotation only when it is the class itself
    (ray.serve's typed application builders): a string annotation would hand build_app a plain dict."""
    (parameter,) = inspect.signature(build_app).parameters.values()
    assert parameter.annotation is AppArgs
