"""Catalog deployment: the one writer of the product catalog (pipeline.core.catalog_store: SQLite + faiss).

It embeds enrollment photos with the models that serve (its own Detector and Classifier handles, through the
core's photo→answer loop, so an enrolled photo is cut and embedded exactly as a query photo is), writes them in
one transaction, and tells every ingress replica: each keeps a copy of the vectors (deployments/catalog_copy.py)
and long-polls `changes`, which answers the moment a write lands. One replica, on the node whose volume holds
the catalog folder (docs/cluster.md); if it is down, recognition goes on from the copies and writes answer 503.

When the classifier's version differs from the one the stored embeddings came from, the stored photos are
re-embedded in the background after start; meanwhile the copies get only the photos already embedded by the
serving model: a catalog never mixes two models' embeddings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.payloads import Classification, Detection, Refusal
from pipeline.core.catalog_match import CatalogSnapshot
from pipeline.core.catalog_store import (
    CatalogError,
    CatalogFull,
    CatalogStore,
    InvalidProduct,
    StoredPhoto,
    UnknownProduct,
    UnknownVersion,
)
from pipeline.core.model_label import DEFAULT_MODEL_DIR, load_model_label
from pipeline.core.photo_to_answer import Classified, ModelFacts, PhotoToAnswer
from pipeline.core.preprocessing import ImageError
from pipeline.core.settings import RecognizerSettings

logger = logging.getLogger("ray.serve")

DUPLICATE_SIMILARITY = 0.97
"""A photo this close (cosine) to a photo of another sku is refused as its near-duplicate: the same picture
enrolled twice under two skus would make the catalog's answer a coin toss between them."""

MODEL_CALL_TIMEOUT_S = 30.0
"""The longest one enrollment photo waits for the Detector or the Classifier."""

REEMBED_BATCH = 8
"""Stored photos re-embedded per step after a model change; the snapshot is refreshed after each step."""

REFUSALS: dict[type[CatalogError], tuple[int, str]] = {
    UnknownProduct: (404, "unknown_product"),
    UnknownVersion: (404, "unknown_version"),
    CatalogFull: (409, "catalog_full"),
    InvalidProduct: (422, "invalid_product"),
}


@dataclass(frozen=True)
class EmbeddedPhoto:
    """One enrollment photo after the models: its embedding, or why it has none."""

    index: int
    filename: str
    data: bytes
    media_type: str
    embedding: np.ndarray | None
    reason: str | None = None  # no_product | unreadable
    detail: str | None = None


def catalog_folder(catalog_dir: str) -> Path:
    """`catalog_dir` as serve_config.yaml gives it: relative paths are the repository root's."""
    path = Path(catalog_dir).expanduser()
    return path if path.is_absolute() else DEFAULT_MODEL_DIR.parent / path


