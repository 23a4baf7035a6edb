"""The catalog rule (pipeline.core.catalog.rule): when the catalog names a product instead of the classifier."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.core.catalog.match import CatalogMatch, gallery_index
from pipeline.core.catalog.rule import CatalogRule, trained_side
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


def test_calibrated_weighs_the_match_the_training_photos_and_the_classifiers_confidence():
    # log-odds = -10 + 20 * catalog - 10 * training - 4 * confidence
    rule = CatalogRule("calibrated", 0.0, (-10.0, 20.0, -10.0, -4.0))
    assert rule.score(CLOSE, 0.5, 0.5) == pytest.approx(-10 + 18 - 5 - 2)
    assert rule.picks_catalog(CLOSE, True, 0.5, 0.5)  # +1: a new product, the classifier unsure
    assert not rule.picks_catalog(CLOSE, True, 0.5, 0.9)  # -0.6: the same match, a sure trained answer
    assert not rule.picks_catalog(CLOSE, True, 0.65, 0.5)  # -0.5: a training photo nearly as close
    with pytest.raises(ValueError, match="top probability"):
        rule.picks_catalog(CLOSE, True, 0.5)
    with pytest.raises(ValueError, match="4 finite weights"):
        CatalogRule("calibrated", 0.0, (1.0, 2.0))


def test_trained_side_sets_aside_the_classes_the_matched_product_takes_precedence_over():
    labels = ["Apple", "Pear", "Milk"]
    neighbours = [CatalogMatch("0", "Apple", 0.93), CatalogMatch("2", "Milk", 0.61), CatalogMatch("1", "Pear", 0.4)]
    probabilities = np.array([0.8, 0.15, 0.05])
    side = trained_side(probabilities, labels, 0.5, neighbours)
    assert (side.label, side.confidence, side.known, side.training_similarity, side.training_label) == ("Apple", 0.8, True, 0.93, "Apple")
    aside = trained_side(probabilities, labels, 0.5, neighbours, set_aside={"Apple"})
    assert (aside.label, aside.confidence, aside.known) == ("Pear", pytest.approx(0.15), False)
    assert (aside.training_similarity, aside.training_label) == (0.61, "Milk")
    rule = CatalogRule("beats_training", 0.05)
    assert not rule.picks_catalog_for(CLOSE, side) and rule.picks_catalog_for(CLOSE, aside)  # 0.9 - 0.93 < 0.05 <= 0.9 - 0.61
    assert trained_side(probabilities, labels, 0.5).training_similarity is None  # no gallery asked
    assert trained_side(probabilities, labels, 0.5, [], {"Apple"}).training_similarity == -1.0  # nothing left to compare
