"""Leave-classes-out evaluation of the catalog: products enrolled from a few photos, never trained on.

    python -m pipeline.train.finetune train --leave-out 16 --out artifacts/leave_out_lite0   # the recipe, less 16 classes
    python -m pipeline.train.finetune export --out artifacts/leave_out_lite0
    python -m pipeline.release.catalog_evaluation --run artifacts/leave_out_lite0 --model-label model_label \
        --out artifacts/catalog_evaluation [--write-manifest]

The classifier of `--run` was trained on GroceryStore's classes less 16 (drawn with its seed, recorded in its
split.json with their train photos). Each left-out class is enrolled from k = 1, 3, 5, 10 of its fit photos
(several seeded draws), as the Catalog deployment enrolls: the largest product's crop, embedded by the
classifier's second output (in the runtime the shipped folder serves on CPU, converted as pipeline.release.export converts
it), through serving's photo→answer loop. The rule that decides between the catalog and
the classifier (pipeline.core.catalog.rule) and its threshold (95% precision of the catalog's answers) are
chosen on the selection split; GroceryStore val is read once, for the report. Rejection of never-enrolled
products: half the left-out classes enrolled, the other half never (two folds), AUROC of the best similarity.
A second, harder test (the shipped classifier): Freiburg's 25 categories, which it never saw, enrolled from the
detector's training photos and asked with its held-back ones (category-level few-shot: many brands each).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.classification_metrics import calibrate_unknown
from pipeline.core.catalog.match import ENROLLED_AS, CatalogIndex, CatalogSnapshot
from pipeline.core.catalog.rule import CALIBRATED_FEATURES, CATALOG_POLICIES, CatalogRule
from pipeline.core.model_label import load_model_label
from pipeline.core.models import BoxDetector, load_classifier, load_detector
from pipeline.core.paths import SHARED_DATA
from pipeline.core.photo_to_answer import ModelFacts
from pipeline.core.recognition import hello_probabilities
from pipeline.core.settings import serving_settings
from pipeline.data.datasets import load_labelled_data
from pipeline.data.held_back import is_validation
from pipeline.evaluation.evaluate import ModelsUnderTest, crop_and_whole, photo_pass
from pipeline.release import catalog_calibration as calibration
from pipeline.release import catalog_precedence as precedence
from pipeline.release import runtimes

SHOTS = (1, 3, 5, 10)
DRAWS = 5  # seeded draws of the enrollment photos per k
OPERATING_SHOTS = 5  # the rule and its threshold are chosen with every left-out class enrolled from 5 photos
TARGET_PRECISION = 0.95
FREIBURG_QUERIES_PER_CATEGORY = 20
MANIFEST_FIGURES = ("rule_choice_on_selection", "classifier_runtime", "detector_runtime", "left_out_classes", "val",
                    "val_studio_1_shot", "val_precedence", "val_rejection", "freiburg_shipped_classifier", "draws", "split_seed",
                    "leave_out_run")
CHOSEN_ON = ("the policy (among those in rule_choice_on_selection, a calibrated policy's weights fitted there too), its threshold "
             "and how an enrolled photo is embedded (enrolled_as): on the selection split (held back from train) of the "
             "leave-classes-out run, its classifier in the runtime auto serves on CPU, for 95% precision of the catalog's "
             "answers; GroceryStore val read once, after those choices, for the figures below; the gallery: the shipped "
             "classifier's fit photos only")


@dataclass(frozen=True)
class Embedded:
    """Photos through the loop: what /hello's answer is made of and the largest product's embedding."""

    paths: list[str]
    class_ids: np.ndarray  # [N]
    probabilities: np.ndarray  # [N, C] the prominent product's, by the manifest's policy
    embeddings: np.ndarray  # [N, D] the largest box's crop (the whole photo when nothing is detected): a query's
    detected: np.ndarray  # [N] bool
    enrolled: np.ndarray  # [N, D] the photo's vector when it is enrolled (Recognized.enrolled_vector; zeros: none)

    def take(self, mask: np.ndarray) -> Embedded:
        index = np.flatnonzero(mask)
        return Embedded([self.paths[i] for i in index], self.class_ids[index], self.probabilities[index],
                        self.embeddings[index], self.detected[index], self.enrolled[index])


def models_key(policy: str, *model_paths: Path) -> str:
    """What a cache's embeddings were made by: the policy and the bytes of the model files. A cache made by other
    models (a new classifier, another runtime or policy) is stale, whatever its paths."""
    digest = hashlib.sha256(policy.encode())
    for path in model_paths:
        for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
            digest.update(file.read_bytes())
    return digest.hexdigest()


def embed(models: ModelsUnderTest, paths: list[str], class_ids: list[int], policy: str, cache: Path | None = None,
          key: str = "") -> Embedded:
    """`paths` through serving's loop (cached in `cache`, when given, for the models `key` names: the models are the
    expensive part)."""
    if cache is not None and cache.is_file():
        saved = np.load(cache)
        if list(saved["paths"]) == paths and {"key", "enrolled"} <= set(saved.files) and str(saved["key"]) == key:
            return Embedded(paths, saved["class_ids"], saved["probabilities"], saved["embeddings"], saved["detected"],
                            saved["enrolled"])
    recognized = photo_pass(models.facts, models.detector, models.classifier, paths, serving_settings())
    if any(r.embeddings is None for r in recognized):
        raise ValueError("the classifier has no embedding output: export it again (pipeline.train.finetune export)")
    crops = np.stack([r.embeddings[0] for r in recognized])  # type: ignore[index]
    enrolled = [r.enrolled_vector for r in recognized]
    detected = np.array([r.detected for r in recognized])
    out = Embedded(paths, np.asarray(class_ids), hello_probabilities(*crop_and_whole(recognized), detected, policy), crops, detected,
                   np.stack([np.zeros_like(crop) if vector is None else vector for crop, vector in zip(crops, enrolled)]))
    if cache is not None:
        np.savez(cache, paths=np.array(paths), class_ids=out.class_ids, probabilities=out.probabilities,
                 embeddings=out.embeddings, detected=out.detected, enrolled=out.enrolled, key=np.array(key))
    return out


def enrollment_rows(pool: Embedded, classes: list[int], shots: int, seed: int) -> np.ndarray:
    """The pool photos each class of `classes` is enrolled from: `shots` of those with a detected product (enrollment
    refuses the others), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for class_id in classes:
        candidates = np.flatnonzero((pool.class_ids == class_id) & pool.detected)
        rows += rng.choice(candidates, size=min(shots, len(candidates)), replace=False).tolist()
    return np.array(rows, int)


