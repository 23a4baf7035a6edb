"""The product catalog from the command line: what it holds, and its photos embedded again for a new classifier.

    python -m pipeline.release.catalog_cli info --catalog DIR
    python -m pipeline.release.catalog_cli list --catalog DIR [--offset 0] [--limit 50]
    python -m pipeline.release.catalog_cli history --catalog DIR [--offset 0] [--limit 50]
    python -m pipeline.release.catalog_cli reembed --catalog DIR [--model-label model_label]

`reembed` gives every stored photo an embedding of the model_label's classifier (its version, with how a photo is
embedded, names the embedding space), as the served graph embeds an enrollment photo: through the photo → answer
loop, its largest product's crop with the whole photo (`embed_photos`). A photo the model finds no product in gets
none, and is listed. Once all have one, the catalog switches to that model (a new catalog version); stopped before,
it goes on from there next time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.core.catalog.history import history_entry
from pipeline.core.catalog.match import embedding_space
from pipeline.core.catalog.store import CatalogStore
from pipeline.core.loop_modes import ENROLLMENT
from pipeline.core.model_label import load_model_label
from pipeline.core.models import load_classifier, load_detector
from pipeline.core.paths import MODEL_LABEL_DIR, SERVE_CONFIG
from pipeline.core.photo_to_answer import Classified, ModelFacts, PhotoToAnswer
from pipeline.core.preprocessing import ImageError
from pipeline.core.progress import progress
from pipeline.core.settings import serving_settings


def embed_photos(photos: Sequence[bytes], loop: PhotoToAnswer, detect: Callable[[list[np.ndarray]], list[np.ndarray]],
                 classify: Callable[[list[np.ndarray]], Classified]) -> list[np.ndarray | None]:
    """Per photo, its enrolled vector (its largest product's crop, the product /hello names, with the whole photo:
    `Recognized.enrolled_vector`), or None when the detector finds no product in it or it does not decode."""
    try:
        recognized, _ = loop.run(photos, detect, classify, ENROLLMENT)
    except ImageError:
        if len(photos) == 1:
            return [None]
        return [embedding for photo in photos for embedding in embed_photos([photo], loop, detect, classify)]
    if any(found.embeddings is None for found in recognized):
        raise ValueError("this classifier has no embedding output: export its model_label again (python -m pipeline.release.export)")
    return [found.enrolled_vector for found in recognized]


def reembed(args: argparse.Namespace) -> dict:
    """Embeds the catalog's photos with the model_label's models, in the runtimes the service would run on CPU."""
    bundle = load_model_label(args.model_label)
    settings = serving_settings(args.serve_config)
    runtimes = {part: bundle.resolve_runtime(part, getattr(args, f"{part}_runtime"), use_gpu=False)
                for part in ("detector", "classifier")}
    detector = load_detector(bundle.runtime_path("detector", runtimes["detector"]), runtimes["detector"])  # torch before TensorFlow
    classifier = load_classifier(bundle.runtime_path("classifier", runtimes["classifier"]), runtimes["classifier"])
    loop = PhotoToAnswer(ModelFacts.of(bundle, runtimes["classifier"]), settings.recognizer)
    model_version = embedding_space(bundle.versions["classifier"], bundle.whole_photo_share)

    def embed(photos: list[bytes]) -> list[np.ndarray | None]:
        return embed_photos(photos, loop, lambda images: detector.detect(images, settings.detector), classifier)

    with CatalogStore(args.catalog) as store:
        with progress(total=len(store.photos_needing(model_version)), unit="photo", desc=f"embedding for {model_version}") as bar:
            report = store.reembed(embed, model_version, actor=args.actor, batch=args.batch, progress=bar.update)
    return {**dataclasses.asdict(report), "runtimes": runtimes}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.release.catalog_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help in (("info", "version, counts and model version (JSON)"), ("list", "the products, a page at a time (JSON)"),
                       ("history", "the versions, newest first, a page at a time: what changed, who, when (JSON)"),
                       ("reembed", "embed the stored photos for the model_label's classifier")):
        command = commands.add_parser(name, help=help)
        command.add_argument("--catalog", required=True, help="the catalog's folder (catalog.sqlite3)")
    for paged in ("list", "history"):
        commands.choices[paged].add_argument("--offset", type=int, default=0)
        commands.choices[paged].add_argument("--limit", type=int, default=50)
    options = commands.choices["reembed"]
    options.add_argument("--model-label", default=str(MODEL_LABEL_DIR), help="whose classifier (and detector) embeds")
    options.add_argument("--serve-config", default=str(SERVE_CONFIG), help="the photo and detector settings, as served")
    options.add_argument("--classifier-runtime", default="auto", help="auto: what the service runs on CPU")
    options.add_argument("--detector-runtime", default="auto")
    options.add_argument("--batch", type=int, default=16, help="photos per loop pass and per transaction")
    options.add_argument("--actor", default="pipeline.release.catalog_cli reembed", help="who the audit log names")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if not (Path(args.catalog) / "catalog.sqlite3").is_file():
        sys.exit(f"no catalog in {args.catalog}")
    if args.command == "reembed":
        result = reembed(args)
    else:
        with CatalogStore(args.catalog) as store:
            if args.command == "info":
                result = dataclasses.asdict(store.info())
            elif args.command == "history":
                total, entries = store.history(args.offset, args.limit)
                result = {"total": total, "offset": args.offset, "limit": args.limit,
                          "versions": [history_entry(entry) for entry in entries]}
            else:
                total, products = store.products(args.offset, args.limit)
                result = {"total": total, "offset": args.offset, "limit": args.limit,
                          "products": [{**dataclasses.asdict(p), "photos": p.photos} for p in products]}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
