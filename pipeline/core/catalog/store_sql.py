"""The SQL of the catalog's store (pipeline.core.catalog.store): its schema, and the reads and writes of its rows
inside the store's transactions. Every function takes the open connection; none commits."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import numpy as np

from pipeline.core.catalog.match import CatalogError, EnrolledProduct, InvalidPhoto, StoredPhoto, UnknownProduct

SCHEMA_VERSION = 2  # PRAGMA user_version
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- model_version: the catalog's embedding space
CREATE TABLE versions (  -- one per write, from 1 (0: the empty catalog)
    version INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, sku TEXT);
CREATE TABLE products (  -- a state of a product: in the catalog from version `since` until `until` (excluded, NULL: now)
    id INTEGER PRIMARY KEY, sku TEXT NOT NULL, label TEXT NOT NULL, since INTEGER NOT NULL REFERENCES versions,
    until INTEGER REFERENCES versions, enrolled INTEGER NOT NULL REFERENCES versions,  -- enrolled: kept by replacements
    precedence TEXT NOT NULL DEFAULT '[]');  -- JSON: the trained classes' labels the product takes precedence over
CREATE UNIQUE INDEX current_products ON products (sku) WHERE until IS NULL;
CREATE TABLE photos (
    id INTEGER PRIMARY KEY, data BLOB NOT NULL, sha256 TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE product_photos (
    product INTEGER NOT NULL REFERENCES products, photo INTEGER NOT NULL REFERENCES photos, position INTEGER NOT NULL,
    PRIMARY KEY (product, photo));
CREATE INDEX photo_products ON product_photos (photo);
CREATE TABLE embeddings (  -- vector: float32, L2-normalised, or NULL: that model finds no product in the photo
    photo INTEGER NOT NULL REFERENCES photos, model_version TEXT NOT NULL, vector BLOB, PRIMARY KEY (photo, model_version));
CREATE TABLE audit (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, sku TEXT,
    version INTEGER REFERENCES versions, details TEXT NOT NULL);
"""
MIGRATIONS = {  # from each schema version to the next, run when a store of that version is opened
    1: ("ALTER TABLE products ADD COLUMN precedence TEXT NOT NULL DEFAULT '[]'",),
}
CURRENT = "until IS NULL"
AS_OF = "since <= :v AND (until IS NULL OR until > :v)"


