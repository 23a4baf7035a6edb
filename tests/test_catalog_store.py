"""The catalog's store (pipeline.core.catalog.store) on real SQLite files and real faiss.

The vectors are random unit vectors: what the store does with them does not depend on the model that made them.
"""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.catalog.match import CatalogIndex, InvalidProduct, SkuExists, UnknownProduct
from pipeline.core.catalog.store import (
    CatalogFull,
    CatalogStore,
    InvalidPhoto,
    LastPhoto,
    ModelMismatch,
    StoredPhoto,
    TooManyPhotos,
    UnknownPhoto,
    UnknownVersion,
)
from pipeline.core.paths import REPO_ROOT

DIMENSION = 64
MODEL = "classifier-v1"


def photos(rng: np.random.Generator, count: int, size: int = 200) -> list[StoredPhoto]:
    return [StoredPhoto(rng.bytes(size), "image/jpeg", rng.standard_normal(DIMENSION).astype(np.float32)) for _ in range(count)]


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def state(store: CatalogStore) -> tuple:
    """Everything a reader can see of the catalog, to compare before and after."""
    total, products = store.products(0, 1000)
    return store.info(), total, products, store.history(0, 1000), store.snapshot(MODEL).skus


def test_enroll_then_read_it_back(store, rng):
    apple = photos(rng, 3)
    assert store.info().version == 0 and store.info().model_version is None
    assert store.enroll("apple-1", "  Granny Smith  ", apple, MODEL, actor="ops") == 1
    product = store.product("apple-1")
    assert (product.sku, product.label, product.photos) == ("apple-1", "Granny Smith", 3)
    assert product.created == product.updated
    for photo, photo_id in zip(apple, product.photo_ids):
        assert store.photo(photo_id) == store.photo(photo_id, sku="apple-1") == (photo.data, "image/jpeg")
    info = store.info()
    assert (info.version, info.products, info.photos, info.model_version) == (1, 1, 3, MODEL)
    with sqlite3.connect(store.path) as db:  # what is kept of each photo
        kept = db.execute("SELECT sha256, size, media_type FROM photos ORDER BY id").fetchall()
    assert kept == [(hashlib.sha256(p.data).hexdigest(), len(p.data), "image/jpeg") for p in apple]
    snapshot = store.snapshot(MODEL)
    assert (snapshot.version, snapshot.skus, snapshot.labels, snapshot.missing_photos) == (1, ["apple-1"] * 3, ["Granny Smith"] * 3, 0)
    assert np.allclose(snapshot.vectors, [unit(p.embedding) for p in apple], atol=1e-6)


def test_reenroll_replaces_add_appends_delete_removes(store, rng):
    store.enroll("milk", "Milk 1 l", photos(rng, 2), MODEL, "ops")
    first = store.product("milk")
    assert store.enroll("milk", "Milk 1 l, organic", photos(rng, 1), MODEL, "ops") == 2
    replaced = store.product("milk")
    assert replaced.label == "Milk 1 l, organic" and replaced.photos == 1
    assert not set(replaced.photo_ids) & set(first.photo_ids) and replaced.created == first.created
    with pytest.raises(UnknownPhoto):  # a replaced photo is no longer the product's
        store.photo(first.photo_ids[0], sku="milk")
    assert store.add_photos("milk", photos(rng, 2), MODEL, "ops") == 3
    added = store.product("milk")
    assert added.photo_ids[:1] == replaced.photo_ids and added.photos == 3 and added.label == "Milk 1 l, organic"
    assert store.delete("milk", "ops") == 4
    with pytest.raises(UnknownProduct):
        store.product("milk")
    assert store.info().products == 0 and store.snapshot(MODEL).skus == []
    for write in (lambda: store.delete("milk", "ops"), lambda: store.add_photos("milk", photos(rng, 1), MODEL, "ops")):
        with pytest.raises(UnknownProduct):
            write()
    assert store.info().version == 4  # a refused write makes no version