def enrolled_catalog(pool: Embedded, classes: list[int], shots: int, seed: int, labels: list[str]) -> CatalogIndex:
    """The catalog of `enrollment_rows`, as the Catalog stores them (`Embedded.enrolled`)."""
    rows = enrollment_rows(pool, classes, shots, seed)
    skus = [str(c) for c in pool.class_ids[rows]]
    return CatalogIndex(CatalogSnapshot(version=1, model_version="evaluation", vectors=pool.enrolled[rows].astype(np.float32),
                                        skus=skus, labels=[labels[int(s)] for s in skus]))


def studio_catalog(models: ModelsUnderTest, data: Path, classes: list[int], labels: list[str], policy: str, out: Path,
                   key: str) -> tuple[CatalogIndex, int]:
    """Each class of `classes` enrolled from its one studio ("iconic") photo, as the Catalog enrolls (a photo in
    which the detector finds no product is refused); and how many were refused."""
    with (data / "classes.csv").open(newline="") as file:
        iconic = {int(row[1]): str(data / row[4].lstrip("/")) for row in list(csv.reader(file))[1:]}
    studio = embed(models, [iconic[c] for c in classes], classes, policy, out / "studio_embeddings.npz", key)
    kept = studio.take(studio.detected)
    index = CatalogIndex(CatalogSnapshot(version=1, model_version="evaluation", vectors=kept.enrolled.astype(np.float32),
                                         skus=[str(c) for c in kept.class_ids], labels=[labels[c] for c in kept.class_ids]))
    return index, int((~studio.detected).sum())


