"""The catalog rule (pipeline.core.catalog.rule): when the catalog names a product instead of the classifier."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.core.catalog.match import CatalogMatch, gallery_index
from pipeline.core.catalog.rule import CatalogRule
from pipeline.core.model_label import ModelLabelError, load_model_label
from tests.tiny_models import SHIPPED_MODEL_DIR

CLOSE, FAR = CatalogMatch("sku-1", "Cola", 0.9), CatalogMatch("sku-2", "Tea", 0.5)


def test_similarity_speaks_from_its_threshold_whatever_the_classifier_says():
    rule = CatalogRule("similarity", 0.8)
    assert rule.picks_catalog(CLOSE, model_known=True) and rule.picks_catalog(CLOSE, model_known=False)
    assert not rule.picks_catalog(FAR, model_known=False) and not rule.picks_catalog(None, model_known=False)


def test_unknown_only_leaves_a_sure_classifier_its_answer():
    rule = CatalogRule("unknown_only", 0.8)
    assert rule.picks_catalog(CLOSE, model_known=False) and not rule.picks_catalog(CLOSE, model_known=True)


def test_beats_training_needs_the_crop_closer_to_the_enrolled_product_than_to_the_classifiers_training_photos():
    rule = CatalogRule("beats_training", 0.05)
    assert rule.picks_catalog(CLOSE, True, training_similarity=0.8)  # 0.9 - 0.8 >= 0.05
    assert not rule.picks_catalog(CLOSE, False, training_similarity=0.88)  # a trained product's own photos are closer
    with pytest.raises(ValueError, match="gallery"):
        rule.picks_catalog(CLOSE, True)


@pytest.mark.parametrize("policy, threshold", [("nearest", 0.5), ("similarity", 3.0)])
def test_an_unknown_policy_or_an_impossible_threshold_is_refused(policy, threshold):
    with pytest.raises(ValueError):
        CatalogRule(policy, threshold)


def test_the_shipped_gallery_is_the_classifiers_unit_embeddings_of_its_fit_photos():
    bundle = load_model_label(SHIPPED_MODEL_DIR)
    assert bundle.gallery_path is not None and bundle.embedding_dim
    index = gallery_index(bundle.gallery_path, bundle.versions["classifier"])
    vectors = index.snapshot.vectors
    assert vectors.shape[1] == bundle.embedding_dim and len(vectors) == bundle.manifest["classifier"]["gallery"]["photos"]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=2e-3)  # float16 on disk
    assert set(int(s) for s in index.snapshot.skus) == set(range(len(bundle.labels)))  # every class has photos
    assert index.nearest_similarity(vectors[:3]) == pytest.approx(1.0, abs=2e-3)


def test_a_rule_that_needs_the_gallery_is_refused_on_a_folder_without_one(tmp_path):
    folder = tmp_path / "model_label"
    shutil.copytree(SHIPPED_MODEL_DIR, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["classifier"].pop("gallery", None)
    manifest["catalog"] = {"rule": {"policy": "beats_training", "threshold": 0.05}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLabelError, match="gallery"):
        load_model_label(folder, verify_checksums=False)