def test_remove_photo_keeps_the_others_and_never_the_last_and_enroll_may_refuse_to_replace(store, rng):
    store.enroll("milk", "Milk", photos(rng, 3), MODEL, "ops")
    first, second, third = store.product("milk").photo_ids
    assert store.remove_photo("milk", second, "ann@10.0.0.1") == 2
    assert store.product("milk").photo_ids == [first, third] and len(store.snapshot(MODEL).skus) == 2
    with pytest.raises(UnknownPhoto):
        store.remove_photo("milk", second, "ops")
    assert store.remove_photo("milk", first, "ops") == 3
    with pytest.raises(LastPhoto, match="delete the product instead"):
        store.remove_photo("milk", third, "ops")
    with pytest.raises(SkuExists, match="replace=true"):
        store.enroll("milk", "Milk again", photos(rng, 1), MODEL, "ops", replace=False)
    assert store.product("milk").photo_ids == [third] and store.info().version == 3  # refused: nothing written
    total, history = store.history(0, 1)
    assert total == 3 and (history[0].action, history[0].actor, history[0].details) == (
        "remove_photo", "ops", {"label": "Milk", "removed_photo_ids": [first]})
    assert store.rollback(1, "ops") == 4 and store.product("milk").photo_ids == [first, second, third]


def test_products_are_listed_by_sku_a_page_at_a_time(store, rng):
    skus = [f"sku-{n:02d}" for n in range(25)]
    for sku in reversed(skus):
        store.enroll(sku, sku.upper(), photos(rng, 1), MODEL, "ops")
    pages = [store.products(offset, 10) for offset in (0, 10, 20, 30)]
    assert [total for total, _ in pages] == [25] * 4
    assert [p.sku for _, page in pages for p in page] == skus
    assert [len(page) for _, page in pages] == [10, 10, 5, 0]


def test_every_write_makes_one_version_and_one_audit_record(store, rng):
    writes = [lambda: store.enroll("a", "A", photos(rng, 2), MODEL, "alice"),
              lambda: store.enroll("b", "B", photos(rng, 1), MODEL, "bob"),
              lambda: store.add_photos("a", photos(rng, 1), MODEL, "alice"),
              lambda: store.delete("b", "carol"),
              lambda: store.rollback(2, "dave")]
    assert [write() for write in writes] == [1, 2, 3, 4, 5]
    total, history = store.history()
    assert total == 5
    assert [(h.version, h.actor, h.action, h.sku) for h in history] == [
        (5, "dave", "rollback", None), (4, "carol", "delete", "b"), (3, "alice", "add_photos", "a"), (2, "bob", "enroll", "b"),
        (1, "alice", "enroll", "a")]
    assert [h.time for h in history] == sorted((h.time for h in history), reverse=True)
    assert history[0].details == {"to_version": 2, "removed": ["a"], "restored": ["a", "b"]}
    assert history[3].details["photo_ids"] == store.product("b").photo_ids and history[3].details["model_version"] == MODEL
    assert store.history(offset=1, limit=2) == (5, history[1:3])


def test_rollback_makes_an_earlier_product_set_current_as_a_new_version(store, rng):
    store.enroll("a", "A", photos(rng, 2), MODEL, "ops")  # 1
    store.enroll("b", "B", photos(rng, 1), MODEL, "ops")  # 2
    as_of_2 = store.products()[1]
    store.enroll("a", "A2", photos(rng, 3), MODEL, "ops")  # 3
    store.delete("b", "ops")  # 4
    store.enroll("c", "C", photos(rng, 1), MODEL, "ops")  # 5
    as_of_5 = store.products()[1]
    assert store.rollback(2, "ops") == 6
    assert [(p.sku, p.label, p.photo_ids) for p in store.products()[1]] == [(p.sku, p.label, p.photo_ids) for p in as_of_2]
    assert store.snapshot(MODEL).skus == ["a", "a", "b"]
    # The rollback is undone by rolling back to before it, and the empty catalog is version 0.
    assert store.rollback(5, "ops") == 7
    assert [(p.sku, p.label, p.photo_ids) for p in store.products()[1]] == [(p.sku, p.label, p.photo_ids) for p in as_of_5]
    assert store.rollback(0, "ops") == 8 and store.products() == (0, []) and store.info().photos == 0
    for bad in (9, -1, "3", 2.0, True):
        with pytest.raises(UnknownVersion):
            store.rollback(bad, "ops")
    assert store.info().version == 8


