"""The benchmark's baseline, shaped like the original module: one process, one request at a time, per
request decode → YOLO → crop → classify with no batching, behind a plain HTTP server (starlette + uvicorn,
one worker). The model work takes one lock: requests are served one by one.

    python -m load_tests.baseline_server --port 8100 [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import threading


def make_app(model_dir: str | None):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from load_tests.inprocess import InProcessPipeline  # torch before TensorFlow, inside

    pipeline = InProcessPipeline(model_dir, classifier_runtime="savedmodel", detector_runtime="torch")  # the original's runtimes

    async def hello(request: Request) -> JSONResponse:
        form = await request.form()
        data = await form["img"].read()
        label = await asyncio.to_thread(recognize_one, data)  # the loop runs its own event loop, in a thread
        return JSONResponse({"item": base64.b64encode(label.encode("utf-8")).decode("ascii")})

    one_at_a_time = threading.Lock()

    def recognize_one(data: bytes) -> str:
        with one_at_a_time:  # the original served one request at a time
            return pipeline.recognize([data])[0]

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/hello", hello, methods=["POST"]), Route("/readyz", ready)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(make_app(args.model_dir), host="127.0.0.1", port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
