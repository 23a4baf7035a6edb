"""`python -m pipeline.release.catalog_cli reembed`: a catalog enrolled under another classifier, embedded again by the
shipped one (the real detector and classifier, through the photo→answer loop), then matched by it."""

from __future__ import annotations

import numpy as np
import pytest

from load_tests.photos import drawn_product
from pipeline.core.catalog.match import CatalogIndex, StoredPhoto, embedding_space
from pipeline.core.catalog.store import CatalogStore
from pipeline.core.model_label import load_model_label
from tests.tiny_models import SHIPPED_MODEL_DIR

pytestmark = pytest.mark.models


def test_reembed_gives_every_stored_photo_the_shipped_classifiers_embedding(tmp_path, capsys):
    from pipeline.release import catalog_cli as catalog

    old = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    with CatalogStore(tmp_path) as store:
        store.enroll("carton-1", "Carton", [StoredPhoto(drawn_product(seed), "image/jpeg", old / np.linalg.norm(old))
                                            for seed in (1, 2)], "classifier-old", "test")
    report = catalog.main(["reembed", "--catalog", str(tmp_path), "--model-label", str(SHIPPED_MODEL_DIR)])
    shipped = load_model_label(SHIPPED_MODEL_DIR)
    version = embedding_space(shipped.versions["classifier"], shipped.whole_photo_share)
    assert report["model_version"] == version and report["embedded"] == 2 and report["without_product"] == []
    with CatalogStore(tmp_path) as store:
        assert store.info().model_version == version and store.photos_needing(version) == []
        snapshot = store.snapshot(version)
    assert snapshot.vectors.shape == (2, load_model_label(SHIPPED_MODEL_DIR).embedding_dim)
    assert float(snapshot.vectors[0] @ snapshot.vectors[1]) > 0.9  # the two cartons look alike to the new model
    match = CatalogIndex(snapshot).best(snapshot.vectors[:1])[0]
    assert match is not None and match.sku == "carton-1" and match.similarity == pytest.approx(1.0, abs=1e-5)