def test_the_snapshot_holds_one_models_embeddings_only(store, rng):
    a_before, b, a_now = photos(rng, 3), photos(rng, 2), photos(rng, 2)
    store.enroll("a", "A", a_before, MODEL, "ops")
    store.enroll("b", "B", b, MODEL, "ops")
    store.enroll("a", "A", a_now, MODEL, "ops")  # a's first photos are now only in earlier versions
    assert store.snapshot("classifier-v2").skus == [] and store.snapshot("classifier-v2").missing_photos == 4
    needing = store.photos_needing("classifier-v2")
    assert len(needing) == 7 and set(needing[:4]) == set(store.product("a").photo_ids + store.product("b").photo_ids)
    new_model: dict[bytes, np.ndarray | None] = {p.data: rng.standard_normal(32) for p in a_before + b + a_now}  # 32-d
    new_model[a_now[0].data] = None  # the new model finds no product in this photo
    batches: list[int] = []
    report = store.reembed(lambda data: [new_model[d] for d in data], "classifier-v2", batch=3, progress=batches.append)
    assert batches == [3, 3, 1] and report.version == 4 and report.embedded == 6
    assert report.without_product == store.product("a").photo_ids[:1]
    assert store.info().model_version == "classifier-v2" and store.photos_needing("classifier-v2") == []
    snapshot = store.snapshot("classifier-v2")
    assert snapshot.version == 4 and snapshot.skus == ["a", "b", "b"] and snapshot.missing_photos == 1
    assert np.allclose(snapshot.vectors, [unit(new_model[p.data]) for p in [a_now[1], *b]], atol=1e-6)
    old = store.snapshot(MODEL)  # the old model's are still there, apart
    assert old.skus == ["a", "a", "b", "b"] and np.allclose(old.vectors, [unit(p.embedding) for p in a_now + b], atol=1e-6)
    with pytest.raises(ModelMismatch):  # a catalog never mixes two models' embeddings
        store.enroll("c", "C", photos(rng, 1), MODEL, "ops")
    assert store.reembed(lambda data: [None for _ in data], "classifier-v2").version is None  # nothing to do: no version
    store.rollback(1, "ops")  # a's earlier photos were embedded for the new model too
    assert store.snapshot("classifier-v2").skus == ["a"] * 3


def test_the_snapshot_is_read_once_per_change(tmp_path, rng):
    """Every replica asks for the snapshot after each change: one read serves them all until the next commit,
    whichever process makes it."""
    folder = tmp_path / "catalog"
    with CatalogStore(folder) as store:
        store.enroll("a", "A", photos(rng, 2), MODEL, "ops")
        first = store.snapshot(MODEL)
        assert store.snapshot(MODEL) is first and not first.vectors.flags.writeable
        store.add_photos("a", photos(rng, 1), MODEL, "ops")
        second = store.snapshot(MODEL)
        assert second is not first and (second.version, len(second.skus)) == (2, 3)
        assert writer(folder, "write", "b").communicate(timeout=120)[0] == "done\n"
        third = store.snapshot(MODEL)
        assert (third.version, third.skus) == (3, ["a"] * 3 + ["b"] * 8) and store.snapshot(MODEL) is third


