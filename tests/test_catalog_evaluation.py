"""pipeline.release.catalog_evaluation's caches: embeddings are reused only for the models and the policy that made them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.release.catalog_evaluation import embed, models_key


def test_the_cache_key_changes_with_any_model_byte_or_the_policy(tmp_path):
    classifier = tmp_path / "classifier"
    (classifier / "variables").mkdir(parents=True)
    (classifier / "saved_model.pb").write_bytes(b"graph")
    (classifier / "variables" / "weights").write_bytes(b"weights")
    detector = tmp_path / "detector.onnx"
    detector.write_bytes(b"detector")
    key = models_key("whole_photo", detector, classifier)
    assert key == models_key("whole_photo", detector, classifier)
    assert key != models_key("average", detector, classifier)
    (classifier / "variables" / "weights").write_bytes(b"weights, retrained")
    assert key != models_key("whole_photo", detector, classifier)


def test_a_cache_is_used_only_for_the_models_that_made_it(tmp_path):
    cache = tmp_path / "val_embeddings.npz"
    paths = ["a.jpg", "b.jpg"]
    np.savez(cache, paths=np.array(paths), class_ids=np.array([0, 1]), probabilities=np.eye(2, dtype=np.float32),
             embeddings=np.eye(2, dtype=np.float32), detected=np.array([True, False]), enrolled=np.eye(2, dtype=np.float32),
             key=np.array("made-by-these"))
    reused = embed(None, paths, [0, 1], "whole_photo", cache, "made-by-these")  # type: ignore[arg-type]
    assert reused.paths == paths and reused.detected.tolist() == [True, False] and reused.enrolled.shape == (2, 2)
    # other models: the cache is not read, the photos go through the models again (here: none, so it fails)
    with pytest.raises(AttributeError, match="facts"):
        embed(None, paths, [0, 1], "whole_photo", cache, "made-by-others")  # type: ignore[arg-type]
    # a cache from before enrolled photos were stored as crop and whole photo together: not read either
    saved = dict(np.load(cache))
    del saved["enrolled"]
    np.savez(cache, **saved)
    with pytest.raises(AttributeError, match="facts"):
        embed(None, paths, [0, 1], "whole_photo", cache, "made-by-these")  # type: ignore[arg-type]


# --- the arithmetic that chose the shipped catalog rule, on a world small enough to work out by hand -------------
# One enrolled product (class 2, vector e0); the classifier was trained on classes 0 and 1. Four query photos:
#   a: class 2, the enrolled photo itself (cosine 1.0), 0.5 from its nearest training photo  -> margin  0.5
#   b: class 2, cosine 0.8 to it, 0.7 from training                                         -> margin  0.1
#   c: class 0, cosine 0.9 to it (looks like the new product), 0.85 from training           -> margin  0.05
#   d: class 1, orthogonal to it, 0.9 from training                                          -> margin -0.9
# The classifier answers class 0, 1, 0, 1 (right for c and d only), with top probabilities 0.6, 0.7, 0.9, 0.8.

KEPT = [0, 1]


def small_world():
    from pipeline.core.catalog.match import CatalogIndex, CatalogSnapshot
    from pipeline.release.catalog_evaluation import Embedded

    embeddings = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0.9, 0, np.sqrt(1 - 0.81), 0], [0, 0, 0, 1]], np.float32)
    queries = Embedded(["a", "b", "c", "d"], np.array([2, 2, 0, 1]),
                       np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.2, 0.8]], np.float32), embeddings,
                       np.ones(4, bool), embeddings.copy())
    index = CatalogIndex(CatalogSnapshot(1, "test", np.array([[1, 0, 0, 0]], np.float32), ["2"], ["two"]))
    training = np.array([0.5, 0.7, 0.85, 0.9], np.float32)
    return queries, training, index


def test_answer_lets_the_catalog_speak_where_the_rule_says_and_the_classifier_elsewhere():
    from pipeline.core.catalog.rule import CatalogRule
    from pipeline.release.catalog_evaluation import answer

    queries, training, index = small_world()
    result = answer(queries, training, index, CatalogRule("beats_training", 0.2), KEPT, unknown_threshold=0.5)
    np.testing.assert_allclose(result.score, [0.5, 0.1, 0.05, -0.9], atol=1e-5)
    assert result.by_catalog.tolist() == [True, False, False, False]
    assert result.answered.tolist() == [2, 1, 0, 1] and result.matched.tolist() == [2, 2, 2, 2]
    # unknown_only: only where the classifier's top probability is under the unknown threshold (a: 0.6 < 0.65)
    unsure = answer(queries, training, index, CatalogRule("unknown_only", 0.85), KEPT, unknown_threshold=0.65)
    assert unsure.eligible.tolist() == [True, False, False, False]
    assert unsure.by_catalog.tolist() == [True, False, False, False] and unsure.answered.tolist() == [2, 1, 0, 1]


def test_auroc_is_the_mann_whitney_probability_ties_counting_half():
    from pipeline.release.catalog_evaluation import auroc

    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([0.9, 0.5, 0.5]), np.array([0.5, 0.1])) == pytest.approx(5 / 6)  # 4 wins, 2 ties of 6
    assert np.isnan(auroc(np.array([]), np.array([1.0])))


def test_the_chosen_threshold_is_the_lowest_whose_catalog_answers_reach_the_target_precision():
    from pipeline.release.catalog_evaluation import TARGET_PRECISION, choose_threshold

    assert TARGET_PRECISION == 0.95
    queries, training, index = small_world()
    # margins 0.5 (right), 0.1 (right), 0.05 (wrong: c is class 0), -0.9 (wrong): at 0.1 both answers taken are
    # right; at 0.05 two of three
    assert choose_threshold(queries, training, [index], "beats_training", KEPT, 0.5) == pytest.approx(0.1)
    # similarity: 1.0 (right), 0.9 (wrong), 0.8 (right), 0.0: only 1.0 keeps every catalog answer right
    assert choose_threshold(queries, training, [index], "similarity", KEPT, 0.5) == pytest.approx(1.0)


def test_measure_counts_what_the_catalog_gains_on_enrolled_photos_and_costs_on_trained_ones():
    from pipeline.core.catalog.rule import CatalogRule
    from pipeline.release.catalog_evaluation import measure

    queries, training, index = small_world()
    strict = measure(queries, training, [index], CatalogRule("beats_training", 0.08), KEPT, [2], 0.5)
    assert strict == pytest.approx({
        "enrolled_top1_served": 1.0, "enrolled_top1_nearest": 1.0, "all_top1": 1.0, "all_top1_without_catalog": 0.5,
        "trained_top1": 1.0, "trained_top1_without_catalog": 1.0, "catalog_precision": 1.0,
        "catalog_coverage_of_enrolled": 1.0, "trained_taken_by_catalog": 0.0, "trained_change_points": 0.0})
    loose = measure(queries, training, [index], CatalogRule("beats_training", 0.03), KEPT, [2], 0.5)  # c taken too
    assert loose["all_top1"] == 0.75 and loose["trained_top1"] == 0.5 and loose["trained_taken_by_catalog"] == 0.5
    assert loose["catalog_precision"] == pytest.approx(2 / 3) and loose["trained_change_points"] == pytest.approx(-50)


def test_rejection_scores_enrolled_classes_photos_against_never_enrolled_ones_fold_by_fold():
    """Left-out classes 2 and 3, each enrolled in one fold and never in the other. Class 2's photos sit at e0, class
    3's at e1, except one class-3 photo that looks like class 2 (e0); a trained class-0 photo at e2; every query
    0.5 from the training gallery; the rule's margin 0.2.
    Fold 2 enrolled: scores 0.5, 0.5 (class 2) against 3's -0.5 and 0.5: AUROC 0.75 (two wins, two ties); against
    every photo not enrolled 5/6; the catalog names 2 for three photos, one of them class 3: precision 2/3.
    Fold 3 enrolled: 3's 0.5 and -0.5 against 2's -0.5, -0.5: AUROC 0.75; against all not enrolled 0.75;
    precision 1."""
    from pipeline.core.catalog.rule import CatalogRule
    from pipeline.release.catalog_evaluation import Embedded, rejection

    e = np.eye(4, dtype=np.float32)
    queries = Embedded([f"q{i}" for i in range(5)], np.array([2, 2, 3, 3, 0]), np.tile([[0.6, 0.4]], (5, 1)).astype(np.float32),
                       np.stack([e[0], e[0], e[1], e[0], e[2]]), np.ones(5, bool), np.stack([e[0], e[0], e[1], e[0], e[2]]))
    pool = Embedded([f"p{i}" for i in range(12)], np.array([2] * 6 + [3] * 6), np.zeros((12, 2), np.float32),
                    np.stack([e[0]] * 6 + [e[1]] * 6), np.ones(12, bool), np.stack([e[0]] * 6 + [e[1]] * 6))
    result = rejection(queries, np.full(5, 0.5, np.float32), pool, [2, 3], KEPT, ["zero", "one", "two", "three"],
                       CatalogRule("beats_training", 0.2), unknown_threshold=0.5)
    assert result == pytest.approx({"auroc_never_enrolled": 0.75, "auroc_all_not_enrolled": (5 / 6 + 0.75) / 2,
                                    "precision_at_threshold": (2 / 3 + 1) / 2,
                                    # class 3's q3 sits on class 2's photos: named as it when 2 is enrolled, 3 never
                                    "never_enrolled_named_by_catalog": (1 / 2 + 0) / 2})


def test_the_calibrated_weights_are_a_logistic_regression_and_its_threshold_the_lowest_at_the_precision():
    from pipeline.release.catalog_calibration import at_precision, fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    truth = np.array([0.5, 2.0, -1.0])
    features = np.column_stack([np.ones(len(x)), x])
    target = (rng.random(len(x)) < 1 / (1 + np.exp(-features @ truth))).astype(float)
    np.testing.assert_allclose(fit_logistic(features, target), truth, atol=0.15)  # it recovers the log-odds
    # scores 4 (right), 3 (right), 2 (wrong), 1 (right); enrolled: the first three
    score, right, enrolled = np.array([4.0, 3, 2, 1]), np.array([True, True, False, True]), np.array([True, True, True, False])
    assert at_precision(score, right, enrolled, 0.95) == {"threshold": 3.0, "catalog_coverage_of_enrolled": 2 / 3,
                                                          "catalog_precision": 1.0, "trained_taken_by_catalog": 0.0}
    assert at_precision(score, right, enrolled, 0.7)["threshold"] == 1.0  # 3 of 4 right
    assert at_precision(np.array([1.0]), np.array([False]), np.array([True]), 0.95) is None
