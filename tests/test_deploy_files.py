"""The deployment files in deploy/ agree with what make installs and serves: the Dockerfiles install the same
extras (the CPU image the default serving install, the GPU image the `frameworks` extra) with the same
constraints.txt as the Makefile, on Python 3.11 and the pinned Ray; the RayService serves serve_config.yaml itself,
from those images, with token auth and the catalog's volume. No Docker engine here: the files are read, not built."""

import re

import pytest
import yaml

from pipeline.core.paths import REPO_ROOT, SERVE_CONFIG

DEPLOY = REPO_ROOT / "deploy"
CPU_IMAGE, GPU_IMAGE = "product-recognition:0.1.0-cpu", "product-recognition:0.1.0-gpu"


def pinned(package: str) -> str:
    """The version constraints.txt pins `package` to."""
    match = re.search(rf"^{re.escape(package)}==(\S+)$", (REPO_ROOT / "constraints.txt").read_text(), flags=re.M | re.I)
    assert match, f"constraints.txt pins no {package}"
    return match.group(1)


def pip_installs(text: str) -> list[str]:
    """The `pip install` commands of a Dockerfile or Makefile, line continuations joined."""
    text = text.replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if re.search(r"pip install|\$\(PIP_INSTALL\)", line)]


def makefile_install(target: str) -> str:
    """What the Makefile's PIP_INSTALL installs for `.venv/.installed-<target>` (e.g. `-e .`)."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^PIP_INSTALL := \$\(BIN\)/pip install --quiet -c constraints\.txt$", makefile, flags=re.M)
    rule = re.search(rf"^\$\(VENV\)/\.installed-{target}:.*\n\t\$\(PIP_INSTALL\) (.+)$", makefile, flags=re.M)
    assert rule, f"no .installed-{target} rule installing with PIP_INSTALL"
    return rule.group(1)


@pytest.mark.parametrize(("dockerfile", "extras", "make_target"), [("Dockerfile", "", "serve"), ("Dockerfile.gpu", "[frameworks]", None)])
def test_each_image_installs_its_role_with_the_makefiles_constraints(dockerfile, extras, make_target):
    (install,) = [line for line in pip_installs((DEPLOY / dockerfile).read_text()) if "-e" in line.split()]
    assert "-c constraints.txt" in install
    target = install.split("-e", 1)[1].strip().strip("'\"")
    assert target == f".{extras}", install
    if make_target:  # the CPU image is `make serve`'s install
        assert makefile_install(make_target).strip("'\"") == "-e ."
    assert makefile_install("test").strip("'\"").removeprefix("-e ").strip("'\"") == ".[test]"


def test_the_images_run_python_3_11_and_the_pinned_ray():
    cpu = (DEPLOY / "Dockerfile").read_text()
    gpu = (DEPLOY / "Dockerfile.gpu").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", cpu, flags=re.M)
    assert re.search(rf"^FROM rayproject/ray:{re.escape(pinned('ray'))}-py311-gpu$", gpu, flags=re.M)
    for text in (cpu, gpu):
        assert "RAY_AUTH_MODE=token" in text and "YOLO_OFFLINE=1" in text


def test_the_build_context_leaves_out_environments_runs_and_the_local_catalog():
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "artifacts", "catalog_data"} <= ignored
    assert not ignored & {"model_label", "constraints.txt", "serve_config.yaml", "pyproject.toml"}


def rayservice() -> dict:
    (manifest,) = [doc for doc in yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()) if doc]
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    return manifest


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_the_rayservice_serves_serve_config_yaml():
    manifest = rayservice()
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == yaml.safe_load(SERVE_CONFIG.read_text()), (
        "deploy/rayservice.yaml's serveConfigV2 differs from serve_config.yaml: copy the file into it again")


def test_the_rayservice_runs_the_images_with_token_auth_the_pinned_ray_and_the_catalog_volume():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == pinned("ray")
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True

    def gpus(group: dict) -> list:
        return [c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") for c in containers(group)]

    head = cluster["headGroupSpec"]
    assert not any(gpus(head)), "the head group is CPU-only"
    assert all(c["image"].endswith(CPU_IMAGE) for c in containers(head))
    serve_args = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert serve_args["catalog_node_resource"] in head["rayStartParams"]["resources"]
    claim = yaml.safe_load((DEPLOY / "catalog-pvc.yaml").read_text())["metadata"]["name"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in head["template"]["spec"]["volumes"]] == [claim]
    mounts = [m["mountPath"] for c in containers(head) for m in c.get("volumeMounts", [])]
    assert mounts == [f"/app/{serve_args['catalog_dir']}"]
    for group in cluster["workerGroupSpecs"]:
        image = GPU_IMAGE if any(gpus(group)) else CPU_IMAGE
        assert all(c["image"].endswith(image) for c in containers(group)), group["groupName"]
        assert group["minReplicas"] <= group["maxReplicas"]
    assert any(1 in gpus(group) for group in cluster["workerGroupSpecs"]), "a worker group has one GPU a pod"
    assert any(not any(gpus(group)) and group["minReplicas"] == 0 for group in cluster["workerGroupSpecs"]), \
        "a CPU worker group the autoscaler grows from none"
