"""The Detector's batch handler on its own, by batch size: what one model call costs per photo, with the photo
letterboxed by the ingress (what is served) and, side by side, the shrunk 640 px photo that ultralytics
letterboxed itself (what was served before), plus the bytes each sends between deployments.

torch and ultralytics only (no Ray, no TensorFlow), so it also runs on a GPU machine: there it adds fp16 rows.

    python -m load_tests.detector_batches [--sizes 1,2,4,8,16] [--repeats 5] [--device cpu|cuda:0]
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import time

import numpy as np

from load_tests.photos import load_photos
from pipeline.core.model_label import load_model_label
from pipeline.core.models import YoloDetector
from pipeline.core.preprocessing import detector_input
from pipeline.core.recognition import prepare_photo
from pipeline.core.settings import serving_settings


def timed(call, repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: cuda:0 when torch sees a GPU, else cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a Detector replica gets ceil(its CPU share))")
    args = parser.parse_args(argv)

    bundle, settings = load_model_label(), serving_settings()
    model = YoloDetector(bundle.detector_path, use_gpu=args.device != "cpu", threads=args.threads)
    device = model.device
    import torch

    prepared = [prepare_photo(data, settings.recognizer, bundle.detector_input_size) for _, data in load_photos(8, 4)]
    letterboxed = [image.pixels for _, image in prepared]
    shrunk = [detector_input(photo.image, settings.recognizer.detector_image_max_side) for photo, _ in prepared]  # 640 px
    fp32, fp16 = dataclasses.replace(settings.detector, fp16_on_gpu=False), dataclasses.replace(settings.detector, fp16_on_gpu=True)

    def before(images: list[np.ndarray]) -> list:  # ultralytics' own predict on the shrunk photo: what was served before
        return model.model.predict([i[..., ::-1] for i in images], imgsz=bundle.detector_input_size, device=device, verbose=False,
                             conf=settings.detector.confidence_threshold, iou=settings.detector.iou_threshold)

    rows = [("letterboxed in the ingress (served)", letterboxed, lambda b: model.detect(b, fp32)),
            ("shrunk 640 px photo, ultralytics letterboxes (before)", shrunk, before)]
    if device != "cpu":
        rows.insert(1, ("letterboxed, fp16", letterboxed, lambda b: model.detect(b, fp16)))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# Detector batch handler, {device}, {torch.get_num_threads()} torch thread(s), shipped {bundle.versions['detector']}\n")
    print("| input | bytes/photo sent | " + " | ".join(f"batch {n} ms/photo" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for name, images, call in rows:
        per_photo = []
        for n in sizes:
            batch = [images[i % len(images)] for i in range(n)]
            per_photo.append(1000 * timed(lambda call=call, batch=batch: call(batch), args.repeats) / n)
        sent = np.mean([len(pickle.dumps(image, protocol=5)) for image in images])
        print(f"| {name} | {sent / 1024:.0f} KiB | " + " | ".join(f"{ms:.1f}" for ms in per_photo) + " |")


if __name__ == "__main__":
    main()