def open_schema(db: sqlite3.Connection, path: object) -> None:
    """A new store's schema made, or an older one's brought to SCHEMA_VERSION (inside the caller's transaction: all
    of it or none); a newer one than this code knows is refused."""
    schema = db.execute("PRAGMA user_version").fetchone()[0]
    if schema == 0:
        for statement in SCHEMA.split(";")[:-1]:
            db.execute(statement)
    elif schema > SCHEMA_VERSION or any(version not in MIGRATIONS for version in range(schema, SCHEMA_VERSION)):
        raise CatalogError(f"{path} has schema version {schema}; this code knows {SCHEMA_VERSION}")
    else:
        for version in range(schema, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def count(db: sqlite3.Connection, query: str) -> int:
    return int(db.execute(query).fetchone()[0])


def latest_version(db: sqlite3.Connection) -> int:
    return count(db, "SELECT coalesce(max(version), 0) FROM versions")


def current_vectors(db: sqlite3.Connection, model_version: str) -> list[tuple[str, str, bytes | None]]:
    """(sku, label, vector of `model_version` or None) of every current photo, by sku and position."""
    return db.execute(f"SELECT p.sku, p.label, e.vector FROM products p JOIN product_photos pp ON pp.product = p.id "
                      f"LEFT JOIN embeddings e ON e.photo = pp.photo AND e.model_version = ? "
                      f"WHERE {CURRENT} ORDER BY p.sku, pp.position", (model_version,)).fetchall()


def indexed_vectors(db: sqlite3.Connection) -> list[tuple[int, str, bytes]]:
    """(photo id, sku, vector) of every current photo embedded by the catalog's model: what faiss holds."""
    return db.execute(f"SELECT pp.photo, p.sku, e.vector FROM products p JOIN product_photos pp ON pp.product = p.id "
                      f"JOIN embeddings e ON e.photo = pp.photo AND e.model_version = "
                      f"(SELECT value FROM meta WHERE key = 'model_version') "
                      f"WHERE {CURRENT} AND e.vector IS NOT NULL").fetchall()


def current_photos(db: sqlite3.Connection) -> int:
    return count(db, f"SELECT count(*) FROM products JOIN product_photos ON product = id WHERE {CURRENT}")


def model_version(db: sqlite3.Connection) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'model_version'").fetchone()
    return row[0] if row else None


def needing(db: sqlite3.Connection, model_version: str, limit: int = -1) -> list[int]:
    rows = db.execute("SELECT pp.photo FROM product_photos pp JOIN products p ON p.id = pp.product WHERE NOT EXISTS "
                      "(SELECT 1 FROM embeddings e WHERE e.photo = pp.photo AND e.model_version = ?) "
                      "GROUP BY pp.photo ORDER BY max(p.until IS NULL) DESC, pp.photo LIMIT ?", (model_version, limit)).fetchall()
    return [row[0] for row in rows]


def check_dimension(db: sqlite3.Connection, model_version: str, dimension: int | None) -> None:
    """One model's embeddings all have one length."""
    row = db.execute("SELECT length(vector) / 4 FROM embeddings WHERE model_version = ? AND vector IS NOT NULL LIMIT 1",
                     (model_version,)).fetchone()
    if row and dimension is not None and row[0] != dimension:
        raise InvalidPhoto(f"embeddings of length {dimension}; {model_version}'s are {row[0]} long")


def current_row_or_none(db: sqlite3.Connection, sku: str) -> int | None:
    row = db.execute(f"SELECT id FROM products WHERE sku = ? AND {CURRENT}", (sku,)).fetchone()
    return row[0] if row else None


def current_row(db: sqlite3.Connection, sku: str) -> int:
    if (row := current_row_or_none(db, sku)) is None:
        raise UnknownProduct(f"no product {sku!r} in the catalog")
    return row


def product(db: sqlite3.Connection, row: int) -> EnrolledProduct:
    sku, label, created, updated, precedence = db.execute(
        "SELECT sku, label, (SELECT created FROM versions WHERE version = enrolled), "
        "(SELECT created FROM versions WHERE version = since), precedence FROM products WHERE id = ?", (row,)).fetchone()
    photos = db.execute("SELECT photo FROM product_photos WHERE product = ? ORDER BY position", (row,)).fetchall()
    return EnrolledProduct(sku, label, [photo for (photo,) in photos], created, updated, tuple(json.loads(precedence)))


def copy_product(db: sqlite3.Connection, row: int, since: int, photos: list[int] | None = None,
                 precedence: tuple[str, ...] | None = None) -> int:
    """A new state of the product of `row` from version `since`: its sku, label, enrollment and precedence (or
    `precedence`), with its photos in their order (or `photos`). The caller ends `row`'s state."""
    copy = int(db.execute("INSERT INTO products (sku, label, since, enrolled, precedence) SELECT sku, label, ?, enrolled, "
                          "coalesce(?, precedence) FROM products WHERE id = ?",
                          (since, None if precedence is None else json.dumps(list(precedence)), row)).lastrowid or 0)
    if photos is None:
        db.execute("INSERT INTO product_photos SELECT ?, photo, position FROM product_photos WHERE product = ?", (copy, row))
    else:
        db.executemany("INSERT INTO product_photos VALUES (?, ?, ?)", [(copy, p, at) for at, p in enumerate(photos)])
    return copy


def current_precedence(db: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """Per current product that takes precedence over some trained classes, their labels."""
    rows = db.execute(f"SELECT sku, precedence FROM products WHERE {CURRENT} AND precedence != '[]'").fetchall()
    return {sku: tuple(json.loads(precedence)) for sku, precedence in rows}


def new_version(db: sqlite3.Connection, actor: str, action: str, sku: str | None) -> int:
    return int(db.execute("INSERT INTO versions (created, actor, action, sku) VALUES (?, ?, ?, ?)",
                          (time.time(), actor, action, sku)).lastrowid or 0)


def audit(db: sqlite3.Connection, version: int, details: dict) -> None:
    """The audit record of `version`: who, what and when from the version, with the write's details."""
    db.execute("INSERT INTO audit (time, actor, action, sku, version, details) "
               "SELECT created, actor, action, sku, version, ? FROM versions WHERE version = ?",
               (json.dumps(details, sort_keys=True), version))


def insert_photo(db: sqlite3.Connection, row: int, position: int, photo: StoredPhoto, vector: np.ndarray,
                  model_version: str) -> int:
    photo_id = int(db.execute("INSERT INTO photos (data, sha256, media_type, size, created) VALUES (?, ?, ?, ?, ?)",
                              (photo.data, hashlib.sha256(photo.data).hexdigest(), photo.media_type, len(photo.data),
                               time.time())).lastrowid or 0)
    db.execute("INSERT INTO product_photos VALUES (?, ?, ?)", (row, photo_id, position))
    db.execute("INSERT INTO embeddings VALUES (?, ?, ?)", (photo_id, model_version, vector.tobytes()))
    return photo_id
