"""The benchmark's peer: what a user serving these models on one CPU node might pick instead of Ray Serve, a
single-process LitServe server (one worker, its own dynamic batching) around the project's InProcessPipeline,
answering `/hello` as the graph does (the same models, `auto` runtimes, the same loop, only what the answer reads).
A benchmark-only dependency: `pip install -e '.[bench]'`.

    python -m load_tests.peer_server --port 8200 [--model-dir DIR] [--max-batch-size 8] [--batch-timeout 0.01]
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

import litserve as ls


class HelloAPI(ls.LitAPI):
    """/hello: multipart part `img` → {"item": base64 label}, photos batched into one pass of the loop."""

    def __init__(self, model_dir: str | None, **options: Any) -> None:
        super().__init__(api_path="/hello", **options)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        from load_tests.inprocess import InProcessPipeline  # torch before TensorFlow, inside

        self.pipeline = InProcessPipeline(self.model_dir)

    def decode_request(self, request) -> bytes:  # noqa: ANN001  unannotated: LitServe then hands over the form
        return request["img"].file.read()

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return list(inputs)

    def predict(self, photos: list[bytes]) -> list[str]:
        return self.pipeline.hello(photos)

    def unbatch(self, output: list[str]) -> list[str]:
        return list(output)

    def encode_response(self, label: str) -> dict[str, str]:
        return {"item": base64.b64encode(label.encode("utf-8")).decode("ascii")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args(argv)
    api = HelloAPI(args.model_dir, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, healthcheck_path="/readyz")
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
