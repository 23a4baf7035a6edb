"""The recognition pipeline in one plain process, no Ray and no HTTP framework of ours: what the benchmark
compares the served graph against. Same models (serving's adapters), same photo→answer loop
(pipeline.core.photo_to_answer), same settings (serve_config.yaml's user_config), so only the serving differs.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.loop_modes import EVERY_PRODUCT, HELLO, LoopMode
from pipeline.core.model_label import load_model_label
from pipeline.core.models import load_classifier, load_detector
from pipeline.core.photo_to_answer import Classified, Match, ModelFacts, PhotoToAnswer, Recognized, Reference, StageSeconds
from pipeline.core.settings import ServingSettings, serving_settings


@dataclass
class StageTimes(StageSeconds):
    """Seconds spent per stage, summed over every photo processed, and what was processed."""

    photos: int = 0
    crops: int = 0
    batches: list[int] = field(default_factory=list)

    def add(self, seconds: StageSeconds, recognized: list[Recognized]) -> None:
        """A pass of the loop: its decode and crop time (detect and classify are timed in the model calls, so a
        chunk waiting for a model is not counted as that model's time)."""
        self.decode += seconds.decode
        self.crop += seconds.crop
        self.photos += len(recognized)


class InProcessPipeline:
    """decode → YOLO → crop → classify, on lists of photos: one detector call per list, the crops in classifier
    batches."""

    def __init__(self, model_dir: str | None, settings: ServingSettings | None = None, threads: int | None = None,
                 classifier_batch: int = 16, classifier_runtime: str = "auto", detector_runtime: str = "auto") -> None:
        """Runtimes as serve_config.yaml's args name them; `auto` as on a CPU node."""
        threads = threads or os.cpu_count() or 1
        self.settings = settings or serving_settings()
        self.bundle = load_model_label(model_dir)
        self.runtimes = {"classifier": self.bundle.resolve_runtime("classifier", classifier_runtime, use_gpu=False),
                         "detector": self.bundle.resolve_runtime("detector", detector_runtime, use_gpu=False)}
        detector_path = self.bundle.runtime_path("detector", self.runtimes["detector"])
        self.detector = load_detector(detector_path, self.runtimes["detector"], threads=threads)  # torch before TensorFlow
        classifier_path = self.bundle.runtime_path("classifier", self.runtimes["classifier"])
        self.classifier = load_classifier(classifier_path, self.runtimes["classifier"], threads=threads, batch=classifier_batch)
        self.loop = PhotoToAnswer(ModelFacts.of(self.bundle, self.runtimes["classifier"]), self.settings.recognizer)
        self.times = StageTimes()
        self.recognize([self._warmup_photo()])  # load weights and trace now, not on the first request
        self.times = StageTimes()

    @staticmethod
    def _warmup_photo() -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (640, 480), (128, 128, 128)).save(buffer, "JPEG")
        return buffer.getvalue()

    def _detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        boxes = self.detector.detect(images, self.settings.detector)
        self.times.detect += time.perf_counter() - started
        return boxes

    def _classify(self, crops: list[np.ndarray]) -> Classified:
        started = time.perf_counter()
        classified = self.classifier(crops)
        self.times.classify += time.perf_counter() - started
        self.times.crops += len(crops)
        self.times.batches += [min(self.classifier.batch, len(crops) - at) for at in range(0, len(crops), self.classifier.batch)]
        return classified

    def recognize(self, photos: list[bytes], match: Match | None = None, reference: Reference | None = None) -> list[str]:
        """The top label of each photo's largest product (the whole photo when nothing is detected): what
        `/hello` answers, with every product classified as the original module did and /v1/recognize does.
        `match`, `reference`: a catalog's index and the classifier's gallery, asked for every product as the
        ingress asks them (load_tests/catalog_cost.py)."""
        recognized, seconds = self.loop.run(photos, self._detect, self._classify, match=match, reference=reference)
        self.times.add(seconds, recognized)
        return [r.answers[0].label for r in recognized]

    def hello(self, photos: list[bytes]) -> list[str]:
        """What `/hello` answers for each photo, computing only what that answer reads, as the graph's /hello does
        (pipeline.core.loop_modes.HELLO): the peer server of the benchmark (load_tests.peer_server) serves this."""
        recognized, seconds = self.loop.run(photos, self._detect, self._classify, HELLO)
        self.times.add(seconds, recognized)
        return [r.answers[0].label for r in recognized]

    def recognize_chunks(self, chunks: list[list[bytes]], mode: LoopMode = EVERY_PRODUCT) -> None:
        """Chunks of photos, two in flight: the next chunk decodes while the models run on this one (a plain input
        pipeline); each model takes one call at a time. `mode`: HELLO for only what /hello's answer reads, as /hello."""
        asyncio.run(self._pipelined(chunks, mode))

    async def _pipelined(self, chunks: list[list[bytes]], mode: LoopMode) -> None:
        detector_free, classifier_free, in_flight = asyncio.Lock(), asyncio.Lock(), asyncio.Semaphore(2)

        async def detect(images: list[np.ndarray]) -> list[np.ndarray]:
            async with detector_free:
                return await asyncio.to_thread(self._detect, images)

        async def classify(crops: list[np.ndarray]) -> Classified:
            async with classifier_free:
                return await asyncio.to_thread(self._classify, crops)

        async def one(chunk: list[bytes]) -> None:
            async with in_flight:
                recognized, seconds = await self.loop(chunk, detect, classify, mode)
                self.times.add(seconds, recognized)

        await asyncio.gather(*(one(chunk) for chunk in chunks))
