"""Matching crops against the catalog, and the catalog's records and errors: model-free, store-free.

The Catalog deployment's store (pipeline.core.catalog.store) hands out a `CatalogSnapshot`, one version of the
catalog's vectors; each replica builds a `CatalogIndex` from it and asks, per crop embedding, which enrolled
product is nearest (`best`), or the k nearest (`top`, for the evaluation). The store's records and errors are
here too: they cross Ray from the Catalog deployment to the ingress, which imports this module, not the store.

The search scans every vector (no approximate index: a catalog this size needs none). A scan this size costs the
memory it streams, so it reads an int8 copy of the vectors, a quarter of float32's bytes (faiss' scalar quantizer
`QT_8bit_direct_signed`: each vector scaled by one factor per snapshot so its largest component is 127, and
rounded; the query likewise, as faiss' SIMD path multiplies int8 by int8). The `CANDIDATES` best of that scan are
then scored again in float32 from the snapshot's own vectors, so a similarity is the float32 cosine, and the
answer is the exact nearest photo unless more than `CANDIDATES` photos lie within int8 rounding of it (about 1e-3
of cosine), when one of them (as near) is answered: photos that close are one product's, as enrollment refuses a
near-duplicate of another sku. `scan="fp16"` is the float16 scan this replaced (half float32's bytes), kept for
load_tests.catalog_cost to compare in one run. faiss runs one thread per call here: the replica sets
`faiss.omp_set_num_threads(1)`, its share of the CPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

SKU = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CANDIDATES = 32
"""Photos the int8 scan hands to the float32 rescoring, per query (more for `top`)."""
SCANS = {"int8": faiss.ScalarQuantizer.QT_8bit_direct_signed, "fp16": faiss.ScalarQuantizer.QT_fp16}
"""What the scan reads, by name: faiss' scalar quantizer that holds the vectors."""
INT8_TOP = 127.0
ENROLLED_AS = "crop+whole"
"""How an enrolled photo becomes its vector (pipeline.core.photo_to_answer's `Recognized.enrolled_vector`). Part of
the catalog's embedding space: a catalog embedded another way is embedded again at start, as for a new classifier."""


def embedding_space(classifier_version: str, whole_photo_share: float = 1.0) -> str:
    """What a catalog's vectors are pinned to: the classifier that embeds them and how an enrolled photo is embedded
    (its whole-photo view's share, when not the whole photo)."""
    return f"{classifier_version}/{ENROLLED_AS}" + (f"@{whole_photo_share:g}" if whole_photo_share != 1 else "")


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    """One catalog version's vectors, as the replicas match against them (picklable: it travels over Ray).

    `vectors` [M, D] float32, L2-normalised, one row per enrolled photo that has an embedding of `model_version`;
    `skus` and `labels` name each row's product. `missing_photos`: the current photos without an embedding of
    this model (not re-embedded yet, or the model finds no product in them). `precedence`: per sku, the trained
    classes (their labels) the operator said the product takes precedence over (pipeline.core.catalog.rule)."""

    version: int
    model_version: str
    vectors: np.ndarray
    skus: list[str]
    labels: list[str]
    missing_photos: int = 0
    precedence: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.dtype != np.float32:
            raise ValueError(f"vectors must be float32 [M, D]; got {self.vectors.dtype} {self.vectors.shape}")
        if not len(self.skus) == len(self.labels) == len(self.vectors):
            raise ValueError(f"{len(self.vectors)} vectors, {len(self.skus)} skus and {len(self.labels)} labels")

    @classmethod
    def empty(cls, model_version: str, version: int = 0, dimension: int = 0) -> CatalogSnapshot:
        return cls(version, model_version, np.empty((0, dimension), np.float32), [], [])

    @property
    def products(self) -> int:
        return len(set(self.skus))

    def without(self, sku: str) -> CatalogSnapshot:
        """This snapshot less `sku`'s photos: the catalog a product's own photos are asked against."""
        kept = [i for i, row_sku in enumerate(self.skus) if row_sku != sku]
        return CatalogSnapshot(self.version, self.model_version, self.vectors[kept], [self.skus[i] for i in kept],
                               [self.labels[i] for i in kept], precedence={s: c for s, c in self.precedence.items() if s != sku})

    def vectors_of(self, sku: str) -> np.ndarray:
        """`sku`'s photos' vectors [k, D]."""
        return self.vectors[[i for i, row_sku in enumerate(self.skus) if row_sku == sku]]


@dataclass(frozen=True)
class CatalogMatch:
    """The enrolled product nearest a crop: its sku and label, and the cosine similarity of its nearest photo."""

    sku: str
    label: str
    similarity: float


