"""The SQL of the catalog's store (pipeline.core.catalog.store): its schema, and the reads and writes of its rows
inside the store's transactions. Every function takes the open connection; none commits."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import numpy as np

from pipeline.core.catalog.match import EnrolledProduct, InvalidPhoto, StoredPhoto, UnknownProduct

SCHEMA_VERSION = 1  # PRAGMA user_version
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- model_version: the catalog's embedding space
CREATE TABLE versions (  -- one per write, from 1 (0: the empty catalog)
    version INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, sku TEXT);
CREATE TABLE products (  -- a state of a product: in the catalog from version `since` until `until` (excluded, NULL: now)
    id INTEGER PRIMARY KEY, sku TEXT NOT NULL, label TEXT NOT NULL, since INTEGER NOT NULL REFERENCES versions,
    until INTEGER REFERENCES versions, enrolled INTEGER NOT NULL REFERENCES versions);  -- enrolled: kept by replacements
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
CURRENT = "until IS NULL"
AS_OF = "since <= :v AND (until IS NULL OR until > :v)"


def count(db: sqlite3.Connection, query: str) -> int:
    return int(db.execute(query).fetchone()[0])


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
    sku, label, created, updated = db.execute(
        "SELECT sku, label, (SELECT created FROM versions WHERE version = enrolled), "
        "(SELECT created FROM versions WHERE version = since) FROM products WHERE id = ?", (row,)).fetchone()
    photos = db.execute("SELECT photo FROM product_photos WHERE product = ? ORDER BY position", (row,)).fetchall()
    return EnrolledProduct(sku, label, [photo for (photo,) in photos], created, updated)


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
