"""The Ray side of a load test, in its own process: starts the app (or connects to a running cluster),
samples the Serve status API, and kills replicas on command.

Why a separate process: the locust process is monkey-patched by gevent, and Ray's driver (gRPC, threads)
must not run there. The parent talks to this process with one JSON object per line:
stdin  {"cmd": "kill", "deployment": "Detector"} | {"cmd": "stop"}
       | {"cmd": "deploy", "user_config": {deployment: {...}}, "env_vars": {name: value}, "args": {name: value}}
stdout {"event": "ready", "url", "config"} | {"event": "killed", "deployment", "actor", "t"} | {"event": "deployed"}
       | {"event": "stopped"}
Samples go to the JSON-lines file given by --samples.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import ray

from load_tests.sampler import Sampler, cluster_snapshot, serve_status_snapshot

APP_NAME = "recognizer"


def say(**event) -> None:
    print(json.dumps(event), flush=True)


def override_autoscaling(config: dict, upscale_delay_s: float | None, downscale_delay_s: float | None) -> dict:
    """The shipped config with the autoscaling delays of every deployment replaced (short CI runs)."""
    for deployment in config["applications"][0]["deployments"]:
        autoscaling = deployment.get("autoscaling_config")
        if autoscaling is None:
            continue
        if upscale_delay_s is not None:
            autoscaling["upscale_delay_s"] = upscale_delay_s
        if downscale_delay_s is not None:
            autoscaling["downscale_delay_s"] = downscale_delay_s
    return config


def replica_actors(app_name: str = APP_NAME) -> dict[str, list[str]]:
    """Live replica actor names per deployment, so a report can tell a replaced replica from the killed one."""
    actors: dict[str, list[str]] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if name.startswith(f"SERVE_REPLICA::{app_name}#"):
            actors.setdefault(name.split("#")[1], []).append(name)
    return {deployment: sorted(names) for deployment, names in actors.items()}


def snapshot() -> dict:
    return serve_status_snapshot(APP_NAME) | {"actors": replica_actors(APP_NAME), "cluster": cluster_snapshot()}


def num_cpus_arg(value: str) -> float | str | None:
    """--num-cpus: `auto` (None: Ray counts the machine's cores, as `serve run` does), `declared` (the node
    serve_config.yaml declares, args.node_cpus) or a number."""
    if value.lower() in ("auto", "none"):
        return None
    if value.lower() == "declared":
        return "declared"
    if not float(value).is_integer():
        raise argparse.ArgumentTypeError(f"{value}: a Ray node's CPUs are a whole number")
    return float(value)


def local_num_cpus(value: float | str | None, config: dict) -> float | None:
    if value == "declared":
        declared = (config["applications"][0].get("args") or {}).get("node_cpus")
        if declared is None:
            raise SystemExit("--num-cpus declared: serve_config.yaml's args declare no node_cpus")
        return float(declared)
    return value


def kill_one_replica(deployment: str, app_name: str = APP_NAME) -> str | None:
    """ray.kill one replica actor of `deployment` (no restart: Serve's controller must replace it).

    Replica actors are named `SERVE_REPLICA::<app>#<deployment>#<id>` in the "serve" namespace; listing named
    actors goes through the GCS, so it works without the dashboard (the state API needs it).
    """
    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            return name
        except ValueError:  # gone between listing and killing
            continue
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--ray-address", help="connect to this running cluster instead of starting one")
    parser.add_argument("--model-dir", help="model_label folder for a fresh app (default: MODEL_LABEL_DIR or model_label/)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port of a fresh app (0: a free one)")
    parser.add_argument("--num-cpus", type=num_cpus_arg, default=None,
                        help="logical CPUs of a fresh local Ray: auto (default: the machine's cores, what `make serve` "
                             "gets), declared (serve_config.yaml's args.node_cpus) or a number")
    parser.add_argument("--upscale-delay", type=float)
    parser.add_argument("--downscale-delay", type=float)
    args = parser.parse_args(argv)

    from load_tests.serve_app import ServeApp, free_port, init_local_ray, shipped_config

    app = None
    if args.ray_address:
        ray.init(address=args.ray_address, namespace="serve", log_to_driver=False)
        config, url = None, None
    else:
        model_dir = args.model_dir or os.environ.get("MODEL_LABEL_DIR")
        # One histogram bucket per batch size up to 64, so batch sizes formed are read exactly, not by bucket.
        os.environ.setdefault("RAY_SERVE_BATCH_SIZE_BUCKETS", ",".join(str(n) for n in range(1, 65)))
        init_local_ray(local_num_cpus(args.num_cpus, shipped_config()))
        # The port is picked once Ray's own processes hold theirs, so no Ray worker takes it first.
        config = shipped_config(model_dir, args.port or free_port())
        config = override_autoscaling(config, args.upscale_delay, args.downscale_delay)
        app = ServeApp(config).start()
        url = app.url
    sampler = Sampler(args.samples, snapshot).start()
    metrics = [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics" for n in ray.nodes() if n.get("Alive")]
    say(event="ready", url=url, config=config, ray_address=ray.get_runtime_context().gcs_address, metrics_urls=metrics)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "kill":
                name = kill_one_replica(command["deployment"])
                say(event="killed", deployment=command["deployment"], actor=name, t=time.time())
            elif command["cmd"] == "deploy":  # live user_config changes (the benchmark's batch-size sweep)
                changed = copy.deepcopy(app.config)
                for deployment in changed["applications"][0]["deployments"]:
                    if deployment["name"] in command["user_config"]:  # a user_config on the Catalog, which has
                        # no reconfigure(), fails its replicas: only deployments changed get one
                        deployment.setdefault("user_config", {}).update(command["user_config"][deployment["name"]])
                if command.get("args"):  # the application's args (e.g. the runtimes): Serve builds the app anew
                    changed["applications"][0].setdefault("args", {}).update(command["args"])
                if command.get("env_vars"):  # a runtime_env change: Serve restarts the replicas
                    runtime_env = changed["applications"][0].setdefault("runtime_env", {})
                    runtime_env.setdefault("env_vars", {}).update(command["env_vars"])
                app.deploy(changed)
                time.sleep(3)  # let the controller pick the change up before asking whether it is done
                app.wait_ready()
                say(event="deployed", config=changed)
            elif command["cmd"] == "stop":
                break
    finally:
        sampler.stop()
        if app is not None:
            app.stop()  # serve.shutdown() and ray.shutdown() of the cluster this process started
        else:
            ray.shutdown()  # only disconnects from a cluster we did not start
        say(event="stopped")


if __name__ == "__main__":
    main()