@dataclass(frozen=True)
class Answers:
    """Per query photo: the class answered (catalog or classifier), whether the catalog spoke, its best match."""

    answered: np.ndarray  # [N] class id in the 81-class numbering
    by_catalog: np.ndarray  # [N] bool
    matched: np.ndarray  # [N] the catalog's best class id (-1: empty catalog)
    score: np.ndarray  # [N] what the rule compares with its threshold
    eligible: np.ndarray  # [N] bool: the policy lets the catalog speak here at some threshold
    similarity: np.ndarray  # [N] the cosine of the catalog's best match (-1: empty catalog)


def answer(queries: Embedded, training: np.ndarray, index: CatalogIndex, rule: CatalogRule, kept: list[int],
           unknown_threshold: float) -> Answers:
    """The served answer per query: `training` is each query's cosine to the classifier's nearest gallery photo."""
    matches = index.best(queries.embeddings)
    model_class = np.asarray(kept)[queries.probabilities.argmax(axis=1)]
    confidence = queries.probabilities.max(axis=1)
    known = confidence >= unknown_threshold
    score = np.array([rule.score(m, float(t), float(c)) if m else -9.0 for m, t, c in zip(matches, training, confidence)])
    eligible = ~known if rule.policy == "unknown_only" else np.ones(len(score), bool)
    by_catalog = np.array([rule.picks_catalog(m, bool(k), float(t), float(c)) for m, k, t, c in zip(matches, known, training, confidence)])
    matched = np.array([int(m.sku) if m else -1 for m in matches])
    similarity = np.array([m.similarity if m else -1.0 for m in matches])
    return Answers(np.where(by_catalog, matched, model_class), by_catalog, matched, score, eligible, similarity)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half): the Mann-Whitney form."""
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + ties / 2)


def choose_threshold(queries: Embedded, training: np.ndarray, indexes: list[CatalogIndex], policy: str, kept: list[int],
                     unknown_threshold: float, weights: tuple[float, ...] = ()) -> float | None:
    """The lowest threshold at which the catalog's answers under `policy` (with its `weights`, for calibrated) are
    right >= TARGET_PRECISION of the time, over every draw's catalog (the selection split); None if no threshold
    reaches it."""
    parts = [answer(queries, training, index, CatalogRule(policy, 0.0, weights), kept, unknown_threshold) for index in indexes]
    score = np.concatenate([a.score for a in parts])
    eligible = np.concatenate([a.eligible for a in parts])
    correct = np.concatenate([a.matched == queries.class_ids for a in parts])
    best = None
    for threshold in np.unique(np.round(score[eligible], 4))[::-1]:
        taken = eligible & (score >= threshold)
        if correct[taken].mean() >= TARGET_PRECISION:
            best = float(threshold)
    return best


def measure(queries: Embedded, training: np.ndarray, indexes: list[CatalogIndex], rule: CatalogRule, kept: list[int],
            enrolled: list[int], unknown_threshold: float) -> dict[str, float]:
    """The issue's figures, averaged over the draws' catalogs."""
    rows = []
    is_enrolled = np.isin(queries.class_ids, enrolled)
    is_trained = np.isin(queries.class_ids, kept)
    without = np.asarray(kept)[queries.probabilities.argmax(axis=1)] == queries.class_ids
    for index in indexes:
        result = answer(queries, training, index, rule, kept, unknown_threshold)
        right = result.answered == queries.class_ids
        taken = result.by_catalog
        rows.append({
            "enrolled_top1_served": right[is_enrolled].mean(),
            "enrolled_top1_nearest": (result.matched == queries.class_ids)[is_enrolled].mean(),
            "all_top1": right.mean(),
            "all_top1_without_catalog": without.mean(),
            "trained_top1": right[is_trained].mean(),
            "trained_top1_without_catalog": without[is_trained].mean(),
            "catalog_precision": right[taken].mean() if taken.any() else float("nan"),
            "catalog_coverage_of_enrolled": taken[is_enrolled].mean(),
            "trained_taken_by_catalog": taken[is_trained].mean(),
        })
    out = {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}
    out["trained_change_points"] = 100 * (out["trained_top1"] - out["trained_top1_without_catalog"])
    return out


def rejection(queries: Embedded, training: np.ndarray, pool: Embedded, left_out: list[int], kept: list[int],
              labels: list[str], rule: CatalogRule, unknown_threshold: float) -> dict[str, float]:
    """Half the left-out classes enrolled (5 shots), the other half never: AUROC of the rule's score, enrolled
    classes' photos against never-enrolled ones (and against every photo not enrolled, trained classes' too), the
    precision of the catalog's answers at the rule's threshold, and the share of never-enrolled products' photos the
    catalog names (as an enrolled one: a mistake) (two folds, DRAWS draws each)."""
    aurocs, aurocs_all, precisions, mistaken = [], [], [], []
    halves = [left_out[::2], left_out[1::2]]
    for fold in range(2):
        enrolled, never = halves[fold], halves[1 - fold]
        for draw in range(DRAWS):
            index = enrolled_catalog(pool, enrolled, OPERATING_SHOTS, draw, labels)
            result = answer(queries, training, index, rule, kept, unknown_threshold)
            positive = np.isin(queries.class_ids, enrolled)
            aurocs.append(auroc(result.score[positive], result.score[np.isin(queries.class_ids, never)]))
            mistaken.append(result.by_catalog[np.isin(queries.class_ids, never)].mean())
            aurocs_all.append(auroc(result.score[positive], result.score[~positive]))
            if result.by_catalog.any():
                precisions.append((result.matched == queries.class_ids)[result.by_catalog].mean())
    return {"auroc_never_enrolled": float(np.mean(aurocs)), "auroc_all_not_enrolled": float(np.mean(aurocs_all)),
            "precision_at_threshold": float(np.mean(precisions)) if precisions else float("nan"),
            "never_enrolled_named_by_catalog": float(np.mean(mistaken))}


def freiburg(models: ModelsUnderTest, policy: str, out: Path, key: str) -> dict[str, Any]:
    """The shipped classifier on Freiburg's 25 categories it never saw: enrolled from the detector's training
    photos, asked with its held-back ones; the catalog's nearest product among the 25 (no rule: the classifier's
    81 classes are not these)."""
    root = SHARED_DATA / "freiburg_groceries"
    categories = [c.strip() for c in (root / "classes.txt").read_text().splitlines() if c.strip()]
    by_name = {c.replace("_", "").lower(): i for i, c in enumerate(categories)}
    photos = sorted((root / "images" / "train").glob("*.jpg"))
    category = [by_name[p.stem.rstrip("0123456789").replace("_", "").lower()] for p in photos]
    held_back = np.array([is_validation(p.name, 0.1, 0) for p in photos])
    rng = np.random.default_rng(0)
    pool_index, query_index = [], []
    for c in range(len(categories)):
        members = np.flatnonzero(np.asarray(category) == c)
        pool_index += rng.choice(members[~held_back[members]], size=min(30, int((~held_back[members]).sum())), replace=False).tolist()
        queries = members[held_back[members]]
        query_index += queries[:FREIBURG_QUERIES_PER_CATEGORY].tolist()
    chosen = sorted(pool_index + query_index)
    embedded = embed(models, [str(photos[i]) for i in chosen], [category[i] for i in chosen], policy, out / "freiburg_embeddings.npz", key)
    is_query = np.isin(chosen, query_index)
    pool, queries = embedded.take(~is_query), embedded.take(is_query)
    table = {}
    for shots in SHOTS:
        scores = []
        for draw in range(DRAWS):
            index = enrolled_catalog(pool, list(range(len(categories))), shots, draw, categories)
            matched = np.array([int(m.sku) if m else -1 for m in index.best(queries.embeddings)])
            scores.append((matched == queries.class_ids).mean())
        table[str(shots)] = float(np.mean(scores))
    return {"categories": len(categories), "queries": int(len(queries.paths)), "top1_by_shots": table}


def served_classifier(run: Path, runtime: str, detector: BoxDetector, facts: ModelFacts, fit: list[str]) -> Path:
    """The leave-out run's classifier in the runtime the shipped folder serves on CPU, so that the rule's threshold
    is chosen on the embeddings serving will compare: its SavedModel, or converted beside it as pipeline.release.export
    converts the shipped one (again whenever the SavedModel is newer than the converted file)."""
    saved_model = run / "export"
    if runtime == "savedmodel":
        return saved_model
    path = run / runtimes.CLASSIFIER_FILES[runtime]
    if not path.is_file() or path.stat().st_mtime < (saved_model / "saved_model.pb").stat().st_mtime:
        runtimes.convert_classifier(run, saved_model.name, fit, facts, detector, serving_settings(), "the run's fit photos")
    return path


def evaluate(run: Path, model_label: Path, out: Path, data: Path, selection_only: bool = False) -> dict[str, Any]:
    split = json.loads((run / "split.json").read_text())
    left = split["left_out"]
    all_labels: list[str] = left["all_labels"]
    left_out: list[int] = left["class_ids"]
    kept = [c for c in range(len(all_labels)) if c not in left_out]
    bundle = load_model_label(model_label)
    policy = bundle.hello_policy
    detector_runtime = bundle.resolve_runtime("detector", "auto", use_gpu=False)
    classifier_runtime = bundle.resolve_runtime("classifier", "auto", use_gpu=False)
    detector_path = bundle.runtime_path("detector", detector_runtime)
    facts = ModelFacts([all_labels[c] for c in kept], bundle.classifier_input_size, bundle.detector_input_size, policy,
                       whole_photo_share=bundle.whole_photo_share)
    detector = load_detector(detector_path, detector_runtime)  # torch first, TensorFlow after
    classifier_path = served_classifier(run, classifier_runtime, detector, facts, left["fit"])
    key = models_key(policy, detector_path, classifier_path)
    models = ModelsUnderTest(facts, detector, load_classifier(classifier_path, classifier_runtime))
    out.mkdir(parents=True, exist_ok=True)

    to_all = lambda ids: [kept[i] for i in ids]  # noqa: E731  the run numbers its kept classes 0..64
    pool = embed(models, left["fit"], left["fit_class_ids"], policy, out / "pool_embeddings.npz", key)
    selection = embed(models, split["selection"] + left["selection"], to_all(split["selection_class_ids"]) + left["selection_class_ids"],
                      policy, out / "selection_embeddings.npz", key)

    # The classifier's gallery: its fit photos (as pipeline.release.catalog_gallery ships it for a model_label).
    gallery_photos = embed(models, split["fit"], to_all(split["fit_class_ids"]), policy, out / "gallery_embeddings.npz", key)
    gallery = CatalogIndex(CatalogSnapshot(0, "evaluation", gallery_photos.embeddings.astype(np.float32),
                                           [str(c) for c in gallery_photos.class_ids], [str(c) for c in gallery_photos.class_ids]))
    selection_training = gallery.nearest_similarity(selection.embeddings)
    kept_selection = selection.take(np.isin(selection.class_ids, kept))
    unknown = calibrate_unknown(kept_selection.probabilities, np.searchsorted(kept, kept_selection.class_ids))["unknown_threshold"]
    operating = [enrolled_catalog(pool, left_out, OPERATING_SHOTS, draw, all_labels) for draw in range(DRAWS)]
    choices: dict[str, dict[str, Any]] = {}
    for name in CATALOG_POLICIES:
        weights = calibration.fit_weights(selection, selection_training, operating) if name == "calibrated" else ()
        threshold = choose_threshold(selection, selection_training, operating, name, kept, unknown, weights)
        if threshold is not None:
            choices[name] = {"threshold": threshold, "selection": measure(selection, selection_training, operating,
                                                                          CatalogRule(name, threshold, weights), kept, left_out, unknown)}
            if weights:
                choices[name] |= {"weights": list(weights), "features": list(CALIBRATED_FEATURES), "selection_cross_fitted":
                                  calibration.cross_fitted(selection, selection_training, operating, kept, left_out, TARGET_PRECISION)}
    chosen = max(choices, key=lambda name: choices[name]["selection"]["all_top1"])
    rule = CatalogRule(chosen, choices[chosen]["threshold"], tuple(choices[chosen].get("weights", ())))
    studio, refused = studio_catalog(models, data, left_out, all_labels, policy, out, key)
    labelled = precedence.labelled_gallery(gallery_photos.embeddings, gallery_photos.class_ids)
    with_precedence = lambda queries: precedence.measure(  # noqa: E731  the operator's word, at OPERATING_SHOTS
        queries, labelled, pool, [(enrollment_rows(pool, left_out, OPERATING_SHOTS, draw), index) for draw, index in enumerate(operating)],
        kept, left_out, rule, unknown)
    if selection_only:  # the choices, before GroceryStore val is read
        chosen_report = {"rule_choice_on_selection": choices, "chosen": chosen,
                         "selection_studio_1_shot": measure(selection, selection_training, [studio], rule, kept, left_out, unknown),
                         "selection_precedence": with_precedence(selection)}
        (out / "selection_report.json").write_text(json.dumps(chosen_report, indent=2) + "\n")
        return chosen_report

    val_data = load_labelled_data(data)
    val = embed(models, val_data.val.paths, val_data.val.class_ids, policy, out / "val_embeddings.npz", key)
    val_training = gallery.nearest_similarity(val.embeddings)

    val_by_shots = {}
    for shots in SHOTS:  # GroceryStore val: read once, here
        indexes = [enrolled_catalog(pool, left_out, shots, draw, all_labels) for draw in range(DRAWS)]
        val_by_shots[str(shots)] = measure(val, val_training, indexes, rule, kept, left_out, unknown)
    val_studio = measure(val, val_training, [studio], rule, kept, left_out, unknown) | {"studio_photos_refused": refused}
    report = {
        "run": str(run), "detector_runtime": detector_runtime, "classifier_runtime": classifier_runtime,
        "left_out_classes": [all_labels[c] for c in left_out], "trained_classes": len(kept),
        "enrolled_as": ENROLLED_AS, "split_seed": split["seed"], "shots": list(SHOTS), "draws": DRAWS, "operating_shots": OPERATING_SHOTS,
        "target_precision": TARGET_PRECISION, "unknown_threshold_selection": unknown,
        "rule_choice_on_selection": choices,
        "rule": {"policy": rule.policy, "threshold": rule.threshold} | ({"weights": list(rule.weights)} if rule.weights else {}),
        "val": val_by_shots, "val_studio_1_shot": val_studio, "val_precedence": with_precedence(val),
        "selection_studio_1_shot": measure(selection, selection_training, [studio], rule, kept, left_out, unknown),
        "val_rejection": rejection(val, val_training, pool, left_out, kept, all_labels, rule, unknown),
        "leave_out_run": {key: json.loads((run / "train_summary.json").read_text()).get(key)
                          for key in ("epochs_run", "best_epoch", "best_selection_top1")},
        "photos": {"pool": len(pool.paths), "selection": len(selection.paths), "val": len(val.paths),
                   "gallery": len(gallery_photos.paths)},
    }
    shipped, served = ModelsUnderTest.served_on_cpu(bundle)
    shipped_key = models_key(policy, *(bundle.runtime_path(part, runtime) for part, runtime in served.items()))
    report["freiburg_shipped_classifier"] = freiburg(shipped, policy, out, shipped_key)
    (out / "catalog_evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "catalog_evaluation.md").write_text(to_markdown(report))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"Leave-classes-out: {report['trained_classes']} classes trained, {len(report['left_out_classes'])} enrolled; "
             f"rule `{report['rule']['policy']}` at {report['rule']['threshold']:+.3f} (chosen on the "
             f"selection split for {report['target_precision']:.0%} precision); GroceryStore val, mean of {report['draws']} draws.", "",
             "| shots | enrolled photos the catalog names | its precision | enrolled top-1 (served) | enrolled top-1 (nearest) "
             "| all 81 top-1 | trained top-1 change |",
             "|---|---|---|---|---|---|---|"]
    for shots, row in report["val"].items():
        lines.append(f"| {shots} | {row['catalog_coverage_of_enrolled']:.1%} | {row['catalog_precision']:.1%} | "
                     f"{row['enrolled_top1_served']:.1%} | {row['enrolled_top1_nearest']:.1%} | {row['all_top1']:.1%} | "
                     f"{row['trained_change_points']:+.1f} pt |")
    rejection_row = report["val_rejection"]
    lines += ["", "Never-enrolled rejection (val, 8 classes enrolled, 8 never; 2 folds): "
              f"AUROC {rejection_row['auroc_never_enrolled']:.3f} "
              f"(against every photo not enrolled: {rejection_row['auroc_all_not_enrolled']:.3f}); precision at the threshold "
              f"{rejection_row['precision_at_threshold']:.1%}; never-enrolled products' photos named by the catalog "
              f"{rejection_row['never_enrolled_named_by_catalog']:.1%}."]
    studio = report["val_studio_1_shot"]
    lines += ["", f"Studio photo, 1 shot (each left-out class enrolled from its iconic photo; {studio['studio_photos_refused']} "
              f"refused, no product found): the catalog names {studio['catalog_coverage_of_enrolled']:.1%} of the enrolled "
              f"classes' photos, {studio['catalog_precision']:.1%} of its answers right; enrolled top-1 served "
              f"{studio['enrolled_top1_served']:.1%}, nearest {studio['enrolled_top1_nearest']:.1%}."]
    fb = report["freiburg_shipped_classifier"]
    lines += ["", f"Freiburg ({fb['categories']} categories never trained on, {fb['queries']} held-back photos, the shipped "
              "classifier), nearest enrolled category: " + ", ".join(f"{k}-shot {v:.1%}" for k, v in fb["top1_by_shots"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.release.catalog_evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a pipeline.train.finetune run trained with --leave-out, exported")
    parser.add_argument("--model-label", default="model_label", help="the detector, and the shipped classifier for Freiburg")
    parser.add_argument("--data", default=str(SHARED_DATA / "grocery_store"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--write-manifest", action="store_true",
                        help="record the chosen rule and the figures in --model-label's manifest (its `catalog` entry)")
    parser.add_argument("--selection-only", action="store_true",
                        help="embed and choose the rule on the selection split, write <out>/selection_report.json, and stop "
                             "before GroceryStore val is read")
    args = parser.parse_args(argv)
    if args.selection_only:
        print(json.dumps(evaluate(Path(args.run), Path(args.model_label), Path(args.out), Path(args.data), True), indent=1))
        return
    report = evaluate(Path(args.run), Path(args.model_label), Path(args.out), Path(args.data))
    print(to_markdown(report))
    if args.write_manifest:
        path = Path(args.model_label) / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["catalog"] = {"rule": report["rule"], "chosen_on": CHOSEN_ON, "enrolled_as": report["enrolled_as"],
                               "evaluation": {k: report[k] for k in MANIFEST_FIGURES}}
        path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
