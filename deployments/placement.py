"""Can every deployment's `max_replicas` be placed at once? The resource arithmetic of a serve config, in one
place: tests/test_serve_config.py holds serve_config.yaml to the node it declares, and the command checks a
config against the node it declares and, with --cluster, against the running Ray cluster (through Ray's public
API), before or after `serve deploy`:

    python -m deployments.placement [serve_config.yaml] [--cluster]

The sum over deployments of max_replicas × the replica's CPU (and GPU) share must fit the node(s): Ray places a
replica only where its whole share is free, and a replica that does not fit stays PENDING while the autoscaler
goes on wanting it, so the deployment never grows past what fits, whatever its `max_replicas` says. Serve's
own controller and proxy reserve no CPU (num_cpus 0), so the deployments' shares are the whole demand.
No Ray import (plain arithmetic over config dicts), so the load tests' report uses it too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from pipeline.core.model_label import AUTO_RUNTIME, unknown_runtime
from pipeline.core.unknown_keys import unknown_keys

RESOURCES = ("CPU", "GPU")
UNIT = 1e-4
"""Ray accounts CPU and GPU shares in units of 1/10000; sums are compared at that precision."""

AUTO_MAX_REPLICAS = 100
"""Serve's max_replicas for `num_replicas: auto` when the autoscaling_config does not set one."""


def max_replicas(deployment: dict) -> int:
    """The most replicas a deployment entry of a serve config can have: its autoscaling_config's max_replicas
    (Serve's default 1), else its fixed num_replicas (default 1; `auto`: Serve's default autoscaling maximum)."""
    autoscaling = deployment.get("autoscaling_config")
    num_replicas = deployment.get("num_replicas")
    if num_replicas == "auto":
        return int((autoscaling or {}).get("max_replicas", AUTO_MAX_REPLICAS))
    if autoscaling:
        return int(autoscaling.get("max_replicas", 1))
    return int(num_replicas if num_replicas is not None else 1)


def _round(value: float) -> float:
    return round(value / UNIT) * UNIT


def _number(value: float) -> str:
    return f"{_round(value):g}"


@dataclass(frozen=True)
class Placement:
    """Each deployment's per-replica share and maximum against a capacity ({"CPU": n, "GPU": m})."""

    per_replica: dict[str, dict[str, float]]  # deployment -> {"CPU": share, "GPU": share}
    max_replicas: dict[str, int]
    capacity: dict[str, float]
    where: str  # what the capacity is: "the declared node", "this cluster"

    def demand(self, resource: str) -> float:
        return _round(sum(n * self.per_replica[name].get(resource, 0.0) for name, n in self.max_replicas.items()))

    @property
    def over(self) -> dict[str, tuple[float, float]]:
        """Resources whose demand at every maximum exceeds the capacity: {resource: (demand, capacity)}."""
        out = {}
        for resource in RESOURCES:
            need, have = self.demand(resource), _round(self.capacity.get(resource, 0.0))
            if need > have + UNIT / 2:
                out[resource] = (need, have)
        return out

    @property
    def fits(self) -> bool:
        return not self.over

    def room_for(self, name: str, resource: str = "CPU") -> float:
        """Replicas of `name` that fit in what is left of `resource` with the others at their maxima (inf if it
        takes none of it): less than its max_replicas means its last replicas stay pending."""
        share = self.per_replica[name].get(resource, 0.0)
        if share <= 0:
            return math.inf
        others = self.demand(resource) - self.max_replicas[name] * share
        return math.floor((_round(self.capacity.get(resource, 0.0)) - others + UNIT / 2) / share)

    def arithmetic(self) -> str:
        """One line per resource any deployment asks for, e.g.
        `CPU: Recognizer 2 × 0.2 + Detector 2 × 0.4 + Classifier 2 × 0.4 = 2 ≤ 2 (the declared node)`."""
        lines = []
        for resource in RESOURCES:
            terms = [(name, n, self.per_replica[name].get(resource, 0.0)) for name, n in self.max_replicas.items()]
            if not any(share for _, _, share in terms):
                continue
            need, have = self.demand(resource), _round(self.capacity.get(resource, 0.0))
            sign = "≤" if resource not in self.over else ">"
            sum_text = " + ".join(f"{name} {n} × {_number(share)}" for name, n, share in terms if share)
            lines.append(f"{resource}: {sum_text} = {_number(need)} {sign} {_number(have)} ({self.where})")
        return "; ".join(lines) or "no CPU or GPU asked for"

    def problems(self) -> list[str]:
        """What does not fit, and which deployments cannot reach their max_replicas because of it."""
        out = []
        for resource, (need, have) in self.over.items():
            short = [f"{name} {max(0, self.room_for(name, resource))} of {self.max_replicas[name]}"
                     for name in self.max_replicas if self.room_for(name, resource) < self.max_replicas[name]]
            out.append(f"{resource}: the maxima need {_number(need)}, {self.where} has {_number(have)}; replicas "
                       f"that fit with every other deployment at its maximum: {', '.join(short)}")
        return out


