"""serve_config.yaml's resource arithmetic: every deployment at its max_replicas fits the node the file declares
(args node_cpus/node_gpus), on CPU and in GPU mode, so the autoscaler never wants a replica that cannot be
placed. No Ray cluster: the arithmetic of deployments/placement.py, which `python -m deployments.placement` runs.
(deploy/rayservice.yaml deploys this very file: tests/test_deploy_files.py.)"""

import copy

import pytest
import yaml

from deployments.placement import AppArgs, Placement, app_placement, max_replicas
from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.settings import read_serve_config


def application(config: dict | None = None) -> dict:
    return (config or read_serve_config())["applications"][0]


def deployment(app: dict, name: str) -> dict:
    return next(d for d in app["deployments"] if d["name"] == name)


@pytest.mark.parametrize("use_gpu", [False, True], ids=["cpu-node", "gpu-node"])
def test_shipped_maxima_fit_the_node_it_declares(use_gpu):
    app = application()
    args = AppArgs(**app["args"])
    assert args.node_cpus is not None, "serve_config.yaml must declare the node it is sized for (args.node_cpus)"
    placement = app_placement(app, use_gpu=use_gpu)
    assert placement.fits, placement.problems()
    if use_gpu:
        assert args.node_gpus >= 1 and "GPU:" in placement.arithmetic()


def test_the_models_can_double_on_the_two_cpu_node():
    """Under a peak it is the models that must be able to grow: each reaches 2 replicas with the others at
    their maxima, and no more of the node goes to the ingress than to a model."""
    app = application()
    placement = app_placement(app, use_gpu=False)
    assert placement.capacity["CPU"] == 2
    for name in ("Detector", "Classifier"):
        assert placement.max_replicas[name] >= 2
        assert placement.room_for(name) >= placement.max_replicas[name]
    ingress = placement.max_replicas["Recognizer"] * placement.per_replica["Recognizer"]["CPU"]
    assert all(ingress <= placement.max_replicas[m] * placement.per_replica[m]["CPU"] for m in ("Detector", "Classifier"))


def test_the_comments_give_the_same_arithmetic():

    text = open(SERVE_CONFIG, encoding="utf-8").read()
    app = application()
    placement = app_placement(app, use_gpu=False)
    shares = {name: placement.per_replica[name]["CPU"] for name in placement.max_replicas}
    line = " + ".join(f"{name} {placement.max_replicas[name]} x {shares[name]:g}" for name in placement.max_replicas)
    assert f"CPU: {line} = " in text, "serve_config.yaml's comment no longer matches its shares and maxima"


def test_an_over_budget_config_is_reported():
    """The issue's config: 4 ingress replicas x 0.25 + 2 x 0.5 per model = 3 CPU on a 2-CPU node."""
    config = copy.deepcopy(read_serve_config())
    app = application(config)
    app["args"] |= {"recognizer_num_cpus": 0.25, "detector_num_cpus": 0.5, "classifier_num_cpus": 0.5}
    deployment(app, "Recognizer")["autoscaling_config"]["max_replicas"] = 4
    placement = app_placement(app, use_gpu=False)
    assert not placement.fits and set(placement.over) == {"CPU"}
    assert placement.over["CPU"] == (3.0, 2.0)
    assert "= 3 > 2" in placement.arithmetic()
    problems = " ".join(placement.problems())
    # with the other two at their maxima, none has room left for even one replica of its own
    assert "Recognizer 0 of 4, Detector 0 of 2, Classifier 0 of 2" in problems

    gpu = copy.deepcopy(read_serve_config())
    application(gpu)["args"] |= {"detector_num_gpus": 0.5, "classifier_num_gpus": 0.5}  # 2 x 0.5 + 2 x 0.5 = 2 GPUs
    assert app_placement(application(gpu), use_gpu=False).fits  # CPU-only: no GPU asked for
    over = app_placement(application(gpu), use_gpu=True)
    assert set(over.over) == {"GPU"} and over.over["GPU"] == (2.0, 1.0)


def test_a_deployments_own_ray_actor_options_and_fixed_replicas_count():
    config = copy.deepcopy(read_serve_config())
    app = application(config)
    deployment(app, "Classifier")["ray_actor_options"] = {"num_cpus": 1}  # wins over the args, as in Serve
    assert app_placement(app, use_gpu=False).over["CPU"] == (3.2, 2.0)  # 0.4 + 0.8 + 2 x 1
    assert max_replicas({"num_replicas": 3}) == 3 and max_replicas({}) == 1
    assert max_replicas({"num_replicas": "auto", "autoscaling_config": {"max_replicas": 5}}) == 5
    assert max_replicas({"autoscaling_config": {"min_replicas": 1}}) == 1  # Serve's default max_replicas


def test_against_a_cluster_and_undeclared_node():
    app = application()
    on_one_cpu = app_placement(app, use_gpu=False, capacity={"CPU": 1.0, "GPU": 0.0}, where="this cluster")
    assert not on_one_cpu.fits and "this cluster" in on_one_cpu.problems()[0]
    undeclared = copy.deepcopy(app)
    del undeclared["args"]["node_cpus"]
    with pytest.raises(ValueError, match="declare no node"):
        app_placement(undeclared, use_gpu=False)
    # sums compare at Ray's 1/10000 precision: 5 x 0.4 is 2, not 2.0000000000000004 > 2
    assert Placement({"A": {"CPU": 0.4}}, {"A": 5}, {"CPU": 2.0}, "node").fits


def test_the_placement_command_checks_a_config_file(tmp_path, capsys):
    """`python -m deployments.placement FILE`: exit 0 and the arithmetic when the maxima fit the declared node,
    1 and what to change when they do not (the check build_app made through Serve's private API before)."""
    from deployments.placement import main

    assert main([]) == 0 and "Replica maxima fit" in capsys.readouterr().out
    config = copy.deepcopy(read_serve_config())
    deployment(application(config), "Detector")["autoscaling_config"]["max_replicas"] = 4
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "cannot all be placed" in out and "Detector 4 × 0.4" in out and "lower max_replicas" in out
