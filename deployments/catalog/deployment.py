"""Catalog deployment: the one writer of the product catalog (pipeline.core.catalog.store: SQLite + faiss).

It embeds enrollment photos with the models that serve (its own Detector and Classifier handles, through the
core's photo→answer loop, so an enrolled photo is cut and embedded exactly as a query photo is), writes them in
one transaction, and tells every ingress replica: each keeps a copy of the vectors (deployments/catalog/ingress_copy.py)
and long-polls `changes`, which answers the moment a write lands. One replica, on the node whose volume holds
the catalog folder (docs/cluster.md); if it is down, recognition goes on from the copies and writes answer 503.

When the classifier's version differs from the one the stored embeddings came from, the stored photos are
re-embedded in the background after start; meanwhile the copies get only the photos already embedded by the
serving model: a catalog never mixes two models' embeddings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.calls import MODEL_CALL_TIMEOUT_S, as_raised, call
from deployments.catalog.enrollment_feedback import AskedPhoto, enrollment_feedback
from deployments.payloads import Classification, Detection, Refusal
from pipeline.core.catalog.history import history_entry, timestamp
from pipeline.core.catalog.match import (
    CatalogError,
    CatalogSnapshot,
    EnrolledProduct,
    StoredPhoto,
    embedding_space,
    gallery_index,
    sku_exists,
    valid_label,
    valid_sku,
)
from pipeline.core.catalog.store import CatalogStore
from pipeline.core.loop_modes import ENROLLMENT
from pipeline.core.model_label import DEFAULT_MODEL_DIR, load_model_label
from pipeline.core.photo_to_answer import Classified, ModelFacts, PhotoToAnswer, Recognized
from pipeline.core.preprocessing import ImageError
from pipeline.core.recognition import prominent_probabilities
from pipeline.core.settings import RecognizerSettings

logger = logging.getLogger("ray.serve")

DUPLICATE_SIMILARITY = 0.97
"""A photo this close (cosine) to a photo of another sku is refused as its near-duplicate: the same picture
enrolled under two skus would make the catalog's answer a coin toss between them."""


@dataclass(frozen=True)
class EmbeddedPhoto:
    """One enrollment photo after the models: its embedding, or why it has none."""

    index: int
    filename: str
    media_type: str
    data: bytes
    embedding: np.ndarray | None  # what is stored: its largest product's crop's embedding with the whole photo's
    reason: str | None = None  # no_product | unreadable
    detail: str | None = None
    query: np.ndarray | None = None  # its largest product's crop's embedding: what recognition matches
    probabilities: np.ndarray | None = None  # the classifier's answer for that product, as recognition answers it


def catalog_folder(catalog_dir: str) -> Path:
    """`catalog_dir` as serve_config.yaml gives it: relative paths are the repository root's."""
    path = Path(catalog_dir).expanduser()
    return path if path.is_absolute() else DEFAULT_MODEL_DIR.parent / path


def product_body(product: EnrolledProduct, with_photos: bool = False) -> dict[str, Any]:
    return {"sku": product.sku, "label": product.label, "photos": product.photos,
            "photo_ids": product.photo_ids if with_photos else None, "precedence": list(product.precedence),
            "created": timestamp(product.created), "updated": timestamp(product.updated)}


