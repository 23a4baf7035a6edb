"""The settings family: what serve_config.yaml's `user_config` says to each deployment, read by one loader.

The same `from_config` turns a `user_config` into settings at startup, in `reconfigure()` and for evaluation and
benchmarks, so a key serve_config.yaml misspells is refused everywhere with the keys it could have meant, never
dropped in one place and refused in another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.preprocessing import DECODE_MIN_SIDE
from pipeline.core.unknown_keys import unknown_keys


class SettingsError(ValueError):
    """A user_config that names an unknown key or holds a value out of range."""


@dataclass(frozen=True)
class Settings:
    """Base of every deployment's settings: frozen, validated in __post_init__, built by from_config."""

    @classmethod
    def from_config(cls, user_config: Mapping[str, Any] | None) -> Self:
        """Settings from a deployment's user_config (None or {}: the defaults); an unknown key is an error that
        names the keys it could have meant."""
        user_config = dict(user_config or {})
        unknown = unknown_keys(cls.__name__, "setting", user_config, (field.name for field in dataclasses.fields(cls)))
        if unknown:
            raise SettingsError(unknown)
        try:
            return cls(**user_config)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{cls.__name__}: {error}") from None


@dataclass(frozen=True)
class BatchSettings(Settings):
    """How a model deployment's `@serve.batch` forms batches (applied live by reconfigure())."""

    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@dataclass(frozen=True)
class DetectorSettings(BatchSettings):
    """The Detector: how it is asked (thresholds, the most boxes per photo), batching and precision."""

    max_batch_size: int = 8
    confidence_threshold: float = 0.25
    iou_threshold: float = 0.5
    max_detections: int = 10
    fp16_on_gpu: bool = True  # half precision when the replica has a CUDA device (ignored on CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.confidence_threshold <= 1 and 0 < self.iou_threshold <= 1):
            raise ValueError("confidence_threshold must be in [0, 1] and iou_threshold in (0, 1]")
        if self.max_detections < 1:
            raise ValueError("max_detections must be >= 1")


@dataclass(frozen=True)
class ClassifierSettings(BatchSettings):
    """The Classifier: batching of crops."""


@dataclass(frozen=True)
class RecognizerSettings(Settings):
    """The ingress: how an upload becomes the detector's image, boxes become crops and probabilities an answer."""

    detector_image_max_side: int = 640  # the photo is shrunk to this, then letterboxed to the detector's input
    detector_input_size: int | None = None  # the letterbox side; None: the size the detector was trained at
    decode_min_side: int = DECODE_MIN_SIDE  # JPEGs decode at reduced size while the long side stays this long
    crop_margin: float = 0.2  # each side of a box grows by this share of its size before the crop: context
    top_k: int = 5  # candidates per product
    unknown_threshold: float | None = None  # top-1 probability under this: "unknown"; None: the manifest's calibrated one
    catalog_threshold: float | None = None  # the catalog rule's threshold (pipeline.core.catalog.rule); None: the manifest's
    gather_max_photos: int = 4  # the ingress sends the photos of up to this many requests to a model in one call
    gather_wait_s: float = 0.0  # ... that arrive within this long of the first (0: a call per request, at once;
    #   merged only with calls already waiting). Measured slower when > 0 here: BENCHMARKS.md, 2026-12-07 (later)

    def __post_init__(self) -> None:
        if self.detector_image_max_side < 32 or self.decode_min_side < self.detector_image_max_side:
            raise ValueError("detector_image_max_side must be >= 32 and decode_min_side >= detector_image_max_side")
        if self.detector_input_size is not None and (self.detector_input_size < 32 or self.detector_input_size % 32):
            raise ValueError("detector_input_size must be a multiple of 32 (the model's stride), at least 32")
        if not 0 <= self.crop_margin <= 1:
            raise ValueError("crop_margin must be in [0, 1]")
        if self.top_k < 1 or not (self.unknown_threshold is None or 0 <= self.unknown_threshold <= 1):
            raise ValueError("top_k must be >= 1 and unknown_threshold in [0, 1] (or null: the manifest's)")
        if self.gather_max_photos < 1 or not 0 <= self.gather_wait_s <= 1:
            raise ValueError("gather_max_photos must be >= 1 and gather_wait_s in [0, 1] seconds")
        if self.catalog_threshold is not None and not -20 <= self.catalog_threshold <= 20:
            raise ValueError("catalog_threshold is a cosine similarity, a difference of two, or for the calibrated policy a "
                             "log-odds: in [-20, 20] (or null: the manifest's)")


@dataclass(frozen=True)
class ServingSettings:
    """Every deployment's settings as serve_config.yaml has them (evaluation and benchmarks reuse them)."""

    recognizer: RecognizerSettings
    detector: DetectorSettings
    classifier: ClassifierSettings


def read_serve_config(path: Path | str = SERVE_CONFIG) -> dict:
    """serve_config.yaml as a dict: the one reader of the file (serving settings, tests, load tests)."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def deployment_config(config: dict, name: str) -> dict:
    """The `deployments` entry called `name` of a serve config's (only) application."""
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def serving_settings(path: Path | str = SERVE_CONFIG) -> ServingSettings:
    """The settings of serve_config.yaml (the one place they are written down), through each deployment's loader."""
    config = read_serve_config(path)

    def user_config(name: str) -> dict | None:
        return deployment_config(config, name).get("user_config")

    return ServingSettings(recognizer=RecognizerSettings.from_config(user_config("Recognizer")),
                           detector=DetectorSettings.from_config(user_config("Detector")),
                           classifier=ClassifierSettings.from_config(user_config("Classifier")))