def test_reembed_that_stops_midway_goes_on_from_there(store, rng):
    for sku in "abcde":
        store.enroll(sku, sku, photos(rng, 2), MODEL, "ops")
    calls = 0

    def failing(data: list[bytes]) -> list[np.ndarray | None]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the model went away")
        return [rng.standard_normal(DIMENSION) for _ in data]

    progress: list[int] = []
    with pytest.raises(RuntimeError):
        store.reembed(failing, "v2", batch=3, progress=progress.append)
    assert progress == [3, 3] and len(store.photos_needing("v2")) == 4 and store.info().model_version == MODEL
    report = store.reembed(failing, "v2", batch=3, progress=progress.append)
    assert progress == [3, 3, 3, 1] and report.embedded == 4 and store.info().model_version == "v2"


def test_a_reopened_catalog_has_everything_and_its_faiss_index(tmp_path, rng):
    folder = tmp_path / "catalog"
    with CatalogStore(folder) as store:
        kept = photos(rng, 3)
        store.enroll("a", "A", kept, MODEL, "ops")
        store.enroll("b", "B", photos(rng, 2), MODEL, "ops")
        store.delete("b", "ops")
        before = state(store)
    with CatalogStore(folder) as store:
        assert state(store) == before
        [duplicate] = store.near_duplicates(kept[1].embedding[None], "other", 0.99, model_version=MODEL)
        assert duplicate is not None and duplicate.sku == "a" and duplicate.photo_id == store.product("a").photo_ids[1]
        assert store.enroll("c", "C", photos(rng, 1), MODEL, "ops") == 4


def test_near_duplicates_find_another_skus_photo(store, rng):
    apple, pear = photos(rng, 5), photos(rng, 2)
    store.enroll("apple", "Apple", apple, MODEL, "ops")
    store.enroll("pear", "Pear", pear, MODEL, "ops")
    near_apple = unit(apple[2].embedding) + 0.05 * unit(rng.standard_normal(DIMENSION))
    query = np.stack([near_apple, rng.standard_normal(DIMENSION)]).astype(np.float32)
    found = store.near_duplicates(query, "pear", 0.9, model_version=MODEL)
    expected = float(unit(near_apple) @ unit(apple[2].embedding))
    assert found[0] is not None and (found[0].sku, found[0].photo_id) == ("apple", store.product("apple").photo_ids[2])
    assert found[0].similarity == pytest.approx(expected, abs=1e-5) and found[1] is None
    # Excluding apple, whose 5 photos are all nearer than pear's, still finds pear's nearest photo.
    [to_pear] = store.near_duplicates(query[:1], "apple", -1.0, model_version=MODEL)
    assert to_pear is not None and to_pear.sku == "pear"
    assert to_pear.similarity == pytest.approx(max(float(unit(near_apple) @ unit(p.embedding)) for p in pear), abs=1e-5)
    assert store.near_duplicates(query[:1], "apple", 0.5, model_version=MODEL) == [None]
    store.enroll("apple", "Apple", photos(rng, 1), MODEL, "ops")  # replaced: its old photos are no longer matched
    assert store.near_duplicates(query[:1], "pear", 0.9, model_version=MODEL) == [None]
    store.rollback(2, "ops")  # back again
    assert store.near_duplicates(query[:1], "pear", 0.9, model_version=MODEL)[0].sku == "apple"
    store.delete("apple", "ops")
    assert store.near_duplicates(query[:1], None, 0.9, model_version=MODEL) == [None]
    with pytest.raises(ModelMismatch):
        store.near_duplicates(query, None, 0.9, model_version="classifier-v2")


