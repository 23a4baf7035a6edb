"""What a catalog costs recognition: the raw pipeline (load_tests/inprocess.py: the served models and the one
photo→answer loop) on the same real photos without a catalog and with one of `--size` enrolled photos, searched
by the int8 scan that serves and by the float16 scan it replaced (pipeline.core.catalog.match), rounds
interleaved so that the machine's drift hits all three alike.

    python -m load_tests.catalog_cost [--size 10000] [--photos 16] [--rounds 12] [--out artifacts/catalog_cost.json]

The catalog's vectors are random unit vectors of the classifier's embedding width: the search's cost does not
depend on their values, only on how many there are. Reports per-round CPU seconds and wall seconds per photo,
their medians and the ratio with / without, the search alone per crop, and the snapshot's size (what an ingress
replica receives when the catalog changes).
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import faiss
import numpy as np

from load_tests.classifier_cost import cpu_name
from load_tests.inprocess import InProcessPipeline
from load_tests.photos import grocery_val_photos
from pipeline.core.catalog.match import SCANS, CatalogIndex, CatalogSnapshot, gallery_index


def catalog_of(size: int, dimension: int, model_version: str, seed: int = 0, scan: str = "int8") -> CatalogIndex:
    vectors = np.random.default_rng(seed).standard_normal((size, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    skus = [f"sku-{i // 5}" for i in range(size)]  # 5 photos a product
    return CatalogIndex(CatalogSnapshot(1, model_version, vectors, skus, [f"Product {s}" for s in skus]), scan=scan)


def measure(size: int, photos: int, rounds: int, threads: int) -> dict:
    faiss.omp_set_num_threads(1)  # as in an ingress replica
    pipeline = InProcessPipeline(None, threads=threads)
    bundle = pipeline.bundle
    if not bundle.embedding_dim:
        raise SystemExit("this model_label's classifier has no embedding output")
    indexes = {scan: catalog_of(size, bundle.embedding_dim, bundle.versions["classifier"], scan=scan) for scan in SCANS}
    index = indexes["int8"]
    # as the ingress runs with a catalog: the gallery search too (the loop asks it when the manifest's rule needs it)
    gallery = gallery_index(bundle.gallery_path, bundle.versions["classifier"]) if bundle.gallery_path else None
    reference = gallery.nearest_similarity if gallery else None
    data = [p.read_bytes() for p in grocery_val_photos(photos)]
    runs = {"without": None, "with": index.best, "with_fp16_scan": indexes["fp16"].best}
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for match in runs.values():  # warm every path
        pipeline.recognize(data, match=match, reference=reference if match else None)
    for _ in range(rounds):
        for name, match in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            pipeline.recognize(data, match=match, reference=reference if match else None)
            rows[name].append(((time.process_time() - cpu) / len(data), (time.perf_counter() - wall) / len(data)))
    queries = np.random.default_rng(1).standard_normal((64, bundle.embedding_dim)).astype(np.float32)
    search_ms = {}
    for scan, searched in indexes.items():
        started = time.perf_counter()
        for query in queries:
            searched.best(query[None])
        search_ms[scan] = (time.perf_counter() - started) / len(queries) * 1000
    median = {name: {"cpu_s_per_photo": float(np.median([r[0] for r in values])),
                     "wall_s_per_photo": float(np.median([r[1] for r in values]))} for name, values in rows.items()}
    return {
        "cpu": cpu_name(), "threads": threads, "catalog_photos": size, "photos": photos, "rounds": rounds,
        "runtimes": pipeline.runtimes, "rule": bundle.catalog_rule.policy, "median": median,
        "ratio_cpu": median["with"]["cpu_s_per_photo"] / median["without"]["cpu_s_per_photo"],
        "ratio_wall": median["with"]["wall_s_per_photo"] / median["without"]["wall_s_per_photo"],
        "ratio_cpu_fp16_scan": median["with_fp16_scan"]["cpu_s_per_photo"] / median["without"]["cpu_s_per_photo"],
        "search_ms_per_crop": search_ms,
        "snapshot_mb": len(pickle.dumps(index.snapshot)) / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load_tests.catalog_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="enrolled photos in the catalog")
    parser.add_argument("--photos", type=int, default=16, help="GroceryStore val photos per round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="model threads (a replica's share on a 2-core node: 1)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = measure(args.size, args.photos, args.rounds, args.threads)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
