"""Cold start of the model replicas: a fresh Python process until the deployment's replica is constructed (its
model file loaded and warmed up, as Serve does before a replica takes requests), and the process's memory once
it has answered a batch; per environment, in one run, alternating.

    python -m load_tests.cold_start --env serving=/path/to/slim/bin/python --env full=.venv/bin/python [--runs 3]
        [--tree before=/path/to/an/older/checkout]

Each `--env NAME=PYTHON` is a virtual environment to measure (e.g. the serving install against the test install);
each `--tree NAME=DIR` another checkout (e.g. the code before a change), measured with every environment: the
child's code is passed on the command line, so an older checkout runs it unchanged. The runtimes are those `auto`
serves on CPU. Nothing here imports Ray in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from pipeline.core.paths import REPO_ROOT
from pipeline.core.yolo_offline import offline_environment

CHILD = r"""
import json, sys, time
import psutil
started = psutil.Process().create_time()
name, runtime = sys.argv[1:3]
import numpy as np
module = __import__("deployments." + name.lower(), fromlist=[name])
replica = getattr(module, name).func_or_class(None, runtime)
ready = time.time() - started
if name == "Detector":
    replica.model.detect([np.zeros((224, 224, 3), np.uint8)] * 8, replica.settings)
else:
    replica.model([np.zeros((224, 224, 3), np.uint8)] * 16)
print(json.dumps({"ready_s": ready, "rss_mb": psutil.Process().memory_info().rss / 2**20,
                  "frameworks": sorted(m for m in ("tensorflow", "torch", "ultralytics") if m in sys.modules)}))
"""

DEPLOYMENTS = {"Detector": "detector", "Classifier": "classifier"}


def auto_runtimes() -> dict[str, str]:
    from pipeline.core.model_label import load_model_label

    bundle = load_model_label(None)
    return {name: bundle.resolve_runtime(model, "auto", False) for name, model in DEPLOYMENTS.items()}


def measure(python: str, tree: Path, deployment: str, runtime: str) -> dict:
    result = subprocess.run([python, "-c", CHILD, deployment, runtime], capture_output=True, text=True, cwd=tree,
                            timeout=300, check=False, env=offline_environment(tree / ".yolo") | {"PATH": "/usr/bin:/bin"})
    if result.returncode:  # e.g. older code in the serving install: say why, go on
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", required=True, help="NAME=PYTHON: an environment to measure")
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR: another checkout to measure too")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    # Absolute, not resolved: a virtual environment's python is a link out of it.
    envs = {name: os.path.abspath(python) for name, python in (item.split("=", 1) for item in args.env)}
    trees = {"this checkout": REPO_ROOT} | {name: Path(path) for name, path in (item.split("=", 1) for item in args.tree)}
    runtimes = auto_runtimes()
    rows: dict[tuple[str, str, str], list[dict]] = {}
    for _ in range(args.runs):  # alternating, so a busy moment does not fall on one environment alone
        for tree_name, tree in trees.items():
            for env_name, python in envs.items():
                for deployment, runtime in runtimes.items():
                    rows.setdefault((tree_name, env_name, deployment), []).append(measure(python, tree, deployment, runtime))
    print(f"| code | environment | replica (auto on CPU) | process start → ready, s (median of {args.runs}) "
          "| RSS after a batch, MB | frameworks imported |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (tree_name, env_name, deployment), runs in rows.items():
        if "error" in runs[0]:
            print(f"| {tree_name} | {env_name} | {deployment} ({runtimes[deployment]}) | fails: {runs[0]['error']} | | |")
            continue
        print(f"| {tree_name} | {env_name} | {deployment} ({runtimes[deployment]}) | {statistics.median(r['ready_s'] for r in runs):.2f} | "
              f"{statistics.median(r['rss_mb'] for r in runs):.0f} | {', '.join(runs[0]['frameworks']) or 'none'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