def test_limits(tmp_path, rng):
    with CatalogStore(tmp_path / "c", max_products=2, max_photos_per_product=3, max_photos=5, max_photo_bytes=1000) as store:
        store.enroll("a", "A", photos(rng, 3), MODEL, "ops")
        store.enroll("b", "B", photos(rng, 1), MODEL, "ops")
        with pytest.raises(CatalogFull, match="2 products"):
            store.enroll("c", "C", photos(rng, 1), MODEL, "ops")
        store.enroll("b", "B", photos(rng, 2), MODEL, "ops")  # replacing one is no new product
        with pytest.raises(CatalogFull, match="photos"):
            store.add_photos("b", photos(rng, 1), MODEL, "ops")
        with pytest.raises(TooManyPhotos):
            store.add_photos("a", photos(rng, 1), MODEL, "ops")
        with pytest.raises(TooManyPhotos):
            store.enroll("b", "B", photos(rng, 4), MODEL, "ops")
        with pytest.raises(InvalidPhoto, match="1,000 bytes"):
            store.enroll("b", "B", photos(rng, 1, size=1001), MODEL, "ops")
        store.delete("a", "ops")
        assert store.enroll("c", "C", photos(rng, 3), MODEL, "ops") == 5
        assert store.info().version == 5 and store.info().photos == 5


@pytest.mark.parametrize("sku", ["", "x" * 65, "two words", "../etc", "-lead", "caf\u00e9", "a/b", 7])
def test_bad_skus_are_refused(store, rng, sku):
    with pytest.raises(InvalidProduct, match="sku"):
        store.enroll(sku, "A", photos(rng, 1), MODEL, "ops")


def test_bad_labels_photos_and_embeddings_are_refused(store, rng):
    assert store.enroll("A-1_b.2", "A", photos(rng, 1), MODEL, "ops") == 1
    for label in ("", "   ", "x" * 201, "two\nlines", None):
        with pytest.raises(InvalidProduct, match="label"):
            store.enroll("b", label, photos(rng, 1), MODEL, "ops")
    good = photos(rng, 1)[0]
    bad_photos = [[], [StoredPhoto(b"", "image/jpeg", good.embedding)], [StoredPhoto(good.data, "text/plain", good.embedding)],
                  [StoredPhoto(good.data, "image/jpeg", np.zeros(DIMENSION))],
                  [StoredPhoto(good.data, "image/jpeg", np.full(DIMENSION, np.nan))],
                  [StoredPhoto(good.data, "image/jpeg", np.ones(DIMENSION + 1))],  # not this model's length
                  [good, StoredPhoto(good.data, "image/jpeg", np.ones(DIMENSION - 1))],
                  [StoredPhoto(good.data, "image/jpeg", np.ones((2, DIMENSION)))]]
    for bad in bad_photos:
        with pytest.raises(InvalidPhoto):
            store.enroll("b", "B", bad, MODEL, "ops")
    with pytest.raises(ModelMismatch):
        store.enroll("b", "B", [good], "classifier-v2", "ops")
    assert store.info().version == 1 and store.info().products == 1


WRITER = textwrap.dedent("""
    import sys, time, zlib
    import numpy as np
    from pipeline.core.catalog.store import CatalogStore, StoredPhoto

    class Interrupted(CatalogStore):
        def _before_commit(self, action):
            print("in the transaction", flush=True)
            time.sleep(600)

    folder, mode, skus = sys.argv[1], sys.argv[2], sys.argv[3:]
    store = (Interrupted if mode == "crash" else CatalogStore)(folder)
    # crc32, not hash(): salted per process, hash() % 1000 gave two writers one seed about once in a thousand runs
    rng = np.random.default_rng(zlib.crc32(" ".join(skus).encode()))
    size = 1_000_000 if mode == "crash" else 100  # more than SQLite's page cache: pages spill to the WAL uncommitted
    for sku in skus:
        store.enroll(sku, "Half written" if mode == "crash" else sku,
                     [StoredPhoto(rng.bytes(size), "image/png", rng.standard_normal(64).astype(np.float32)) for _ in range(8)],
                     "classifier-v1", "writer-" + mode)
    print("done", flush=True)
""")


