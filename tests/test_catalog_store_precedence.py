"""A product's precedence over trained classes in the catalog's store (pipeline.core.catalog.store): part of the
product's state, so each change is a write like the others (one transaction, one new version, audited, undone by a
rollback), kept by a replacement and an addition of photos, dropped with the product; and a store of the schema
before it opens and keeps its products. Real SQLite files, random unit vectors (tests/test_catalog_store.py's)."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.core.catalog import store_sql
from pipeline.core.catalog.history import change, history_entry
from pipeline.core.catalog.match import CatalogError, InvalidProduct, UnknownProduct
from pipeline.core.catalog.store import CatalogStore
from tests.test_catalog_store import MODEL, photos

GOLDEN, GRANNY = "Golden-Delicious_ _ ", "Granny-Smith_ _ "  # trained classes' labels: they end in spaces


def latest(store: CatalogStore) -> dict:
    return history_entry(store.history(0, 1)[1][0])


def test_a_precedence_is_a_versioned_audited_write_of_the_product(store, rng):
    store.enroll("pink-lady", "Pink Lady apple", photos(rng, 2), MODEL, "ops")
    store.enroll("milk", "Milk", photos(rng, 1), MODEL, "ops")
    assert store.product("pink-lady").precedence == () and store.snapshot(MODEL).precedence == {}

    assert store.set_precedence("pink-lady", [GOLDEN, GRANNY, GOLDEN], "Ann@10.0.0.7") == 3
    product = store.product("pink-lady")
    assert product.precedence == (GOLDEN, GRANNY) and product.photos == 2  # each once, sorted; its photos kept
    assert store.snapshot(MODEL).precedence == {"pink-lady": (GOLDEN, GRANNY)}  # only products that have one
    entry = latest(store)
    assert (entry["version"], entry["action"], entry["sku"], entry["label"]) == (3, "precedence", "pink-lady", "Pink Lady apple")
    assert (entry["operator"], entry["address"]) == ("Ann", "10.0.0.7")
    assert entry["change"] == f"pink-lady now takes precedence over '{GOLDEN}', '{GRANNY}'"
    assert entry["added_photo_ids"] == entry["removed_photo_ids"] == []

    assert store.set_precedence("pink-lady", [GRANNY], "Bo@10.0.0.8") == 4
    assert latest(store)["change"] == f"pink-lady no longer takes precedence over '{GOLDEN}'"
    assert store.set_precedence("pink-lady", [GOLDEN], "Bo@10.0.0.8") == 5
    assert latest(store)["change"] == (f"pink-lady now takes precedence over '{GOLDEN}'; "
                                       f"pink-lady no longer takes precedence over '{GRANNY}'")
    assert store.set_precedence("pink-lady", [], "Bo@10.0.0.8") == 6
    assert store.product("pink-lady").precedence == () and store.snapshot(MODEL).precedence == {}
    assert store.info().version == 6 and store.history(0, 100)[0] == 6


def test_the_same_precedence_again_writes_nothing(store, rng):
    store.enroll("pink-lady", "Pink Lady", photos(rng, 1), MODEL, "ops")
    assert store.set_precedence("pink-lady", [GOLDEN], "ops") == 2
    assert store.set_precedence("pink-lady", [GOLDEN], "ops") == 2
    assert store.set_precedence("pink-lady", [GOLDEN, GOLDEN], "ops") == 2
    assert store.info().version == 2 and store.history(0, 10)[0] == 2


def test_a_refused_precedence_writes_nothing(store, rng):
    store.enroll("pink-lady", "Pink Lady", photos(rng, 1), MODEL, "ops")
    with pytest.raises(UnknownProduct):
        store.set_precedence("nope", [GOLDEN], "ops")
    for wrong in (GOLDEN, [""], ["x" * 201], [3], ["tab\there"], None):
        with pytest.raises(InvalidProduct):
            store.set_precedence("pink-lady", wrong, "ops")  # type: ignore[arg-type]
    assert store.info().version == 1 and store.product("pink-lady").precedence == ()


def test_replacing_and_adding_photos_keep_it_removing_a_photo_too_deleting_drops_it(store, rng):
    store.enroll("pink-lady", "Pink Lady", photos(rng, 2), MODEL, "ops")
    store.set_precedence("pink-lady", [GOLDEN], "ops")
    store.enroll("pink-lady", "Pink Lady, organic", photos(rng, 2), MODEL, "ops", replace=True)
    assert store.product("pink-lady").precedence == (GOLDEN,)
    store.add_photos("pink-lady", photos(rng, 1), MODEL, "ops")
    assert store.product("pink-lady").precedence == (GOLDEN,)
    store.remove_photo("pink-lady", store.product("pink-lady").photo_ids[0], "ops")
    assert store.product("pink-lady").precedence == (GOLDEN,) and store.product("pink-lady").photos == 2
    assert store.snapshot(MODEL).precedence == {"pink-lady": (GOLDEN,)}
    store.delete("pink-lady", "ops")
    assert store.snapshot(MODEL).precedence == {}
    store.enroll("pink-lady", "Pink Lady again", photos(rng, 1), MODEL, "ops")  # a new product of that sku
    assert store.product("pink-lady").precedence == ()


def test_a_rollback_restores_the_products_precedence_as_it_was(store, rng):
    store.enroll("pink-lady", "Pink Lady", photos(rng, 2), MODEL, "ops")  # 1
    store.set_precedence("pink-lady", [GOLDEN], "ops")  # 2
    store.set_precedence("pink-lady", [GOLDEN, GRANNY], "ops")  # 3
    photo_ids = store.product("pink-lady").photo_ids
    assert store.rollback(1, "ops") == 4
    assert store.product("pink-lady").precedence == () and store.snapshot(MODEL).precedence == {}
    assert store.product("pink-lady").photo_ids == photo_ids
    assert latest(store)["change"] == "rolled back to version 1: pink-lady as then"
    assert store.rollback(2, "ops") == 5
    assert store.product("pink-lady").precedence == (GOLDEN,)
    assert store.snapshot(MODEL).precedence == {"pink-lady": (GOLDEN,)}
    store.delete("pink-lady", "ops")  # 6
    store.rollback(3, "ops")  # the deleted product back, with its precedence of then
    assert store.product("pink-lady").precedence == (GOLDEN, GRANNY)


def test_a_store_of_the_schema_before_precedence_opens_migrated_and_keeps_its_products(tmp_path, rng):
    """A schema-1 store: written by this code, then the column taken out and the version set back, which is the
    schema-1 layout (precedence is all that schema 2 added)."""
    assert store_sql.SCHEMA_VERSION == 2 and list(store_sql.MIGRATIONS) == [1]
    folder = tmp_path / "catalog"
    with CatalogStore(folder) as store:
        store.enroll("milk", "Milk", photos(rng, 2), MODEL, "ops")
        store.enroll("oat", "Oat drink", photos(rng, 1), MODEL, "ops")
        before = (store.products(0, 10), store.snapshot(MODEL).skus, store.history(0, 10))
    with sqlite3.connect(folder / "catalog.sqlite3") as db:
        db.execute("ALTER TABLE products DROP COLUMN precedence")
        db.execute("PRAGMA user_version = 1")
    with sqlite3.connect(folder / "catalog.sqlite3") as db:
        assert "precedence" not in {row[1] for row in db.execute("PRAGMA table_info(products)")}

    with CatalogStore(folder) as store:
        assert (store.products(0, 10), store.snapshot(MODEL).skus, store.history(0, 10)) == before
        assert store.product("milk").precedence == () and store.snapshot(MODEL).precedence == {}
        assert store.set_precedence("milk", [GOLDEN], "ops") == 3
        assert store.snapshot(MODEL).precedence == {"milk": (GOLDEN,)}
    with sqlite3.connect(folder / "catalog.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    folder = tmp_path / "catalog"
    CatalogStore(folder).close()
    with sqlite3.connect(folder / "catalog.sqlite3") as db:
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(CatalogError, match="schema version 3; this code knows 2"):
        CatalogStore(folder)


def test_a_precedence_change_is_told_in_words():
    assert change("precedence", "s", {"previous": [], "precedence": ["a"]}) == "s now takes precedence over 'a'"
    assert change("precedence", "s", {"previous": ["a", "b"], "precedence": []}) == "s no longer takes precedence over 'a', 'b'"
    many = {"previous": [], "precedence": [f"c{i}" for i in range(7)]}
    assert change("precedence", "s", many) == "s now takes precedence over 'c0', 'c1', 'c2', 'c3', 'c4' and 2 more"


def test_the_command_line_shows_precedence_in_the_list_and_the_history(tmp_path, rng, capsys):
    from pipeline.release.catalog_cli import main

    folder = tmp_path / "catalog"
    with CatalogStore(folder) as store:
        store.enroll("pink-lady", "Pink Lady", photos(rng, 1), MODEL, "ops")
        store.set_precedence("pink-lady", [GOLDEN], "Ann@10.0.0.7")
    page = main(["list", "--catalog", str(folder)])
    assert [(p["sku"], p["precedence"]) for p in page["products"]] == [("pink-lady", (GOLDEN,))]
    history = main(["history", "--catalog", str(folder), "--limit", "1"])
    assert [(v["action"], v["change"], v["operator"]) for v in history["versions"]] == [
        ("precedence", f"pink-lady now takes precedence over '{GOLDEN}'", "Ann")]
    assert f"now takes precedence over '{GOLDEN}'" in capsys.readouterr().out
