"""Ray Serve's own cost for this graph's shape, with no model work: the benchmark's floor row. The same proxy, an
ingress that reads the multipart upload as the Recognizer does and gathers requests into one call the same way,
and a model deployment under @serve.batch that is handed a classifier-sized crop (150 KB) per photo and does
nothing with it. Resources, queues, autoscaling and Serve's throughput mode are the shipped serve_config.yaml's.
Whatever the graph costs beyond this row is its own work; this row is what Ray Serve costs whatever the models.

    python -m load_tests.ray_floor --port 8300
"""


import argparse
import asyncio
import copy
import signal
import threading

import numpy as np
from fastapi import FastAPI, Request
from ray import serve

from deployments.payloads import row_slices
from deployments.recognizer import GATHERED_CALLS
from load_tests.serve_app import ServeApp, shipped_config
from pipeline.core.settings import RecognizerSettings, deployment_config

floor_api = FastAPI()


@serve.deployment
class NoModel:
    """The model deployments' shape: crops in, a batch formed, one answer per photo; no work."""

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def classify_batch(self, crops: list[np.ndarray]) -> list[int]:
        return [crop.shape[0] for crop in crops]

    async def classify(self, crops: list[np.ndarray]) -> list[int]:
        return list(await asyncio.gather(*(self.classify_batch(crop) for crop in crops)))

    async def ready(self) -> str:
        return "no-model"


@serve.deployment
@serve.ingress(floor_api)
class FloorIngress:
    def __init__(self, model) -> None:  # noqa: ANN001  a DeploymentHandle
        self.model = model
        self._gathered = serve.batch(max_batch_size=RecognizerSettings.gather_max_photos, max_concurrent_batches=GATHERED_CALLS,
                                     batch_wait_timeout_s=RecognizerSettings.gather_wait_s)(self._classify_all)

    async def _classify_all(self, crop_lists: list[list[np.ndarray]]) -> list[list[int]]:
        rows = await self.model.classify.remote([crop for crops in crop_lists for crop in crops])
        return [rows[part] for part in row_slices([len(crops) for crops in crop_lists])]

    @floor_api.post("/hello")
    async def hello(self, request: Request) -> dict:
        form = await request.form()
        data = await form["img"].read()
        crop = np.full((224, 224, 3), len(data) % 255, np.uint8)  # what one classifier crop weighs in the call
        await self._gathered([crop])
        return {"item": "Zmxvb3I="}

    @floor_api.get("/readyz")
    async def readyz(self) -> dict:
        return {"status": "ok"}


def build(args: dict):  # noqa: ANN201  a Serve Application
    return FloorIngress.bind(NoModel.bind())


def floor_config(port: int) -> dict:
    """serve_config.yaml's proxy, runtime environment and the Recognizer's and Classifier's deployment settings, for
    the floor's two deployments."""
    config = shipped_config(port=port)
    app = config["applications"][0]
    shipped = copy.deepcopy(config)
    app["import_path"], app["args"] = "load_tests.ray_floor:build", {}
    shares = shipped["applications"][0]["args"]
    ingress = deployment_config(shipped, "Recognizer") | {"name": "FloorIngress",
                                                          "ray_actor_options": {"num_cpus": shares["recognizer_num_cpus"]}}
    model = deployment_config(shipped, "Classifier") | {"name": "NoModel",
                                                        "ray_actor_options": {"num_cpus": shares["classifier_num_cpus"]}}
    for deployment in (ingress, model):
        deployment.pop("user_config", None)
    app["deployments"] = [ingress, model]
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", help="ignored: no models (the benchmark passes it to every server)")
    args = parser.parse_args(argv)
    from load_tests.serve_app import init_local_ray

    init_local_ray(None)  # the machine's cores, as `make serve`
    app = ServeApp(floor_config(args.port)).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    app.stop()


if __name__ == "__main__":
    main()