@serve.deployment
class Catalog:
    def __init__(self, detector: DeploymentHandle, classifier: DeploymentHandle, model_dir: str | None = None,
                 catalog_dir: str = "catalog_data", classifier_runtime: str = "savedmodel") -> None:
        self.detector, self.classifier = detector, classifier
        bundle = load_model_label(model_dir, verify_checksums=False)
        self.model_version = bundle.versions["classifier"]
        # The largest product's crop is what a product is enrolled as and what a query is matched with.
        self.loop = PhotoToAnswer(ModelFacts.of(bundle, classifier_runtime), RecognizerSettings())
        self.store = CatalogStore(catalog_folder(catalog_dir))
        self.snapshot = self.store.snapshot(self.model_version)
        self.changed = asyncio.Event()  # set and replaced at every write: wakes the long-polls
        self.reembedding: asyncio.Task | None = None
        info = self.store.info()
        logger.info("Catalog at %s: version %s, %s products, %s photos; %s photos need embedding by %s",
                    self.store.folder, info["version"], info["products"], info["photos"],
                    self.store.photos_needing(self.model_version), self.model_version)

    # ------------------------------------------------------------ reads

    async def changes(self, since: int, timeout_s: float = 10.0) -> CatalogSnapshot | None:
        """The snapshot when its version is not `since`, at once or as soon as a write lands; None after
        `timeout_s` without a change (the caller asks again)."""
        self._start_reembedding()
        if self.snapshot.version == since:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout_s)
            except TimeoutError:
                return None
        return self.snapshot

    async def info(self) -> dict:
        self._start_reembedding()
        info = await asyncio.to_thread(self.store.info)
        return info | {"model_version": self.model_version, "matchable_photos": len(self.snapshot.skus),
                       "photos_needing_embedding": await asyncio.to_thread(self.store.photos_needing, self.model_version)}

    async def products(self, offset: int, limit: int) -> dict:
        return await asyncio.to_thread(self.store.products, offset, limit)

    async def product(self, sku: str) -> dict | Refusal:
        return await self._refusing(self.store.product, sku)

    async def photo(self, photo_id: int) -> tuple[bytes, str] | Refusal:
        return await self._refusing(self.store.photo, photo_id)

    async def ready(self) -> str:
        self._start_reembedding()
        return f"catalog version {self.snapshot.version}"

    # ------------------------------------------------------------ writes

    async def enroll(self, sku: str, label: str, photos: list[tuple[str, str, bytes]], actor: str,
                     add: bool = False) -> dict | Refusal:
        """Embed `photos` ((filename, media type, bytes) each) and store the accepted ones under `sku`: as its
        new photo set (enrollment; re-enrolling replaces), or added to its photos (`add`)."""
        try:
            self.store.validate(sku, label)
        except CatalogError as error:
            return self._refusal(error)
        embedded = await asyncio.gather(*(self._embed(i, *photo) for i, photo in enumerate(photos)))
        accepted, rejected = [], []
        for photo in embedded:
            if photo.embedding is None:
                rejected.append({"index": photo.index, "filename": photo.filename, "reason": photo.reason, "detail": photo.detail})
                continue
            duplicate = self.store.near_duplicate(photo.embedding, self.model_version, exclude_sku=sku, threshold=DUPLICATE_SIMILARITY)
            if duplicate is not None:
                other, similarity = duplicate
                rejected.append({"index": photo.index, "filename": photo.filename, "reason": "duplicate_of_other_sku",
                                 "detail": f"{similarity:.3f} cosine to a photo of {other!r}", "similar_sku": other,
                                 "similarity": round(similarity, 4)})
                continue
            accepted.append(photo)
        if not accepted:
            return Refusal(422, "no_photo_accepted", "none of the photos could be enrolled", {"rejected": rejected})
        stored = [StoredPhoto(p.data, p.media_type, p.embedding) for p in accepted]
        write = self.store.add_photos if add else self.store.enroll
        arguments = (sku, stored, self.model_version, actor) if add else (sku, label, stored, self.model_version, actor)
        result = await self._write(write, *arguments)
        if isinstance(result, Refusal):
            return result
        return {"sku": sku, "label": result["label"], "catalog_version": result["version"],
                "accepted": [{"index": p.index, "filename": p.filename} for p in accepted], "rejected": rejected}

    async def add_photos(self, sku: str, photos: list[tuple[str, str, bytes]], actor: str) -> dict | Refusal:
        try:
            label = self.store.product(sku)["label"]
        except CatalogError as error:
            return self._refusal(error)
        return await self.enroll(sku, label, photos, actor, add=True)

    async def delete(self, sku: str, actor: str) -> dict | Refusal:
        result = await self._write(self.store.delete, sku, actor)
        return result if isinstance(result, Refusal) else {"sku": sku, "catalog_version": result["version"]}

    async def rollback(self, version: int, actor: str) -> dict | Refusal:
        result = await self._write(self.store.rollback, version, actor)
        return result if isinstance(result, Refusal) else {"catalog_version": result["version"], "restored": version}

    # ------------------------------------------------------------ inside

    async def _write(self, write, *arguments) -> dict | Refusal:
        """One store write (one transaction), then the new snapshot to every follower."""
        result = await self._refusing(write, *arguments)
        if not isinstance(result, Refusal):
            await self._publish()
        return result

    async def _publish(self) -> None:
        self.snapshot = await asyncio.to_thread(self.store.snapshot, self.model_version)
        self.changed.set()
        self.changed = asyncio.Event()

    async def _refusing(self, call, *arguments):
        try:
            return await asyncio.to_thread(call, *arguments)
        except CatalogError as error:
            return self._refusal(error)

    @staticmethod
    def _refusal(error: CatalogError) -> Refusal:
        status, code = next((v for k, v in REFUSALS.items() if isinstance(error, k)), (422, "invalid_product"))
        return Refusal(status, code, str(error))

    async def _embed(self, index: int, filename: str, media_type: str, data: bytes) -> EmbeddedPhoto:
        try:
            embedding = await self._embedding(data)
        except ImageError as error:
            return EmbeddedPhoto(index, filename, data, media_type, None, "unreadable", error.message)
        if embedding is None:
            return EmbeddedPhoto(index, filename, data, media_type, None, "no_product", "the detector found no product in it")
        return EmbeddedPhoto(index, filename, data, media_type, embedding)

    async def _embedding(self, data: bytes) -> np.ndarray | None:
        """The largest product's embedding, as a query photo's is made; None when no product is detected."""

        async def detect(images: list[np.ndarray]) -> list[np.ndarray]:
            found: list[Detection] = [await asyncio.wait_for(self.detector.detect.remote(image), MODEL_CALL_TIMEOUT_S)
                                      for image in images]
            return [detection.boxes for detection in found]

        async def classify(crops: list[np.ndarray]) -> Classified:
            result: Classification = await asyncio.wait_for(self.classifier.classify.remote(crops), MODEL_CALL_TIMEOUT_S)
            return Classified(result.probabilities, result.embeddings)

        (recognized,), _ = await self.loop([data], detect, classify, prominent_only=True, hello_policy="crop")
        if not recognized.detected or recognized.embeddings is None:
            return None
        return recognized.embeddings[0]

    def _start_reembedding(self) -> None:
        if self.reembedding is None and self.store.photos_needing(self.model_version):
            self.reembedding = asyncio.get_running_loop().create_task(self._reembed())

    async def _reembed(self) -> None:
        """Stored photos embedded by the serving model, a batch at a time; the copies follow after each batch."""
        started, done = time.perf_counter(), 0
        total = await asyncio.to_thread(self.store.photos_needing, self.model_version)
        logger.info("Catalog: re-embedding %d stored photos with %s", total, self.model_version)
        while batch := await asyncio.to_thread(self.store.photos_to_embed, self.model_version, REEMBED_BATCH):
            embeddings = []
            for photo_id, data in batch:
                try:
                    embeddings.append((photo_id, await self._embedding(data)))
                except ImageError:
                    embeddings.append((photo_id, None))
            await asyncio.to_thread(self.store.set_embeddings, embeddings, self.model_version)
            await self._publish()
            done += len(batch)
            logger.info("Catalog: re-embedded %d/%d photos (%.0f s)", done, total, time.perf_counter() - started)

