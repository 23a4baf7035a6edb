"""The builder that serve_config.yaml imports: Recognizer → (Detector, Classifier), as in the diagram.

Resources come from the config's `args`, GPU fractions included: with `accelerator: auto` they apply when
the cluster has GPUs, and every deployment runs on CPU otherwise, so one file serves both kinds of node.
The args (AppArgs, in deployments/placement.py: Ray-free, so the load tests' report uses it too) also
declare the node the file is sized for (`node_cpus`, `node_gpus`): every deployment at its `max_replicas`
must fit there (placement.py does the arithmetic; tests/test_serve_config.py holds serve_config.yaml to it),
and build_app logs a WARNING when the deployed maxima cannot all be placed on the cluster it runs on, since
the replicas past what fits would sit PENDING while the autoscaler wants them.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.serve import Application

from deployments.classifier import Classifier
from deployments.detector import Detector
from deployments.placement import AppArgs, Placement, app_placement
from deployments.recognizer import Recognizer
from pipeline.core.model_label import DEFAULT_MODEL_DIR, load_model_label

logger = logging.getLogger("ray.serve")

__all__ = ["AppArgs", "app_placement", "build_app", "check_placement"]

IMPORT_PATH = "deployments.app:build_app"


def deployed_application(args: dict) -> dict | None:
    """The `applications` entry being deployed with these args, as Serve's controller holds it (its checkpoint
    of the config that `serve run`/`serve deploy` sent): only there are the deployments' max_replicas, which
    Serve applies over what build_app returns. None when the app is built another way (serve.run of the
    built app, where every deployment keeps its 1 replica). Raises when the controller does not answer."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    configs: dict[str, Any] = ray.get(controller.get_app_configs.remote(), timeout=10)  # type: ignore[assignment]  # an actor call Ray cannot type
    for config in configs.values():
        application = config.model_dump(exclude_unset=True) if hasattr(config, "model_dump") else dict(config)
        if application.get("import_path") == IMPORT_PATH and (application.get("args") or {}) == args:
            return application
    return None


def check_placement(args: dict, use_gpu: bool) -> Placement | None:
    """Logs whether the deployed maxima fit this cluster (a WARNING when they cannot), and whether they fit
    the node the config declares; returns the cluster's Placement (None when the check could not run)."""
    try:
        application = deployed_application(args) or {"args": args, "deployments": []}
    except Exception as error:  # noqa: BLE001 - a check that cannot run must not stop the deployment
        logger.info("Replica maxima not checked: Serve's controller did not give the deployed config (%s)", error)
        return None
    cluster = ray.cluster_resources()
    placement = app_placement(application, use_gpu=use_gpu, where="this cluster, all nodes together",
                              capacity={"CPU": cluster.get("CPU", 0.0), "GPU": cluster.get("GPU", 0.0)})
    if placement.fits:
        logger.info("Replica maxima fit: %s", placement.arithmetic())
    else:
        logger.warning(
            "Replica maxima cannot all be placed: %s. %s. Replicas past what fits stay PENDING while the "
            "autoscaler wants them; lower max_replicas or the CPU/GPU shares (serve_config.yaml's comments give "
            "the arithmetic), or add nodes.", placement.arithmetic(), "; ".join(placement.problems()))
    if AppArgs(**args).node_cpus is not None:
        declared = app_placement(application, use_gpu=use_gpu)
        if not declared.fits:
            logger.warning("Replica maxima exceed the node the config declares: %s", declared.arithmetic())
    return placement


def build_app(args: dict) -> Application:
    config = AppArgs(**args)
    model_dir = str(DEFAULT_MODEL_DIR.parent / config.model_dir) if config.model_dir else None
    load_model_label(model_dir)  # fail here, with the reason, rather than in three replicas
    if config.accelerator == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    else:
        use_gpu = config.accelerator == "gpu"
    logger.info("Serving in %s mode", "GPU" if use_gpu else "CPU-only")
    check_placement(args, use_gpu)

    shares = config.replica_resources(use_gpu)

    def resources(name: str) -> dict:
        return {"ray_actor_options": {"num_cpus": shares[name]["CPU"], "num_gpus": shares[name]["GPU"]}}

    # @serve.deployment made these Deployments; mypy sees the classes (Ray's decorator typing).
    detector = Detector.options(**resources("Detector")).bind(model_dir)  # type: ignore[attr-defined]
    classifier = Classifier.options(**resources("Classifier")).bind(model_dir)  # type: ignore[attr-defined]
    return Recognizer.options(**resources("Recognizer")).bind(detector, classifier, model_dir)  # type: ignore[attr-defined]
