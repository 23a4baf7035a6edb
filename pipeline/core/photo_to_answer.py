"""The one photo → answer loop: decode → detector input → boxes → regions → classifier input → answer.

Serving (deployments/recognizer.py), evaluation (pipeline/evaluation/evaluate.py) and the in-process benchmark
(load_tests/inprocess.py) all run photos through `PhotoToAnswer`, with the model calls as parameters (Ray
handles in serving, pipeline.core.models' adapters elsewhere), as ultralytics' BasePredictor runs one
stream_inference for its CLI, its Python API and its validator: what evaluation reports is what serving answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.catalog.match import CatalogMatch
from pipeline.core.catalog.rule import CatalogRule, trained_side
from pipeline.core.loop_modes import ENROLLMENT_POLICY, EVERY_PRODUCT, LoopMode
from pipeline.core.model_label import ModelLabel
from pipeline.core.preprocessing import Letterboxed, Photo, decode_photo
from pipeline.core.recognition import (
    DEFAULT_HELLO_POLICY,
    Answer,
    Box,
    answer,
    boxes_in_photo,
    crop_boxes,
    crops,
    prepare_photo,
    prominent_probabilities,
)
from pipeline.core.settings import RecognizerSettings

Detect = Callable[[list[np.ndarray]], Awaitable[list[np.ndarray]]]
"""Letterboxed RGB uint8 images → per image, boxes [K, 5] (x1, y1, x2, y2, confidence) in letterbox pixels."""

PROBABILITIES_OUTPUT, EMBEDDING_OUTPUT = "probabilities", "embedding"
"""The names of the exported classifier's outputs (pipeline.train.efficientnet_lite writes them, pipeline.core.models
reads them): a model is asked for its outputs by name, never by position."""


@dataclass(frozen=True)
class Classified:
    """The classifier's answer for N crops, rows in the order sent. `embeddings`: the pooled backbone features of
    the same forward pass, L2-normalised (what the catalog matches by); None from a model exported without them."""

    probabilities: np.ndarray  # float32 [N, C]
    embeddings: np.ndarray | None  # float32 [N, D], unit rows

    def __post_init__(self) -> None:
        if self.embeddings is not None and len(self.embeddings) != len(self.probabilities):
            raise ValueError(f"{len(self.embeddings)} embeddings for {len(self.probabilities)} rows of probabilities")


Classify = Callable[[list[np.ndarray]], Awaitable[Classified]]
"""uint8 crops [S, S, 3] → their Classified, in the order sent."""

Match = Callable[[np.ndarray], Sequence[CatalogMatch | None]]
"""Embeddings [N, D] → each one's closest enrolled product (None: an empty catalog): a catalog copy's index."""

Reference = Callable[[np.ndarray], Sequence[Sequence[CatalogMatch]]]
"""Embeddings [N, D] → each one's nearest photos the classifier was trained on (its gallery), one per class, nearest
first, labelled with the class (`CatalogIndex.top` of `gallery_index`)."""


@dataclass(frozen=True)
class ModelFacts:
    """What the loop must know of the models: input sizes, labels, the hello policy and the calibrated threshold
    (a model_label/'s, or a model being evaluated before it has one)."""

    labels: Sequence[str]
    classifier_input_size: int
    detector_input_size: int
    hello_policy: str = DEFAULT_HELLO_POLICY
    unknown_threshold: float = 0.5
    catalog_rule: CatalogRule = CatalogRule()
    whole_photo_share: float = 1.0  # the whole-photo view: its centre share of each side (recognition.whole_photo_box)

    @classmethod
    def of(cls, bundle: ModelLabel, classifier_runtime: str = "savedmodel") -> ModelFacts:
        """A model_label/'s, with the unknown threshold calibrated for the classifier in `classifier_runtime`."""
        return cls(bundle.labels, bundle.classifier_input_size, bundle.detector_input_size, bundle.hello_policy,
                   bundle.unknown_threshold_for(classifier_runtime), bundle.catalog_rule, bundle.whole_photo_share)


def nothing_detected(images: list[np.ndarray]) -> list[np.ndarray]:
    """A detector that finds nothing: the loop then classifies whole photos (evaluation's whole-photo rows)."""
    return [np.empty((0, 5), np.float32) for _ in images]


@dataclass
class StageSeconds:
    """Wall seconds per stage of one pass of the loop (all its photos together)."""

    decode: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    classify: float = 0.0
    detector_asked: bool = True  # False: `detect` is 0 because the stage did not run (a whole-photo /hello), not fast


@dataclass(frozen=True)
class Recognized:
    """One photo's way through the loop."""

    photo: Photo
    boxes: np.ndarray  # float [K, 5] detector boxes in decoded-photo pixels, largest first; empty: nothing detected
    #   (or the detector not asked: loop_modes.HELLO under the whole-photo policy)
    regions: list[Box | None]  # what was classified: each box grown by the crop margin, or [None]: the whole photo
    probabilities: np.ndarray  # float [R, C], one row per region
    whole_photo: np.ndarray | None  # [C] the whole photo's, when the policy looked at it besides the largest box
    prominent: np.ndarray | None  # [C] the prominent product's (what /hello names), by the hello policy
    answers: list[Answer] = field(default_factory=list)  # one per region, the first from `prominent`
    embeddings: np.ndarray | None = None  # float [R, D], one unit row per region; None: the model has none
    whole_embedding: np.ndarray | None = None  # [D] the whole photo's, when the policy looked at it

    @property
    def detected(self) -> bool:
        return len(self.boxes) > 0

    @property
    def enrolled_vector(self) -> np.ndarray | None:
        """This photo's vector as an enrolled catalog photo: the unit mean of its largest product's crop embedding and
        the whole photo's (queries stay their crops). Chosen on the selection split against the crop alone: the
        catalog's nearest product is right more often, and the rule names more enrolled photos at the same precision
        (docs/catalog.md). None when no product was detected (enrollment refuses the photo) or the model has no
        embeddings; the loop must have run in loop_modes.ENROLLMENT."""
        if not self.detected or self.embeddings is None:
            return None
        if self.whole_embedding is None:
            raise ValueError(f"an enrollment photo goes through the loop with policy {ENROLLMENT_POLICY!r}: no whole-photo embedding")
        mean = self.embeddings[0] + self.whole_embedding
        return mean / np.linalg.norm(mean)


class PhotoToAnswer:
    """The loop, for one set of models (their ModelFacts) and the ingress settings."""

    def __init__(self, models: ModelFacts, settings: RecognizerSettings) -> None:
        self.models = models
        self.settings = settings
        rule = models.catalog_rule  # the manifest's, its threshold overridden by the settings' when they set one
        self.catalog_rule = rule if settings.catalog_threshold is None else dataclasses.replace(rule, threshold=settings.catalog_threshold)

    @property
    def unknown_threshold(self) -> float:
        """The classifier's calibrated threshold for `known`, unless the settings set one live."""
        return self.models.unknown_threshold if self.settings.unknown_threshold is None else self.settings.unknown_threshold

    async def __call__(self, photos: Sequence[bytes], detect: Detect, classify: Classify | None,
                       mode: LoopMode = EVERY_PRODUCT, *, decode_slots: asyncio.Semaphore | None = None,
                       match: Match | None = None, reference: Reference | None = None,
                       precedence: Mapping[str, Collection[str]] | None = None) -> tuple[list[Recognized], StageSeconds]:
        """Every photo through the loop: one detector call for all of them, one classifier call for all their crops.

        `classify` None stops after the regions (no probabilities). `mode` (pipeline.core.loop_modes): what the pass
        is for, and so whether the detector is asked, how many regions are classified and by which /hello policy.
        `decode_slots`: bounds the concurrent decodes (the ingress's memory). Decoding and cropping run in a
        thread, so an event loop keeps taking requests meanwhile. `match`: the catalog, asked for each region's
        embedding; the catalog rule decides whether it names the product (`reference`: the classifier's gallery,
        for the rules that compare with it; `precedence`: per enrolled sku, the trained classes it takes precedence over).
        """
        settings, models, times = self.settings, self.models, StageSeconds()
        plan = mode.plan(models.hello_policy, matching=match is not None)
        started = time.perf_counter()
        prepared = await asyncio.gather(*(self._decode(data, decode_slots, plan.asks_detector) for data in photos))
        decoded = time.perf_counter()
        if not plan.asks_detector:  # its stage did not run
            detections: list[np.ndarray | None] = [None] * len(prepared)
            detected, times.detector_asked = decoded, False
        else:
            detections = list(await detect([image.pixels for _, image in prepared if image is not None]))
            detected = time.perf_counter()

        plans = []
        for (photo, image), found in zip(prepared, detections):
            # decoded-photo pixels, largest first; none when the detector was not asked
            boxes = np.empty((0, 5), np.float32) if found is None or image is None else boxes_in_photo(found, photo, image)
            regions = crop_boxes(boxes, settings.crop_margin)[:plan.regions]
            with_whole_photo = plan.whole_photo and regions[0] is not None
            plans.append((photo, boxes, regions, with_whole_photo))
        size = models.classifier_input_size
        photo_crops = await asyncio.to_thread(
            lambda: [crop for photo, _, regions, whole in plans
                     for crop in crops(photo.image, regions + [None] * whole, size, models.whole_photo_share)])
        cropped = time.perf_counter()
        classified_crops = await classify(photo_crops) if classify is not None else None
        classified = time.perf_counter()
        times.decode, times.detect = decoded - started, detected - decoded
        times.crop, times.classify = cropped - detected, classified - cropped

        top_k = settings.top_k
        threshold = self.unknown_threshold
        recognized, at = [], 0
        for photo, boxes, regions, with_whole_photo in plans:
            if classified_crops is None:
                recognized.append(Recognized(photo, boxes, regions, np.empty((0, 0)), None, None))
                continue
            probabilities, embeddings = classified_crops.probabilities, classified_crops.embeddings
            end = at + len(regions)
            rows = probabilities[at:end]
            whole = probabilities[end] if with_whole_photo else None
            prominent = prominent_probabilities(rows[0], whole, plan.policy)
            answer_rows = [prominent, *rows[1:]]
            answers = [answer(p, models.labels, top_k, threshold) for p in answer_rows]
            if match is not None and embeddings is not None:  # the prominent product is matched by its crop
                rows_embeddings = embeddings[at:end]
                training: Sequence[Sequence[CatalogMatch] | None] = [None] * len(rows_embeddings)
                if reference is not None and self.catalog_rule.needs_gallery:
                    training = reference(rows_embeddings)
                answers = [self._with_catalog(a, p, m, t, threshold, precedence or {})
                           for a, p, m, t in zip(answers, answer_rows, match(rows_embeddings), training)]
            recognized.append(Recognized(
                photo, boxes, regions, rows, whole, prominent, answers,
                embeddings=embeddings[at:end] if embeddings is not None else None,
                whole_embedding=embeddings[end] if embeddings is not None and with_whole_photo else None))
            at = end + with_whole_photo
        return recognized, times

    def _with_catalog(self, model_answer: Answer, probabilities: np.ndarray, closest: CatalogMatch | None,
                      training: Sequence[CatalogMatch] | None, unknown_threshold: float,
                      precedence: Mapping[str, Collection[str]]) -> Answer:
        set_aside = precedence.get(closest.sku, ()) if closest else ()
        side = trained_side(probabilities, self.models.labels, unknown_threshold, training, set_aside)
        by_catalog = self.catalog_rule.picks_catalog_for(closest, side)
        return dataclasses.replace(model_answer, match=closest, by_catalog=by_catalog)

    def run(self, photos: Sequence[bytes], detect: Callable[[list[np.ndarray]], list[np.ndarray]],
            classify: Callable[[list[np.ndarray]], Classified] | None, mode: LoopMode = EVERY_PRODUCT,
            **options) -> tuple[list[Recognized], StageSeconds]:
        """The loop for plain scripts: synchronous model calls, no event loop of the caller's."""

        async def detect_now(images: list[np.ndarray]) -> list[np.ndarray]:
            return detect(images)

        async def classify_now(batch: list[np.ndarray]) -> Classified:
            assert classify is not None
            return classify(batch)

        return asyncio.run(self(photos, detect_now, classify_now if classify else None, mode, **options))

    def run_files(self, paths: Sequence[Path | str], detect: Callable[[list[np.ndarray]], list[np.ndarray]],
                  classify: Callable[[list[np.ndarray]], Classified] | None, mode: LoopMode = EVERY_PRODUCT,
                  batch: int = 16, progress: Callable[[int], object] | None = None, **options) -> list[Recognized]:
        """`run` over photo files, `batch` at a time (evaluation, training crops); `progress` is told how many
        photos each batch held once it is done (a progress bar's update)."""
        recognized: list[Recognized] = []
        for start in range(0, len(paths), batch):
            recognized += self.run([Path(path).read_bytes() for path in paths[start:start + batch]], detect, classify, mode,
                                   **options)[0]
            if progress is not None:
                progress(len(paths[start:start + batch]))
        return recognized

    async def _decode(self, data: bytes, slots: asyncio.Semaphore | None, for_detector: bool = True) -> tuple[Photo, Letterboxed | None]:
        """The decoded photo, and the detector's input when it will be asked."""
        async with slots or contextlib.nullcontext():
            if not for_detector:
                return await asyncio.to_thread(decode_photo, data, self.settings.decode_min_side), None
            return await asyncio.to_thread(prepare_photo, data, self.settings, self.models.detector_input_size)
