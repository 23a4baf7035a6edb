"""pipeline.catalog_evaluation's caches: embeddings are reused only for the models and the policy that made them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.catalog_evaluation import embed, models_key


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
