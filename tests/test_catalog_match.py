"""The catalog's matching (pipeline.core.catalog.match): the answers are numpy's exact cosine nearest products."""

import pickle
import time

import faiss
import numpy as np
import pytest

from pipeline.core.catalog.match import CatalogIndex, CatalogMatch, CatalogSnapshot


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def catalog(rng: np.random.Generator, products: int, dimension: int = 1280, most_photos: int = 5) -> CatalogSnapshot:
    counts = rng.integers(1, most_photos + 1, products)
    skus = [f"sku-{p}" for p, count in enumerate(counts) for _ in range(count)]
    return CatalogSnapshot(7, "classifier-v1", unit(rng.standard_normal((len(skus), dimension))), skus,
                           [sku.replace("sku", "label") for sku in skus])


def exact_top(snapshot: CatalogSnapshot, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k products with the highest cosine over their photos, by numpy."""
    cosines = snapshot.vectors @ (query / np.linalg.norm(query))
    best: dict[str, float] = {}
    for sku, cosine in zip(snapshot.skus, cosines):
        best[sku] = max(best.get(sku, -2.0), float(cosine))
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def test_best_is_the_product_of_the_nearest_photo_with_its_cosine():
    rng = np.random.default_rng(0)
    snapshot = catalog(rng, 300)
    # Queries near a photo (a product seen again) and unrelated ones, unnormalised: both must come out exact.
    queries = np.concatenate([snapshot.vectors[rng.choice(len(snapshot.skus), 40)] * 3 + 0.02 * rng.standard_normal((40, 1280)),
                              rng.standard_normal((40, 1280))]).astype(np.float32)
    matches = CatalogIndex(snapshot).best(queries)
    assert len(matches) == len(queries)
    for query, match in zip(queries, matches):
        [(sku, cosine)] = exact_top(snapshot, query, 1)
        assert match is not None and match.sku == sku and match.label == sku.replace("sku", "label")
        assert match.similarity == pytest.approx(cosine, abs=1e-6)


def test_best_takes_the_max_over_a_products_photos():
    """Two products: one photo of A close to the query outweighs B's photos that are all fairly close."""
    e = np.eye(4, dtype=np.float32)
    vectors = unit(np.stack([e[1], e[0] + 0.2 * e[1], e[0] + 0.6 * e[2], e[0] + 0.5 * e[2], e[0] + 0.55 * e[3]]))
    snapshot = CatalogSnapshot(1, "m", vectors, ["A", "A", "B", "B", "B"], ["Apple"] * 2 + ["Banana"] * 3)
    [match] = CatalogIndex(snapshot).best(e[:1])
    assert match == CatalogMatch("A", "Apple", pytest.approx(float(vectors[1, 0]), abs=1e-6))


def test_near_ties_are_decided_in_float32():
    """Photos whose cosines differ by less than the int8 scan can tell apart still come out in their float32 order
    (the scan alone ties all 12 and ranks another photo first)."""
    rng = np.random.default_rng(3)
    query = unit(rng.standard_normal(256))
    other = rng.standard_normal(256)
    other = unit(other - (other @ query) * query)  # orthogonal to the query
    cosines = 0.9 + np.arange(12) * 2e-6
    vectors = unit(np.stack([c * query + np.sqrt(1 - c * c) * other for c in cosines]))
    order = rng.permutation(12)
    snapshot = CatalogSnapshot(1, "m", vectors[order], [f"s{i}" for i in order], [f"l{i}" for i in order])
    [match] = CatalogIndex(snapshot).best(query[None])
    assert match is not None and match.sku == "s11"
    assert match.similarity == pytest.approx(float(vectors[11] @ query), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_best_is_exact_on_vectors_like_the_classifiers(seed):
    """Pooled ReLU6 features are non-negative and sparse, so every cosine is positive and many are close: where
    the int8 scan's rounding matters most. Queries near a photo and unrelated ones: the exact nearest each time."""
    rng = np.random.default_rng(seed)
    features = lambda n: rng.gamma(0.3, size=(n, 1280)) * (rng.random((n, 1280)) < 0.5)  # noqa: E731
    vectors = unit(features(5000))
    snapshot = CatalogSnapshot(1, "m", vectors, [f"sku-{i // 3}" for i in range(5000)], [f"label-{i // 3}" for i in range(5000)])
    queries = np.concatenate([vectors[rng.choice(5000, 40)] + 0.05 * unit(features(40)), unit(features(40))]).astype(np.float32)
    index = CatalogIndex(snapshot)
    exact = unit(queries) @ vectors.T
    assert index.nearest_similarity(queries) == pytest.approx(exact.max(axis=1), abs=1e-6)
    assert [m.sku for m in index.best(queries)] == [snapshot.skus[i] for i in exact.argmax(axis=1)]  # type: ignore[union-attr]
    fp16 = CatalogIndex(snapshot, scan="fp16")  # the scan it replaced answers the same
    assert [m.sku for m in fp16.best(queries)] == [m.sku for m in index.best(queries)]  # type: ignore[union-attr]


def test_top_k_are_distinct_products_nearest_first():
    rng = np.random.default_rng(2)
    snapshot = catalog(rng, 200, dimension=128, most_photos=8)
    index = CatalogIndex(snapshot)
    queries = unit(snapshot.vectors[:25] + 0.3 * unit(rng.standard_normal((25, 128))))
    for query, matches in zip(queries, index.top(queries, 5)):
        assert [(m.sku, pytest.approx(m.similarity, abs=1e-6)) for m in matches] == exact_top(snapshot, query, 5)
    assert [len(m) for m in index.top(queries[:2], 500)] == [200, 200]  # asked for more than there are: all, once each


def test_nearest_similarity_is_the_exact_cosine_of_the_nearest_photo():
    rng = np.random.default_rng(5)
    snapshot = catalog(rng, 300)
    index = CatalogIndex(snapshot)
    queries = np.concatenate([snapshot.vectors[:20] * 2 + 0.05 * rng.standard_normal((20, 1280)),
                              rng.standard_normal((20, 1280))]).astype(np.float32)
    exact = (unit(queries) @ snapshot.vectors.T).max(axis=1)
    assert index.nearest_similarity(queries) == pytest.approx(exact, abs=1e-6)
    assert index.nearest_similarity(queries) == pytest.approx([m.similarity for m in index.best(queries)], abs=1e-6)


def test_an_empty_catalog_matches_nothing():
    index = CatalogIndex(CatalogSnapshot.empty("classifier-v1"))
    assert index.empty and not CatalogIndex(catalog(np.random.default_rng(3), 5)).empty
    assert index.best(np.ones((3, 1280), np.float32)) == [None, None, None]
    assert index.nearest_similarity(np.ones((2, 1280), np.float32)).tolist() == [-1.0, -1.0]
    assert index.top(np.ones((2, 1280), np.float32), 3) == [[], []]
    assert CatalogIndex(catalog(np.random.default_rng(3), 5)).best(np.empty((0, 1280), np.float32)) == []


def test_the_snapshot_travels_by_pickle():
    snapshot = catalog(np.random.default_rng(4), 50)
    copy = pickle.loads(pickle.dumps(snapshot))
    assert (copy.version, copy.model_version, copy.skus, copy.labels) == (7, "classifier-v1", snapshot.skus, snapshot.labels)
    assert np.array_equal(copy.vectors, snapshot.vectors) and copy.products == snapshot.products
    assert CatalogIndex(copy).best(snapshot.vectors[:5]) == CatalogIndex(snapshot).best(snapshot.vectors[:5])


def test_bad_snapshots_and_queries_are_refused():
    vectors = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="2 vectors, 1 skus"):
        CatalogSnapshot(1, "m", vectors, ["a"], ["A"])
    with pytest.raises(ValueError, match="float32"):
        CatalogSnapshot(1, "m", vectors.astype(np.float64), ["a", "b"], ["A", "B"])
    with pytest.raises(ValueError, match="dimension 4"):
        CatalogIndex(CatalogSnapshot(1, "m", vectors, ["a", "b"], ["A", "B"])).best(np.ones((1, 4), np.float32))


def test_a_10000_photo_catalog_is_held_and_scanned_at_one_byte_a_component():
    """What keeps a 10,000-photo search to a millisecond a crop on one thread (BENCHMARKS.md, load_tests.catalog_cost:
    0.57 ms measured) is the int8 scan: faiss holds each component in one byte, a quarter of float32's memory traffic.
    Checked as structure, not as a wall-clock bound (a float32 or fp16 scan fails here at any machine speed); the
    best of ten one-thread runs is printed."""
    rng = np.random.default_rng(5)
    index = CatalogIndex(catalog(rng, 2_000, most_photos=9))
    photos = len(index.snapshot.skus)
    assert photos > 9_000
    faiss_index = index._index
    assert isinstance(faiss_index, faiss.IndexScalarQuantizer) and faiss_index.ntotal == photos
    assert faiss_index.sq.qtype == faiss.ScalarQuantizer.QT_8bit_direct_signed and faiss_index.code_size == 1280
    queries = unit(rng.standard_normal((8, 1280)))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.best(queries)
        runs = []
        for _ in range(10):
            started = time.perf_counter()
            index.best(queries)
            runs.append((time.perf_counter() - started) / len(queries))
    finally:
        faiss.omp_set_num_threads(threads)
    print(f"\n{photos} photos: {min(runs) * 1e3:.2f} ms per crop, best of 10, one thread")