@serve.deployment
class Catalog:
    def __init__(self, detector: DeploymentHandle, classifier: DeploymentHandle, model_dir: str | None = None,
                 catalog_dir: str = "catalog_data", classifier_runtime: str = "savedmodel") -> None:
        faiss.omp_set_num_threads(1)
        self.detector, self.classifier = detector, classifier
        bundle = load_model_label(model_dir, verify_checksums=False)
        self.model_version = embedding_space(bundle.versions["classifier"], bundle.whole_photo_share)
        self.labels = bundle.labels  # the trained classes a product may take precedence over
        # The classifier's training photos, for the enrollment feedback under a rule that compares with them.
        gallery = bundle.gallery_path if bundle.catalog_rule.needs_gallery else None
        self.gallery = gallery_index(gallery, bundle.versions["classifier"], bundle.labels) if gallery else None
        # The largest product's crop is what a query is matched with, and with the whole photo what a product is
        # enrolled as, cut with the ingress's live settings (crop margin, decode and detector sizes), which each write
        # brings; re-embedding at start uses the last ones seen, the defaults (serve_config.yaml's) before any write.
        self.models = ModelFacts.of(bundle, classifier_runtime)
        self.loop = PhotoToAnswer(self.models, RecognizerSettings())
        self.store = CatalogStore(catalog_folder(catalog_dir))
        self.snapshot = self.store.snapshot(self.model_version)
        self.changed = asyncio.Event()  # set and replaced at every write: wakes the long-polls
        self.reembedding: asyncio.Task | None = None
        # Known once, here: every write after start is this model's (the store refuses another's), so only photos
        # stored before a model change can need embedding.
        self.to_reembed = len(self.store.photos_needing(self.model_version))
        info = self.store.info()
        logger.info("Catalog at %s: version %d, %d products, %d photos of %s; %d photos to embed with %s",
                    self.store.folder, info.version, info.products, info.photos, info.model_version,
                    self.to_reembed, self.model_version)

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

    async def info(self) -> dict[str, Any]:
        self._start_reembedding()
        info = await asyncio.to_thread(self.store.info)
        return {"version": info.version, "products": info.products, "photos": info.photos,
                "model_version": self.model_version, "matchable_photos": len(self.snapshot.skus),
                "photos_needing_embedding": len(await asyncio.to_thread(self.store.photos_needing, self.model_version)),
                "updated": timestamp(info.updated)}

    async def products(self, offset: int, limit: int) -> dict[str, Any]:
        total, products = await asyncio.to_thread(self.store.products, offset, limit)
        return {"total": total, "offset": offset, "limit": limit, "products": [product_body(p) for p in products]}

    async def product(self, sku: str) -> dict[str, Any] | Refusal:
        found = await self._refusing(self.store.product, sku)
        return found if isinstance(found, Refusal) else product_body(found, with_photos=True)

    async def photo(self, sku: str, photo_id: int) -> tuple[bytes, str] | Refusal:
        return await self._refusing(self.store.photo, photo_id, sku)

    async def history(self, offset: int, limit: int) -> dict[str, Any]:
        total, entries = await asyncio.to_thread(self.store.history, offset, limit)
        return {"total": total, "offset": offset, "limit": limit, "versions": [history_entry(e) for e in entries]}

    async def ready(self) -> str:
        self._start_reembedding()
        return f"catalog version {self.snapshot.version}"

    # ------------------------------------------------------------ writes

    async def enroll(self, sku: str, label: str, photos: list[tuple[int, str, str, bytes]], actor: str,
                     refused: list[dict[str, Any]] | None = None,
                     settings: RecognizerSettings | None = None, replace: bool = False) -> dict[str, Any] | Refusal:
        """Embed `photos` ((part index, filename, media type, bytes) each) and make the accepted ones `sku`'s photos: a new
        product, or, with `replace`, a replacement of its photos and label (re-enrolling; without it, 409 `sku_exists`,
        before any photo is embedded and again in the write's transaction). `refused`: the photo parts the ingress
        rejected before sending (too large), answered with the others. `settings`: the ingress's, so a photo is
        cropped as its queries will be."""
        try:
            valid_sku(sku), valid_label(label)  # before any photo is embedded
            if not replace and await self._enrolled(sku):
                raise sku_exists(sku)
        except CatalogError as error:
            return self._refusal(error)
        return await self._store_photos(sku, label, photos, actor, refused or [], self._loop_for(settings), replace=replace)

    async def add_photos(self, sku: str, photos: list[tuple[int, str, str, bytes]], actor: str,
                         refused: list[dict[str, Any]] | None = None,
                         settings: RecognizerSettings | None = None) -> dict[str, Any] | Refusal:
        found = await self._refusing(self.store.product, sku)
        if isinstance(found, Refusal):
            return found
        return await self._store_photos(sku, found.label, photos, actor, refused or [], self._loop_for(settings), add=True)

    async def remove_photo(self, sku: str, photo_id: int, actor: str) -> dict[str, Any] | Refusal:
        version = await self._write(self.store.remove_photo, sku, photo_id, actor)
        return version if isinstance(version, Refusal) else {"sku": sku, "catalog_version": version, "removed_photo": photo_id}

    async def delete(self, sku: str, actor: str) -> dict[str, Any] | Refusal:
        version = await self._write(self.store.delete, sku, actor)
        return version if isinstance(version, Refusal) else {"sku": sku, "catalog_version": version}

    async def set_precedence(self, sku: str, over: list[str], actor: str) -> dict[str, Any] | Refusal:
        """The trained classes the product takes precedence over, in place of those it had: only the serving
        classifier's (422 `unknown_class` naming the others). A new version, unless nothing changes."""
        unknown = sorted(set(over) - set(self.labels))
        if unknown:
            return Refusal(422, "unknown_class", f"not trained classes of the serving classifier: {unknown} "
                                                 "(GET /v1/labels lists them)", {"unknown": unknown})
        version = await self._refusing(self.store.set_precedence, sku, over, actor)
        if isinstance(version, Refusal):
            return version
        if version != self.snapshot.version:  # the same precedence again wrote nothing: the replicas' copies stand
            await self._publish()
        product = await self._refusing(self.store.product, sku)
        return product if isinstance(product, Refusal) else {"catalog_version": version, "product": product_body(product)}

    async def rollback(self, version: int, actor: str) -> dict[str, Any] | Refusal:
        new = await self._write(self.store.rollback, version, actor)
        return new if isinstance(new, Refusal) else {"catalog_version": new, "restored": version}

    # ------------------------------------------------------------ inside

    def _loop_for(self, settings: RecognizerSettings | None) -> PhotoToAnswer:
        """The loop with the writer's settings, kept for re-embedding (None: an older caller's, the last ones)."""
        if settings is not None and settings != self.loop.settings:
            self.loop = PhotoToAnswer(self.models, settings)
            logger.info("Catalog: embedding with the ingress's settings %s", settings)
        return self.loop

    async def _store_photos(self, sku: str, label: str, photos: list[tuple[int, str, str, bytes]], actor: str,
                            refused: list[dict[str, Any]], loop: PhotoToAnswer, add: bool = False,
                            replace: bool = False) -> dict[str, Any] | Refusal:
        before = self.snapshot  # the catalog the write finds: what the feedback asks the photos against
        embedded = await asyncio.gather(*(self._embed(loop, *photo) for photo in photos))
        rejected = refused + [{"index": p.index, "filename": p.filename, "reason": p.reason, "detail": p.detail}
                              for p in embedded if p.embedding is None]
        candidates = [p for p in embedded if p.embedding is not None]
        vectors = np.stack([p.embedding for p in candidates if p.embedding is not None]) if candidates else None
        duplicates = await asyncio.to_thread(self.store.near_duplicates, vectors, sku, DUPLICATE_SIMILARITY,
                                             model_version=self.model_version) if vectors is not None else []
        accepted = []
        for photo, duplicate in zip(candidates, duplicates):
            if duplicate is None:
                accepted.append(photo)
            else:
                rejected.append({"index": photo.index, "filename": photo.filename, "reason": "duplicate_of_other_sku",
                                 "detail": f"{duplicate.similarity:.3f} cosine to a photo of {duplicate.sku!r}",
                                 "similar_sku": duplicate.sku, "similarity": round(duplicate.similarity, 4)})
        rejected.sort(key=lambda r: r["index"])
        if not accepted:
            return Refusal(422, "no_photo_accepted", "none of the photos could be enrolled", {"rejected": rejected})
        stored = [StoredPhoto(p.data, p.media_type, p.embedding) for p in accepted]  # type: ignore[arg-type]
        if add:
            version = await self._write(self.store.add_photos, sku, stored, self.model_version, actor)
        else:
            version = await self._write(self.store.enroll, sku, label, stored, self.model_version, actor, replace)
        if isinstance(version, Refusal):
            return dataclasses.replace(version, detail={"rejected": rejected})
        asked = [AskedPhoto(p.index, p.query, p.probabilities, p.embedding) for p in accepted]  # type: ignore[arg-type]
        feedback = await asyncio.to_thread(enrollment_feedback, sku, label, asked, before, self.gallery, loop, add)
        return {"sku": sku, "label": label, "catalog_version": version,
                "accepted": [{"index": p.index, "filename": p.filename} for p in accepted], "rejected": rejected, **feedback}

    async def _enrolled(self, sku: str) -> bool:
        return not isinstance(await self._refusing(self.store.product, sku), Refusal)

    async def _write(self, write, *arguments) -> int | Refusal:
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
        return Refusal(error.status, error.code, str(error))

    async def _embed(self, loop: PhotoToAnswer, index: int, filename: str, media_type: str, data: bytes) -> EmbeddedPhoto:
        try:
            recognized = await self._recognized(data, loop)
        except ImageError as error:
            return EmbeddedPhoto(index, filename, media_type, data, None, "unreadable", error.message)
        if (embedding := recognized.enrolled_vector) is None:
            return EmbeddedPhoto(index, filename, media_type, data, None, "no_product", "the detector found no product in it")
        # The enrollment pass classifies the crop and the whole photo (loop_modes.ENROLLMENT); recognition answers the
        # largest product with the manifest's /hello policy's row of the two (photo_to_answer: `prominent`), which is
        # what it will answer for this photo's product: the same row here, not the enrollment pass's own "average".
        assert recognized.embeddings is not None  # an enrolled vector needs them
        probabilities = prominent_probabilities(recognized.probabilities[0], recognized.whole_photo, loop.models.hello_policy)
        return EmbeddedPhoto(index, filename, media_type, data, embedding, query=recognized.embeddings[0],
                             probabilities=probabilities)

    async def _embedding(self, data: bytes, loop: PhotoToAnswer) -> np.ndarray | None:
        """The photo's enrolled vector (its largest product's crop, cut as a query's is, with the whole photo); None when
        no product is detected."""
        return (await self._recognized(data, loop)).enrolled_vector

    async def _recognized(self, data: bytes, loop: PhotoToAnswer) -> Recognized:
        """The photo through the loop as an enrollment photo (loop_modes.ENROLLMENT). A model that does not answer within
        MODEL_CALL_TIMEOUT_S (a lost replica is retried once, deployments/calls.py) fails the write with the error as
        Ray raised it."""

        async def detect(images: list[np.ndarray]) -> list[np.ndarray]:
            found: list[Detection] = await call("Detector.detect", self.detector.detect, images,
                                                timeout_s=MODEL_CALL_TIMEOUT_S, failed=as_raised)
            return [detection.boxes for detection in found]

        async def classify(crops: list[np.ndarray]) -> Classified:
            result: Classification = await call("Classifier.classify", self.classifier.classify, crops,
                                                timeout_s=MODEL_CALL_TIMEOUT_S, failed=as_raised)
            return Classified(result.probabilities, result.embeddings)

        (recognized,), _ = await loop([data], detect, classify, ENROLLMENT)
        return recognized

    def _start_reembedding(self) -> None:
        """From the first call on the replica's event loop (a long-poll, a read, the ingress's ping)."""
        if self.to_reembed and self.reembedding is None:
            self.reembedding = asyncio.get_running_loop().create_task(self._reembed())

    async def _reembed(self) -> None:
        """The stored photos embedded by the serving model (the store commits a batch at a time and switches the
        catalog to this model at the end); the copies follow after it."""
        loop, started = asyncio.get_running_loop(), time.perf_counter()
        total, done = self.to_reembed, 0
        logger.info("Catalog: re-embedding %d stored photos with %s", total, self.model_version)

        def embed(photos: list[bytes]) -> list[np.ndarray | None]:  # called by the store in its thread
            return asyncio.run_coroutine_threadsafe(self._embed_stored(photos), loop).result()

        def progress(count: int) -> None:
            nonlocal done
            done += count
            logger.info("Catalog: re-embedded %d/%d photos (%.0f s)", done, total, time.perf_counter() - started)

        try:
            report = await asyncio.to_thread(self.store.reembed, embed, self.model_version, "reembed", 8, progress)
        except Exception:
            logger.exception("Catalog: re-embedding failed; the catalog keeps matching what %s has embedded", self.model_version)
            self.reembedding = None
            return
        logger.info("Catalog: re-embedded with %s: %d photos, %d without a product", self.model_version, report.embedded,
                    len(report.without_product))
        self.to_reembed = 0
        await self._publish()

    async def _embed_stored(self, photos: list[bytes]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for data in photos:
            try:
                out.append(await self._embedding(data, self.loop))
            except ImageError:
                out.append(None)
        return out
