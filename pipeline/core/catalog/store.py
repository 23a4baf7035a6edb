"""The product catalog's store: SQLite for what must last, faiss in memory for the near-duplicate search.

The catalog is written now and then by an operator and owned by one process (the Catalog deployment): a database
in a file on its volume is all it needs. SQLite in WAL mode (stdlib `sqlite3`) gives transactions (a write is all
there or not there, even when the process is killed mid-write), readers that do not wait for the writer, and no
server to run; it keeps every fact (product states per version, the photos' bytes for re-embedding, embeddings
per model version, versions, the audit log). faiss (`IndexIDMap2(IndexFlatIP)`, exact, ids = photo ids) holds
the current model's vectors for `near_duplicates`: rebuilt at open and after another process's write, changed
only after a commit.

`synchronous=FULL`: a write is on disk when it returns. Under NORMAL a power loss may undo the last commits and
their version numbers, which would then name other content while replicas hold snapshots under the old ones.

When a vector database server should replace this (behind the same methods): every matching replica keeps the
vectors, float32 to score and int8 to scan (pipeline.core.catalog.match), 1,280 x 5 B = 6.3 KB per photo, and
scans 1.25 KB per photo for every crop: 63 MB and a 13 MB scan at the targets' 10,000 photos, 630 MB per replica
and a 125 MB scan per crop at 100,000. Past some 20,000-50,000 photos one server holding the vectors once, with
an approximate index, costs less; `max_photos` keeps this store below that.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from pipeline.core.catalog import store_sql as sql
from pipeline.core.catalog.match import (
    CatalogError,
    CatalogFull,
    CatalogSnapshot,
    CatalogSummary,
    EnrolledProduct,
    HistoryEntry,
    InvalidPhoto,
    LastPhoto,
    ModelMismatch,
    NearDuplicate,
    ReembedReport,
    StoredPhoto,
    TooManyPhotos,
    UnknownPhoto,
    UnknownVersion,
    sku_exists,
    valid_label,
    valid_precedence,
    valid_sku,
)

MEDIA_TYPE = re.compile(r"image/[a-z0-9.+-]{1,40}")


class CatalogStore:
    """The catalog in `folder` (catalog.sqlite3 and its WAL): one instance per process, safe to share by threads.

    A write holds a lock and one `BEGIN IMMEDIATE` transaction (which also orders it against another process's
    writes) and makes one new version; reads use one connection per thread, each read one transaction, and do not
    wait for writes. The faiss index changes under the same lock, after the commit."""

    def __init__(self, folder: Path | str, max_products: int = 10_000, max_photos_per_product: int = 50,
                 max_photos: int = 20_000, max_photo_bytes: int = 10 * 1024 * 1024, busy_timeout_s: float = 30.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "catalog.sqlite3"
        self.max_products, self.max_photos_per_product = max_products, max_photos_per_product
        self.max_photos, self.max_photo_bytes = max_photos, max_photo_bytes
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._index: faiss.IndexIDMap2 | None = None
        self._photo_skus: dict[int, str] = {}
        self._seen_data_version: int | None = None
        self._generation = 0  # commits seen, this process's and (by PRAGMA data_version) others'
        self._snapshots: dict[str, tuple[int, CatalogSnapshot]] = {}
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._lock, self._transaction(sync=False) as db:
            sql.open_schema(db, self.path)  # made, or migrated from an older version
            self._sync_index()

    # Reads

    def info(self) -> CatalogSummary:
        with self._read() as db:
            version, updated = db.execute("SELECT max(version), max(created) FROM versions").fetchone()
            products = sql.count(db, f"SELECT count(*) FROM products WHERE {sql.CURRENT}")
            return CatalogSummary(version or 0, products, sql.current_photos(db), sql.model_version(db), updated)

    def products(self, offset: int = 0, limit: int = 50) -> tuple[int, list[EnrolledProduct]]:
        """(how many products there are, those from `offset` in sku order, at most `limit`)."""
        with self._read() as db:
            rows = db.execute(f"SELECT id FROM products WHERE {sql.CURRENT} ORDER BY sku LIMIT ? OFFSET ?",
                              (max(0, limit), max(0, offset))).fetchall()
            return sql.count(db, f"SELECT count(*) FROM products WHERE {sql.CURRENT}"), [sql.product(db, row) for (row,) in rows]

    def product(self, sku: str) -> EnrolledProduct:
        with self._read() as db:
            return sql.product(db, sql.current_row(db, sku))

    def photo(self, photo_id: int, sku: str | None = None) -> tuple[bytes, str]:
        """A stored photo's bytes and media type; with `sku`, only one of that product's current photos."""
        with self._read() as db:
            if sku is not None and photo_id not in sql.product(db, sql.current_row(db, sku)).photo_ids:
                raise UnknownPhoto(f"{sku} has no photo {photo_id}")
            row = db.execute("SELECT data, media_type FROM photos WHERE id = ?", (photo_id,)).fetchone()
            if row is None:
                raise UnknownPhoto(f"no photo {photo_id}")
            return row[0], row[1]

    def history(self, offset: int = 0, limit: int = 50) -> tuple[int, list[HistoryEntry]]:
        """(how many versions there are, their audit records from `offset`, newest first, at most `limit`)."""
        with self._read() as db:
            rows = db.execute("SELECT version, time, actor, action, sku, details FROM audit ORDER BY id DESC LIMIT ? OFFSET ?",
                              (max(0, limit), max(0, offset))).fetchall()
            return (sql.count(db, "SELECT count(*) FROM audit"),
                    [HistoryEntry(row[0], row[1], row[2], row[3], row[4], json.loads(row[5])) for row in rows])

    def snapshot(self, model_version: str) -> CatalogSnapshot:
        """The current products' vectors of `model_version` (never another model's), read in one transaction;
        `missing_photos` counts the current photos without one. The same object again until the next commit (of
        this process or another): every replica asks for it after each change. Its vectors are read-only."""
        with self._lock:
            self._sync_index()
            generation, cached = self._generation, self._snapshots.get(model_version)
            if cached is not None and cached[0] == generation:
                return cached[1]
        with self._read() as db:
            version, rows, precedence = sql.latest_version(db), sql.current_vectors(db, model_version), sql.current_precedence(db)
        found = [(sku, label, vector) for sku, label, vector in rows if vector is not None]
        vectors = np.frombuffer(b"".join(row[2] for row in found), np.float32).reshape(len(found), -1 if found else 0)
        snapshot = CatalogSnapshot(version, model_version, vectors, [row[0] for row in found], [row[1] for row in found],
                                   len(rows) - len(found), precedence)
        with self._lock:
            self._sync_index()
            if self._generation == generation:  # nothing committed since it was read
                self._snapshots[model_version] = (generation, snapshot)
        return snapshot

    def photos_needing(self, model_version: str) -> list[int]:
        """Photo ids with no embedding of `model_version` (nor the finding that it sees no product there): the
        current products' first, then those only earlier versions hold (a rollback may bring them back)."""
        with self._read() as db:
            return sql.needing(db, model_version)

    def near_duplicates(self, embeddings: np.ndarray, exclude_sku: str | None, threshold: float, *,
                        model_version: str) -> list[NearDuplicate | None]:
        """Per embedding [N, D] of `model_version`: the nearest photo of a current product other than `exclude_sku`,
        when its cosine similarity is `threshold` or more (enrollment refuses such a photo), else None."""
        queries = _unit_rows(embeddings)
        with self._lock:
            self._sync_index()
            catalog_model, index, skus = sql.model_version(self._db), self._index, self._photo_skus
            if catalog_model is not None and catalog_model != model_version:
                raise ModelMismatch(f"the catalog holds embeddings of {catalog_model}, not of {model_version}")
            if index is None or index.ntotal == 0 or not len(queries):
                return [None] * len(queries)
            if queries.shape[1] != index.d:
                raise InvalidPhoto(f"embeddings of dimension {queries.shape[1]}; the catalog's are {index.d}")
            excluded = sum(sku == exclude_sku for sku in skus.values())  # the nearest other sku is within one more
            similarities, ids = index.search(queries, min(index.ntotal, excluded + 1))
            found: list[NearDuplicate | None] = []
            for row_ids, row_similarities in zip(ids.tolist(), similarities.tolist()):
                hit = next(((i, s) for i, s in zip(row_ids, row_similarities) if i >= 0 and skus[i] != exclude_sku), None)
                found.append(NearDuplicate(skus[hit[0]], hit[1], hit[0]) if hit and hit[1] >= threshold else None)
            return found

    # Writes: each one transaction, and one new version (a precedence unchanged: none)

    def enroll(self, sku: str, label: str, photos: list[StoredPhoto], model_version: str, actor: str,
               replace: bool = True) -> int:
        """Puts the product in the catalog with these photos, replacing its label and photos if it is there (or,
        without `replace`, refusing with SkuExists, checked in the write's transaction); returns the new version."""
        return self._put(valid_sku(sku), valid_label(label), photos, model_version, _valid_actor(actor), replace)

    def add_photos(self, sku: str, photos: list[StoredPhoto], model_version: str, actor: str) -> int:
        """Adds photos to an enrolled product; returns the new catalog version."""
        return self._put(valid_sku(sku), None, photos, model_version, _valid_actor(actor))

    def delete(self, sku: str, actor: str) -> int:
        """Takes the product out of the catalog (its history stays, for rollback); returns the new version."""
        sku, actor = valid_sku(sku), _valid_actor(actor)
        with self._lock:
            with self._transaction() as db:
                old = sql.current_row(db, sku)
                photo_ids = sql.product(db, old).photo_ids
                version = sql.new_version(db, actor, "delete", sku)
                db.execute("UPDATE products SET until = ? WHERE id = ?", (version, old))
                sql.audit(db, version, {"photo_ids": photo_ids})
                self._before_commit("delete")
            self._index_remove(photo_ids)
        return version

    def remove_photo(self, sku: str, photo_id: int, actor: str) -> int:
        """Takes one photo from the product (the others keep their order); returns the new version. Its only photo
        is refused (LastPhoto): a product without photos would match nothing, so that is a delete."""
        sku, actor = valid_sku(sku), _valid_actor(actor)
        with self._lock:
            with self._transaction() as db:
                old = sql.current_row(db, sku)
                product = sql.product(db, old)
                if photo_id not in product.photo_ids:
                    raise UnknownPhoto(f"{sku} has no photo {photo_id}")
                if product.photos == 1:
                    raise LastPhoto(f"photo {photo_id} is {sku}'s only photo: delete the product instead "
                                    f"(DELETE /v1/catalog/products/{sku})")
                version = sql.new_version(db, actor, "remove_photo", sku)
                db.execute("UPDATE products SET until = ? WHERE id = ?", (version, old))
                sql.copy_product(db, old, version, photos=[p for p in product.photo_ids if p != photo_id])
                sql.audit(db, version, {"label": product.label, "removed_photo_ids": [photo_id]})
                self._before_commit("remove_photo")
            self._index_remove([photo_id])
        return version

    def set_precedence(self, sku: str, over: Sequence[str], actor: str) -> int:
        """Says which trained classes (their labels) the product takes precedence over, in place of what it said
        (`[]`: none), as a new version of the product; returns it. Unchanged, nothing is written and the current
        version is returned: the same request again (a retry after a lost answer) is no new version."""
        sku, over, actor = valid_sku(sku), valid_precedence(over), _valid_actor(actor)
        with self._lock, self._transaction() as db:
            old = sql.current_row(db, sku)
            product = sql.product(db, old)
            if product.precedence == over:
                return sql.latest_version(db)
            version = sql.new_version(db, actor, "precedence", sku)
            db.execute("UPDATE products SET until = ? WHERE id = ?", (version, old))
            sql.copy_product(db, old, version, precedence=over)
            sql.audit(db, version, {"label": product.label, "precedence": list(over), "previous": list(product.precedence)})
            self._before_commit("precedence")
        return version

    def rollback(self, version: int, actor: str) -> int:
        """Makes the products as of `version` (labels, photos, precedence) the current ones again; returns the new version.
        The limits are not checked again: that set once kept them."""
        actor = _valid_actor(actor)
        with self._lock:
            with self._transaction() as db:
                latest = sql.latest_version(db)
                if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= latest:
                    raise UnknownVersion(f"no catalog version {version!r}: the versions are 0 to {latest}")
                current = dict(db.execute(f"SELECT id, sku FROM products WHERE {sql.CURRENT}").fetchall())
                wanted = dict(db.execute(f"SELECT id, sku FROM products WHERE {sql.AS_OF}", {"v": version}).fetchall())
                removed, restored = current.keys() - wanted.keys(), wanted.keys() - current.keys()
                new = sql.new_version(db, actor, "rollback", None)
                sql.audit(db, new, {"to_version": version, "removed": sorted(current[row] for row in removed),
                                 "restored": sorted(wanted[row] for row in restored)})
                for row in removed:
                    db.execute("UPDATE products SET until = ? WHERE id = ?", (new, row))
                for row in restored:  # as they were then: label, photos, precedence
                    sql.copy_product(db, row, new)
                self._before_commit("rollback")
            self._rebuild_index()
        return new

    def reembed(self, embed: Callable[[list[bytes]], list[np.ndarray | None]], model_version: str, actor: str = "reembed",
                batch: int = 16, progress: Callable[[int], object] | None = None) -> ReembedReport:
        """Embeds every stored photo lacking an embedding of `model_version` with `embed` (photos' bytes → per
        photo an embedding, or None where the model finds no product), a transaction per `batch` photos, telling
        `progress` how many were done; then, if the catalog was another model's, switches it to this one (a new
        version). Interrupted, it keeps what it did and the next call goes on from there."""
        embedded, without = 0, []
        while True:
            needing = self.photos_needing(model_version)
            for ids in (needing[start:start + batch] for start in range(0, len(needing), batch)):
                with self._read() as db:
                    data = [db.execute("SELECT data FROM photos WHERE id = ?", (i,)).fetchone()[0] for i in ids]
                vectors = embed(data)  # no transaction open meanwhile
                if len(vectors) != len(ids):
                    raise ValueError(f"embed answered {len(vectors)} embeddings for {len(ids)} photos")
                rows = [(i, model_version, None if v is None else _unit_rows(v)) for i, v in zip(ids, vectors)]
                with self._lock, self._transaction() as db:
                    for row in rows:
                        sql.check_dimension(db, model_version, None if row[2] is None else row[2].shape[1])
                    db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                                   [(i, m, None if v is None else v.tobytes()) for i, m, v in rows])
                without += [i for i, v in zip(ids, vectors) if v is None]
                embedded += len(ids) - sum(v is None for v in vectors)
                if progress is not None:
                    progress(len(ids))
            with self._lock:
                with self._transaction() as db:
                    if sql.needing(db, model_version, 1):
                        continue  # photos enrolled meanwhile
                    if (previous := sql.model_version(db)) == model_version:
                        return ReembedReport(model_version, embedded, without, None)
                    version = sql.new_version(db, actor, "reembed", None)
                    sql.audit(db, version, {"model_version": model_version, "previous": previous, "embedded": embedded,
                                         "without_product": without})
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('model_version', ?)", (model_version,))
                self._rebuild_index()
            return ReembedReport(model_version, embedded, without, version)

    def close(self) -> None:
        with self._lock:
            for db in [self._db, *self._readers]:
                db.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Inside

    def _put(self, sku: str, label: str | None, photos: list[StoredPhoto], model_version: str, actor: str,
             replace: bool = True) -> int:
        """enroll (a label: the photos replace the product's) or add_photos (None: they join them)."""
        action = "add_photos" if label is None else "enroll"
        with self._lock:
            with self._transaction() as db:
                old = sql.current_row(db, sku) if label is None else sql.current_row_or_none(db, sku)
                if old is not None and label is not None and not replace:
                    raise sku_exists(sku)
                old_photos = sql.product(db, old).photo_ids if old else []
                kept, replaced = (old_photos, []) if label is None else ([], old_photos)
                vectors = self._valid_photos(photos, len(kept))
                if (catalog_model := sql.model_version(db)) is None:
                    db.execute("INSERT INTO meta VALUES ('model_version', ?)", (model_version,))
                elif catalog_model != model_version:
                    raise ModelMismatch(f"the catalog holds embeddings of {catalog_model}; re-embed it for {model_version} first")
                sql.check_dimension(db, model_version, vectors.shape[1])
                if old is None and sql.count(db, f"SELECT count(*) FROM products WHERE {sql.CURRENT}") >= self.max_products:
                    raise CatalogFull(f"the catalog holds {self.max_products:,} products, its limit")
                if len(photos) > len(replaced) and sql.current_photos(db) + len(photos) - len(replaced) > self.max_photos:
                    raise CatalogFull(f"the catalog would hold more than {self.max_photos:,} photos, its limit")
                version = sql.new_version(db, actor, action, sku)
                old_label, enrolled, precedence = db.execute(  # a replacement or an addition keeps the precedence
                    "SELECT label, enrolled, precedence FROM products WHERE id = ?", (old,)).fetchone() or (label, version, "[]")
                db.execute("UPDATE products SET until = ? WHERE id = ?", (version, old))
                row = int(db.execute("INSERT INTO products (sku, label, since, enrolled, precedence) VALUES (?, ?, ?, ?, ?)",
                                     (sku, label or old_label, version, enrolled, precedence)).lastrowid or 0)
                db.executemany("INSERT INTO product_photos VALUES (?, ?, ?)", [(row, p, at) for at, p in enumerate(kept)])
                ids = [sql.insert_photo(db, row, len(kept) + at, photo, vector, model_version)
                       for at, (photo, vector) in enumerate(zip(photos, vectors))]
                sql.audit(db, version, {"label": label or old_label, "model_version": model_version, "photo_ids": ids,
                                     "replaced_photo_ids": replaced})
                self._before_commit(action)
            self._index_remove(replaced)
            self._index_add(ids, vectors, sku)
        return version

    def _before_commit(self, action: str) -> None:
        """Runs inside each write's transaction after its last statement: where a test kills the process."""

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_s)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _transaction(self, sync: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction on the writer connection (the caller holds the lock). It starts by bringing the
        faiss index up to date with any other process's commits: none can come in until it ends."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if sync:
                self._sync_index()
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._generation += 1

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction on this thread's connection: one consistent state of the catalog."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            db.execute("PRAGMA query_only=ON")
            with self._lock:
                self._readers.append(db)
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _valid_photos(self, photos: list[StoredPhoto], already: int) -> np.ndarray:
        """The photos' embeddings as unit rows, once the photos are found fit to keep."""
        if not photos:
            raise InvalidPhoto("no photo")
        if already + len(photos) > self.max_photos_per_product:
            raise TooManyPhotos(f"{already + len(photos)} photos; a product has at most {self.max_photos_per_product}")
        for photo in photos:
            if not isinstance(photo.data, bytes) or not 0 < len(photo.data) <= self.max_photo_bytes:
                raise InvalidPhoto(f"a photo is 1 to {self.max_photo_bytes:,} bytes")
            if not isinstance(photo.media_type, str) or not MEDIA_TYPE.fullmatch(photo.media_type):
                raise InvalidPhoto(f"media type {photo.media_type!r} is not an image/... type")
        shapes = {np.shape(photo.embedding) for photo in photos}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise InvalidPhoto(f"the embeddings must be vectors of one length; got shapes {sorted(shapes)}")
        return _unit_rows(np.stack([photo.embedding for photo in photos]))

    def _sync_index(self) -> None:
        """Rebuilds the faiss index if another connection (another process) committed since it was built."""
        data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._seen_data_version:
            self._rebuild_index()
            self._seen_data_version, self._generation = data_version, self._generation + 1

    def _rebuild_index(self) -> None:
        self._index, self._photo_skus = None, {}
        rows = sql.indexed_vectors(self._db)
        if rows:
            self._index_add([row[0] for row in rows], np.stack([np.frombuffer(row[2], np.float32) for row in rows]), "")
            self._photo_skus = {row[0]: row[1] for row in rows}

    def _index_add(self, ids: list[int], vectors: np.ndarray, sku: str) -> None:
        if self._index is None:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
        self._photo_skus.update(dict.fromkeys(ids, sku))

    def _index_remove(self, ids: list[int]) -> None:
        if self._index is not None and ids:
            self._index.remove_ids(np.asarray(ids, np.int64))  # type: ignore[arg-type]  # faiss' wrapper takes ids
        for photo_id in ids:
            self._photo_skus.pop(photo_id, None)


def _valid_actor(actor: str) -> str:
    if not isinstance(actor, str) or not 0 < len(actor) <= 200:
        raise CatalogError("an actor is 1 to 200 characters")
    return actor


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Embeddings as float32 rows [N, D] of length 1; a zero or non-finite one is refused."""
    vectors = np.atleast_2d(np.asarray(embeddings, np.float32))
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if vectors.ndim != 2 or not np.isfinite(vectors).all() or not (norms > 0).all():
        raise InvalidPhoto("an embedding is a finite, non-zero vector")
    return np.ascontiguousarray(vectors / norms)