@dataclass
class CatalogIndex:
    """A snapshot, searchable: the best product per crop embedding (max cosine over each product's photos)."""

    snapshot: CatalogSnapshot
    scan: str = "int8"
    _index: faiss.Index | None = field(init=False, default=None, repr=False)
    _photos_per_sku: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if self.scan not in SCANS:
            raise ValueError(f"unknown scan {self.scan!r}; one of {sorted(SCANS)}")
        vectors = self.snapshot.vectors
        if len(vectors):
            self._index = faiss.IndexScalarQuantizer(vectors.shape[1], SCANS[self.scan], faiss.METRIC_INNER_PRODUCT)
            self._index.add(self._as_scanned(vectors))
            self._photos_per_sku = int(np.unique(np.asarray(self.snapshot.skus), return_counts=True)[1].max())

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def empty(self) -> bool:
        """No product enrolled: nothing to match with, so the loop skips matching."""
        return self._index is None

    def nearest_similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """Per embedding [N, D], the cosine similarity of the nearest vector (-1 on an empty index): the same
        fp16 scan and float32 rescoring as `top`, without its per-sku bookkeeping (what the gallery is asked)."""
        queries = unit_rows(embeddings)
        if self._index is None or not len(queries):
            return np.full(len(queries), -1.0, np.float32)
        _, exact = self._rescored(queries, CANDIDATES)
        return exact.max(axis=1).astype(np.float32)

    def best(self, embeddings: np.ndarray) -> list[CatalogMatch | None]:
        """Per embedding [N, D], the nearest product; None for every one when the catalog is empty."""
        return [matches[0] if matches else None for matches in self.top(embeddings, 1)]

    def top(self, embeddings: np.ndarray, k: int) -> list[list[CatalogMatch]]:
        """Per embedding, the k nearest products (distinct skus, nearest first; fewer when fewer are enrolled)."""
        queries = unit_rows(embeddings)
        if self._index is None or not len(queries):
            return [[] for _ in queries]
        # The k-th distinct sku's nearest photo ranks at most (k - 1) * (photos per sku) + 1: within this many.
        rows, exact = self._rescored(queries, CANDIDATES + (k - 1) * self._photos_per_sku)
        return [self._distinct(row, score, k) for row, score in zip(rows, exact)]

    def _rescored(self, queries: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        """The `wanted` nearest rows of the fp16 scan for each unit query, and their float32 cosines."""
        assert self._index is not None
        if queries.shape[1] != self.snapshot.vectors.shape[1]:
            raise ValueError(f"embeddings of dimension {queries.shape[1]}; the catalog's are {self.snapshot.vectors.shape[1]}")
        _, rows = self._index.search(self._as_scanned(queries, per_row=True), min(len(self.snapshot.vectors), wanted))
        return rows, np.einsum("nd,nkd->nk", queries, self.snapshot.vectors[rows])

    def _as_scanned(self, vectors: np.ndarray, per_row: bool = False) -> np.ndarray:
        """Vectors as the scan takes them: on the int8 grid (`_int8_grid`) for the int8 scan, as they are for fp16."""
        return _int8_grid(vectors, per_row) if self.scan == "int8" else np.ascontiguousarray(vectors, np.float32)

    def _distinct(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[CatalogMatch]:
        matches: dict[str, CatalogMatch] = {}
        for at in np.argsort(-scores, kind="stable"):
            sku = self.snapshot.skus[rows[at]]
            if sku not in matches:
                matches[sku] = CatalogMatch(sku, self.snapshot.labels[rows[at]], float(scores[at]))
                if len(matches) == k:
                    break
        return list(matches.values())


def _int8_grid(vectors: np.ndarray, per_row: bool = False) -> np.ndarray:
    """Vectors as the int8 scan holds them: scaled so the largest component is 127 and rounded to whole numbers
    (float32, which faiss' direct quantizer stores as int8). A snapshot's rows share one factor, or their ranking
    would change; queries (`per_row`) get one each, which changes no query's ranking and keeps each one's precision."""
    top = np.abs(vectors).max(axis=1, keepdims=True) if per_row else np.abs(vectors).max(initial=0.0)
    return np.ascontiguousarray(np.rint(vectors * (INT8_TOP / np.where(top > 0, top, 1.0))), np.float32)


def unit_rows(embeddings: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Embeddings as contiguous float32 rows [N, D] of length 1 (a zero row stays zero)."""
    vectors = np.atleast_2d(np.asarray(embeddings, np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1))


# The store's records and errors (pipeline.core.catalog.store).


class CatalogError(Exception):
    """A request the catalog refuses; `code` and `status` are what the HTTP layer answers."""

    code, status = "catalog_error", 400


class InvalidProduct(CatalogError):
    code, status = "invalid_product", 422


class TooManyPhotos(InvalidProduct):
    code = "too_many_photos"


class InvalidPhoto(CatalogError):
    code, status = "invalid_photo", 422


class UnknownProduct(CatalogError):
    code, status = "unknown_product", 404


class UnknownPhoto(CatalogError):
    code, status = "unknown_photo", 404


class UnknownVersion(CatalogError):
    code, status = "unknown_version", 422


class CatalogFull(CatalogError):
    code, status = "catalog_full", 409


class SkuExists(CatalogError):
    """An enrollment of an enrolled sku that did not say it replaces it."""

    code, status = "sku_exists", 409


def sku_exists(sku: str) -> SkuExists:
    return SkuExists(f"{sku} is enrolled: send replace=true to replace its label and photos, or add photos to it "
                     f"(POST /v1/catalog/products/{sku}/photos)")


class LastPhoto(CatalogError):
    """The removal of a product's only photo: a product has at least one; deleting it is another write."""

    code, status = "last_photo", 409


class UnknownClass(CatalogError):
    """A precedence over a label that is not one of the serving classifier's trained classes."""

    code, status = "unknown_class", 422


class ModelMismatch(CatalogError):
    """Embeddings of another model than the catalog's: the catalog must be re-embedded for it first."""

    code, status = "model_mismatch", 409


@dataclass(frozen=True)
class StoredPhoto:
    """A photo to enroll: its bytes, media type and embedding (by the model of the write's `model_version`)."""

    data: bytes
    media_type: str
    embedding: np.ndarray


@dataclass(frozen=True)
class EnrolledProduct:
    """A product in the catalog as the store keeps it (the HTTP body is deployments.schemas.Product)."""

    sku: str
    label: str
    photo_ids: list[int]
    created: float  # when the sku was enrolled (a replacement keeps it)
    updated: float  # when it last changed
    precedence: tuple[str, ...] = ()  # the trained classes (labels) it takes precedence over (pipeline.core.catalog.rule)

    @property
    def photos(self) -> int:
        return len(self.photo_ids)


@dataclass(frozen=True)
class CatalogSummary:
    """What the catalog holds now (the HTTP body is deployments.schemas.CatalogInfo)."""

    version: int
    products: int
    photos: int
    model_version: str | None
    updated: float | None  # when the latest version was made; None: never written


@dataclass(frozen=True)
class HistoryEntry:
    """One version of the catalog, with its audit record."""

    version: int
    time: float
    actor: str
    action: str  # enroll, add_photos, remove_photo, precedence, delete, rollback, reembed
    sku: str | None
    details: dict


@dataclass(frozen=True)
class NearDuplicate:
    sku: str
    similarity: float
    photo_id: int


@dataclass(frozen=True)
class ReembedReport:
    model_version: str
    embedded: int  # photos this call gave an embedding of model_version
    without_product: list[int]  # photo ids the model finds no product in: they have no embedding of it
    version: int | None  # the version that switched the catalog to model_version; None: it already was


def valid_sku(sku: str) -> str:
    """`sku` if it is one (InvalidProduct if not): checked before any photo is embedded."""
    if not isinstance(sku, str) or not SKU.fullmatch(sku):
        raise InvalidProduct(f"sku {sku!r}: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return sku


def valid_label(label: str) -> str:
    """The label as stored (stripped), if it is one (InvalidProduct if not)."""
    if not isinstance(label, str) or not 0 < len(label.strip()) <= 200 or not label.isprintable():
        raise InvalidProduct("a label is 1 to 200 printable characters")
    return label.strip()


def valid_precedence(over: Sequence[str], most: int = 1000) -> tuple[str, ...]:
    """The trained classes' labels a product takes precedence over, as stored: each once, sorted (InvalidProduct if
    they are not 0 to `most` labels of 1 to 200 printable characters). Whether the classifier has them is the
    caller's to check: the store knows no model."""
    if isinstance(over, str) or not isinstance(over, Sequence) or len(over) > most:
        raise InvalidProduct(f"a precedence is a list of at most {most} trained class labels")
    for label in over:
        if not isinstance(label, str) or not 0 < len(label) <= 200 or not label.isprintable():
            raise InvalidProduct(f"a trained class label is 1 to 200 printable characters, not {label!r}")
    return tuple(sorted(set(over)))


def gallery_index(path: Path | str, model_version: str, labels: Sequence[str] | None = None) -> CatalogIndex:
    """The classifier's gallery (pipeline.release.catalog_gallery: its fit photos' embeddings) as an index, each vector
    named by its class id and labelled with its class's label (`labels`; the id without them): what the catalog rules
    that need the gallery compare a crop's catalog match with."""
    with np.load(path) as gallery:
        vectors, class_ids = gallery["embeddings"].astype(np.float32), [str(c) for c in gallery["class_ids"]]
    names = class_ids if labels is None else [labels[int(c)] for c in class_ids]
    return CatalogIndex(CatalogSnapshot(0, model_version, vectors, class_ids, names))