def writer(folder: Path, mode: str, *skus: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(folder), mode, *skus], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.parametrize("sku", ["new", "a"], ids=["new-product", "replacing-one"])
def test_a_crash_mid_enrollment_leaves_nothing_half_written(tmp_path, rng, sku):
    folder = tmp_path / "catalog"
    with CatalogStore(folder) as store:
        store.enroll("a", "A", photos(rng, 2), MODEL, "ops")
        before = state(store)
    wal = folder / "catalog.sqlite3-wal"
    wal_before = wal.stat().st_size if wal.exists() else 0  # the last close checkpoints it away
    process = writer(folder, "crash", sku)
    try:
        assert process.stdout is not None and process.stdout.readline() == "in the transaction\n"
        assert wal.stat().st_size > wal_before + 1_000_000  # the enrollment's rows are written, not committed
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    with CatalogStore(folder) as store:
        assert state(store) == before
        with sqlite3.connect(store.path) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
            assert db.execute("SELECT count(*) FROM photos").fetchone() == (2,)
        assert store.enroll(sku, "Whole", photos(rng, 1), MODEL, "ops") == 2  # the version number was not used up
        assert store.product(sku).label == "Whole"


def test_concurrent_enrollments_of_different_skus_all_land(tmp_path, rng):
    folder = tmp_path / "catalog"
    with CatalogStore(folder) as store:
        store.enroll("seed", "Seed", photos(rng, 1), MODEL, "ops")  # the catalog's model is set
        others = [writer(folder, "write", *[f"p{p}-{n}" for n in range(10)]) for p in range(2)]
        errors: list[BaseException] = []

        def enroll_some(thread: int) -> None:
            local = np.random.default_rng(thread)
            try:
                for n in range(10):
                    store.enroll(f"t{thread}-{n}", f"T{thread}", photos(local, 2), MODEL, f"thread-{thread}")
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=enroll_some, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        outputs = [process.communicate(timeout=120)[0] for process in others]
        assert errors == [] and outputs == ["done\n", "done\n"] and [p.returncode for p in others] == [0, 0]
        expected = {"seed"} | {f"t{t}-{n}" for t in range(4) for n in range(10)} | {f"p{p}-{n}" for p in range(2) for n in range(10)}
        total, products = store.products(0, 1000)
        assert total == 61 and {p.sku for p in products} == expected
        assert sorted(h.version for h in store.history(0, 1000)[1]) == list(range(1, 62))
        assert store.info().photos == 1 + 40 * 2 + 20 * 8
        # This process's faiss index took in the other processes' writes too.
        snapshot = store.snapshot(MODEL)
        other_photo = snapshot.vectors[snapshot.skus.index("p1-3")]
        assert store.near_duplicates(other_photo[None], None, 0.99, model_version=MODEL)[0].sku == "p1-3"
        assert CatalogIndex(snapshot).best(other_photo[None])[0].sku == "p1-3"
    with CatalogStore(folder) as reopened:
        assert reopened.products(0, 1000) == (total, products)


def test_the_command_line_shows_the_catalog(tmp_path, rng, capsys):
    from pipeline.release.catalog_cli import main

    folder = tmp_path / "catalog"
    with pytest.raises(SystemExit, match="no catalog"):
        main(["info", "--catalog", str(folder)])
    with CatalogStore(folder) as store:
        for sku in ("b", "a", "c"):
            store.enroll(sku, sku.upper(), photos(rng, 2), MODEL, "ops")
    capsys.readouterr()
    info = main(["info", "--catalog", str(folder)])
    assert {k: info[k] for k in ("version", "products", "photos", "model_version")} == {
        "version": 3, "products": 3, "photos": 6, "model_version": MODEL}
    assert json.loads(capsys.readouterr().out) == info
    page = main(["list", "--catalog", str(folder), "--offset", "1", "--limit", "1"])
    assert (page["total"], [(p["sku"], p["label"], p["photos"]) for p in page["products"]]) == (3, [("b", "B", 2)])
    history = main(["history", "--catalog", str(folder), "--limit", "1"])
    assert (history["total"], [(v["version"], v["change"], v["operator"]) for v in history["versions"]]) == (
        3, [(3, "enrolled c (C) with 2 photos", "ops")])
