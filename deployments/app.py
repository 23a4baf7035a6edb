"""The builder that serve_config.yaml imports: Recognizer → (Detector, Classifier), as in the diagram.

Resources come from the config's `args`, GPU fractions included: with `accelerator: auto` they apply when
the cluster has GPUs, and every deployment runs on CPU otherwise, so one file serves both kinds of node.
"""

from __future__ import annotations

import logging
from typing import Literal

import ray
from pydantic import BaseModel
from ray.serve import Application

from deployments.classifier import Classifier
from deployments.detector import Detector
from deployments.recognizer import Recognizer
from pipeline.model_label import DEFAULT_MODEL_DIR, load_model_label

logger = logging.getLogger("ray.serve")


class AppArgs(BaseModel):
    """`args` of the application in serve_config.yaml."""

    model_dir: str | None = None  # absolute, or relative to the repository root; None: MODEL_LABEL_DIR or model_label/
    accelerator: Literal["auto", "gpu", "cpu"] = "auto"
    recognizer_num_cpus: float = 0.25
    detector_num_cpus: float = 0.5
    detector_num_gpus: float = 0.25
    classifier_num_cpus: float = 0.5
    classifier_num_gpus: float = 0.25


def build_app(args: dict) -> Application:
    config = AppArgs(**args)
    model_dir = str(DEFAULT_MODEL_DIR.parent / config.model_dir) if config.model_dir else None
    load_model_label(model_dir)  # fail here, with the reason, rather than in three replicas
    if config.accelerator == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    else:
        use_gpu = config.accelerator == "gpu"
    logger.info("Serving in %s mode", "GPU" if use_gpu else "CPU-only")

    def resources(num_cpus: float, num_gpus: float = 0.0) -> dict:
        return {"ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus if use_gpu else 0}}

    detector = Detector.options(**resources(config.detector_num_cpus, config.detector_num_gpus)).bind(model_dir)
    classifier = Classifier.options(**resources(config.classifier_num_cpus, config.classifier_num_gpus)).bind(model_dir)
    return Recognizer.options(**resources(config.recognizer_num_cpus)).bind(detector, classifier, model_dir)
