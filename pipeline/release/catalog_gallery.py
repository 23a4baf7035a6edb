"""The classifier's gallery: the embeddings of the photos it was fitted on, shipped in model_label/.

    python -m pipeline.release.catalog_gallery --model-label model_label --run artifacts/finetune_lite0

The catalog rule `beats_training` (pipeline.core.catalog.rule) lets the catalog name a crop only when the crop is
closer to an enrolled product than to any photo the classifier was trained on: a crop of a trained product is
nearest to its own training photos, one of a new product to its enrolled photos. The leave-classes-out evaluation
(pipeline.release.catalog_evaluation) measured that this margin separates the two far better than the similarity alone.
Each fit photo (never a selection or val photo) goes through serving's photo→answer loop with the runtimes that
serve on CPU; the largest product's embedding is kept, float16 (the rule compares similarities to 1e-3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.model_label import GALLERY_NAME, MANIFEST_NAME, load_model_label
from pipeline.evaluation.evaluate import ModelsUnderTest
from pipeline.release.catalog_evaluation import embed


def embed_fit_photos(model_label: Path, paths: list[str], class_ids: list[int]) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """The largest product's embedding of each photo (the whole photo's when nothing is detected), by the
    model_label's models in the runtimes `auto` serves on CPU (returned too), as the evaluation embeds them."""
    bundle = load_model_label(model_label)
    models, runtimes = ModelsUnderTest.served_on_cpu(bundle)
    embedded = embed(models, paths, class_ids, bundle.hello_policy)
    return embedded.embeddings, embedded.class_ids.astype(np.int32), runtimes


def write_gallery(model_label: Path, run: Path) -> dict[str, Any]:
    """model_label/classifier_gallery.npz from `run`'s fit photos (its split.json), and its manifest entry."""
    split = json.loads((run / "split.json").read_text())
    embeddings, class_ids, runtimes = embed_fit_photos(model_label, split["fit"], split["fit_class_ids"])
    path = model_label / GALLERY_NAME
    np.savez(path, embeddings=embeddings.astype(np.float16), class_ids=class_ids)
    manifest_path = model_label / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    entry = {"path": GALLERY_NAME, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "photos": int(len(class_ids)),
             "source": f"the fit photos of {run / 'split.json'} (never selection or val)", "classifier_runtime": runtimes["classifier"],
             "detector_runtime": runtimes["detector"],
             "model_version": manifest["classifier"]["version"], "dtype": "float16"}
    manifest["classifier"]["gallery"] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.release.catalog_gallery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-label", default="model_label")
    parser.add_argument("--run", required=True, help="the training run whose split.json names the classifier's fit photos")
    args = parser.parse_args(argv)
    print(json.dumps(write_gallery(Path(args.model_label), Path(args.run)), indent=2))


if __name__ == "__main__":
    main()
