"""The builder that serve_config.yaml imports: Recognizer → (Detector, Classifier, Catalog → (Detector,
Classifier)), as in the diagram.

Resources come from the config's `args`, GPU fractions included: with `accelerator: auto` they apply when
the cluster has GPUs, and every deployment runs on CPU otherwise, so one file serves both kinds of node.
Whether every deployment at its `max_replicas` fits the node the file declares (or a running cluster) is
deployments/placement.py's arithmetic: `python -m deployments.placement [--cluster]`.
"""

# No `from __future__ import annotations` here: Serve reads build_app's annotation as a class (AppArgs, a pydantic
# model) to validate the config's `args` into it; a string annotation would hand the builder a plain dict.

import logging

import ray
from ray.serve import Application

from deployments.catalog.deployment import Catalog
from deployments.classifier import Classifier
from deployments.detector import Detector
from deployments.placement import AppArgs
from deployments.recognizer import Recognizer
from pipeline.core.model_label import DEFAULT_MODEL_DIR, load_model_label

logger = logging.getLogger("ray.serve")


def build_app(config: AppArgs) -> Application:
    """The application of serve_config.yaml, from its `args` as Serve validated them (Ray Serve's typed application
    builder: an unknown key or runtime is refused before anything is built, with the names it could have meant)."""
    model_dir = str(DEFAULT_MODEL_DIR.parent / config.model_dir) if config.model_dir else None
    bundle = load_model_label(model_dir)  # fail here, with the reason, rather than in three replicas
    if config.accelerator == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    else:
        use_gpu = config.accelerator == "gpu"
    # A runtime asked for that the folder lacks fails here, naming it; auto is resolved once, for every replica.
    classifier_runtime = bundle.resolve_runtime("classifier", config.classifier_runtime, use_gpu)
    detector_runtime = bundle.resolve_runtime("detector", config.detector_runtime, use_gpu)
    logger.info("Serving in %s mode: classifier runtime %s (asked: %s), detector runtime %s (asked: %s); replica maxima "
                "against this cluster: python -m deployments.placement --cluster", "GPU" if use_gpu else "CPU-only",
                classifier_runtime, config.classifier_runtime, detector_runtime, config.detector_runtime)

    shares = config.replica_resources(use_gpu)

    def resources(name: str) -> dict:
        return {"ray_actor_options": {"num_cpus": shares[name]["CPU"], "num_gpus": shares[name]["GPU"]}}

    # @serve.deployment made these Deployments; mypy sees the classes (Ray's decorator typing).
    detector = Detector.options(**resources("Detector")).bind(model_dir, detector_runtime)  # type: ignore[attr-defined]
    classifier = Classifier.options(**resources("Classifier")).bind(model_dir, classifier_runtime)  # type: ignore[attr-defined]
    catalog = None
    if config.catalog_dir:
        # One replica that writes SQLite and hands out snapshots, idle between writes (an enrollment's embedding
        # work is the Detector's and the Classifier's, within their shares): it reserves no CPU. It runs where
        # the catalog's volume is: a custom resource only that node declares (a cluster), else anywhere.
        placement = {}
        if config.catalog_node_resource and ray.cluster_resources().get(config.catalog_node_resource):
            placement = {config.catalog_node_resource: 0.01}
        elif config.catalog_node_resource:  # one machine (make serve): as it should be; a cluster: its volume is lost
            one_node = len([node for node in ray.nodes() if node.get("Alive")]) <= 1
            logger.log(logging.INFO if one_node else logging.WARNING,
                       "No node declares the resource %r: the Catalog may run on any node, and its folder %r must be "
                       "there (docs/cluster.md)", config.catalog_node_resource, config.catalog_dir)
        catalog = Catalog.options(ray_actor_options={"num_cpus": 0, "resources": placement}).bind(  # type: ignore[attr-defined]
            detector, classifier, model_dir, config.catalog_dir, classifier_runtime)
    return Recognizer.options(**resources("Recognizer")).bind(  # type: ignore[attr-defined]
        detector, classifier, model_dir, classifier_runtime, catalog)