class AppArgs(BaseModel):
    """`args` of the application in serve_config.yaml: build_app's typed argument (Serve validates the config's
    `args` into it before the builder runs). A key it lacks is refused with the ones it could have meant."""

    model_dir: str | None = None  # absolute, or relative to the repository root; None: MODEL_LABEL_DIR or model_label/
    accelerator: Literal["auto", "gpu", "cpu"] = "auto"
    # auto, or a runtime of pipeline.core.model_label.RUNTIMES (the one list of their names); auto: the manifest's
    # fastest that met the accuracy bar on CPU, the framework's on GPU
    classifier_runtime: str = AUTO_RUNTIME
    detector_runtime: str = AUTO_RUNTIME
    recognizer_num_cpus: float = 0.2
    detector_num_cpus: float = 0.4
    detector_num_gpus: float = 0.25
    classifier_num_cpus: float = 0.4
    classifier_num_gpus: float = 0.25
    catalog_dir: str | None = "catalog_data"  # the catalog's folder (absolute, or relative to the repository root;
    # git ignores catalog_data/); None: no catalog. On a cluster, a volume of the node the Catalog runs on
    catalog_node_resource: str | None = None  # a custom resource only the catalog volume's node has (docs/cluster.md)
    node_cpus: float | None = None  # the node the file is sized for: its CPUs (Ray's logical CPUs); None: undeclared
    node_gpus: float = 0  # and its GPUs, when it has them (CPU-only nodes run with no GPU shares at all)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, args: Any) -> Any:
        unknown = unknown_keys(cls.__name__, "argument", args, cls.model_fields) if isinstance(args, dict) else None
        if unknown:
            raise ValueError(unknown)
        return args

    @field_validator("classifier_runtime", "detector_runtime")
    @classmethod
    def _known_runtime(cls, runtime: str, info: ValidationInfo) -> str:
        unknown = unknown_runtime((info.field_name or "").removesuffix("_runtime"), runtime)
        if unknown:
            raise ValueError(unknown)
        return runtime

    def replica_resources(self, use_gpu: bool) -> dict[str, dict[str, float]]:
        """Per-replica {"CPU": share, "GPU": share} of each deployment, as build_app asks Ray for them."""
        gpu = (lambda share: share) if use_gpu else (lambda share: 0.0)
        return {
            "Recognizer": {"CPU": self.recognizer_num_cpus, "GPU": 0.0},
            "Detector": {"CPU": self.detector_num_cpus, "GPU": gpu(self.detector_num_gpus)},
            "Classifier": {"CPU": self.classifier_num_cpus, "GPU": gpu(self.classifier_num_gpus)},
        }

    def declared_node(self, use_gpu: bool) -> dict[str, float] | None:
        if self.node_cpus is None:
            return None
        return {"CPU": self.node_cpus, "GPU": self.node_gpus if use_gpu else 0.0}


def app_placement(application: dict, *, use_gpu: bool, capacity: dict[str, float] | None = None,
                  where: str = "this cluster") -> Placement:
    """Every deployment of `application` (one `applications` entry of a serve config: its args, deployments)
    at its max_replicas against `capacity`, or, when None, against the node its args declare.

    A deployment entry's own `ray_actor_options` num_cpus/num_gpus win over the args, as they do in Serve."""
    config = AppArgs(**(application.get("args") or {}))
    per_replica = config.replica_resources(use_gpu)
    entries = {entry["name"]: entry for entry in application.get("deployments") or []}
    for name, shares in per_replica.items():
        options = entries.get(name, {}).get("ray_actor_options") or {}
        if options.get("num_cpus") is not None:
            shares["CPU"] = float(options["num_cpus"])
        if options.get("num_gpus") is not None:
            shares["GPU"] = float(options["num_gpus"])
    if capacity is None:
        capacity = config.declared_node(use_gpu)
        if capacity is None:
            raise ValueError("the application's args declare no node (node_cpus, node_gpus) to check against")
        where = f"the declared node, {config.node_cpus:g} CPU" + (f" + {config.node_gpus:g} GPU" if use_gpu else "")
    maxima = {name: max_replicas(entries.get(name, {})) for name in per_replica}
    return Placement(per_replica, maxima, capacity, where)


def check(application: dict, use_gpu: bool, capacity: dict[str, float] | None = None, where: str = "this cluster") -> Placement:
    """Prints whether the maxima fit (`capacity` None: the declared node) and what to change when they do not."""
    placement = app_placement(application, use_gpu=use_gpu, capacity=capacity, where=where)
    if placement.fits:
        print(f"Replica maxima fit: {placement.arithmetic()}")
    else:
        print(f"Replica maxima cannot all be placed: {placement.arithmetic()}. {'; '.join(placement.problems())}. "
              "Replicas past what fits stay PENDING while the autoscaler wants them; lower max_replicas or the "
              "CPU/GPU shares (serve_config.yaml's comments give the arithmetic), or add nodes.")
    return placement


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.core.paths import SERVE_CONFIG
    from pipeline.core.settings import read_serve_config

    parser = argparse.ArgumentParser(prog="python -m deployments.placement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(SERVE_CONFIG))
    parser.add_argument("--cluster", action="store_true", help="also check against the running Ray cluster (address auto)")
    parser.add_argument("--gpu", action="store_true", help="with no --cluster: check the GPU shares (default: CPU node)")
    args = parser.parse_args(argv)
    application = read_serve_config(args.config)["applications"][0]
    capacity, use_gpu = None, args.gpu
    if args.cluster:
        import ray

        ray.init(address="auto", logging_level=logging.ERROR)
        resources = ray.cluster_resources()
        capacity = {"CPU": resources.get("CPU", 0.0), "GPU": resources.get("GPU", 0.0)}
        use_gpu = capacity["GPU"] > 0 if AppArgs(**(application.get("args") or {})).accelerator == "auto" else use_gpu
    fits = [check(application, use_gpu).fits] if application.get("args", {}).get("node_cpus") is not None else []
    if capacity is not None:
        fits.append(check(application, use_gpu, capacity, "this cluster, all nodes together").fits)
    return 0 if all(fits) else 1


if __name__ == "__main__":
    raise SystemExit(main())
