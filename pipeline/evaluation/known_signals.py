"""Which confidence signal makes `known` cover the most photos at the target precision? Measured on a run's
selection split (never val), with the models as `auto` serves them on CPU and /hello's whole-photo view:

    python -m pipeline.evaluation.known_signals --model-label model_label --run artifacts/finetune_ema_lite0

Signals: the top-1 probability (what ships), the margin over the second, their ratio, the negative entropy, and
each of them only where the largest crop's answer agrees with the whole photo's (which would cost /hello a detector
call). Coverage at the target precision, and its spread over bootstrap resamples of the photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.classification_metrics import calibrate_score
from pipeline.core.model_label import load_model_label
from pipeline.core.settings import serving_settings
from pipeline.evaluation.evaluate import ModelsUnderTest, crop_and_whole

RESAMPLES = 200


def signals(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Confidence scores of each photo's top-1 answer, higher: surer."""
    ordered = np.sort(probabilities, axis=1)
    return {"top-1 probability (shipped)": ordered[:, -1],
            "margin over the second": ordered[:, -1] - ordered[:, -2],
            "ratio to the second": ordered[:, -1] / np.maximum(ordered[:, -2], 1e-9),
            "negative entropy": (probabilities * np.log(np.maximum(probabilities, 1e-12))).sum(axis=1)}


def coverage_table(crop: np.ndarray, whole: np.ndarray, targets: np.ndarray, target_precision: float = 0.95,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """Per signal (on the whole photo's answer, /hello's): coverage at `target_precision`, and the 5th / 50th / 95th
    percentile of it over bootstrap resamples of the photos."""
    correct = whole.argmax(axis=1) == targets
    agree = crop.argmax(axis=1) == whole.argmax(axis=1)
    scores = signals(whole)
    scores |= {f"{name}, crop and whole agreeing": np.where(agree, score, -np.inf) for name, score in signals(whole).items()}
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, len(targets), len(targets)) for _ in range(RESAMPLES)]
    def coverage(score: np.ndarray, right: np.ndarray) -> float:  # 0 where no threshold reaches the precision
        calibration = calibrate_score(score, right, target_precision)
        return calibration["coverage"] if calibration["target_met"] else 0.0

    table = {}
    for name, score in scores.items():
        spread = [coverage(score[i], correct[i]) for i in resamples]
        table[name] = {"coverage": coverage(score, correct),
                       "p05": float(np.percentile(spread, 5)), "p50": float(np.median(spread)),
                       "p95": float(np.percentile(spread, 95))}
    return table


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.known_signals", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-label", default="model_label")
    parser.add_argument("--run", required=True, help="the classifier's training run (its split.json's selection split)")
    parser.add_argument("--target-precision", type=float, default=0.95)
    args = parser.parse_args(argv)
    split = json.loads((Path(args.run) / "split.json").read_text())
    models, runtimes = ModelsUnderTest.served_on_cpu(load_model_label(args.model_label))
    crop, whole = crop_and_whole(models.pass_over(split["selection"], serving_settings()))
    table = coverage_table(crop, whole, np.asarray(split["selection_class_ids"]), args.target_precision)
    print(f"{len(split['selection'])} selection photos, {runtimes}; coverage at {args.target_precision:.0%} precision "
          f"(bootstrap 5th / 50th / 95th percentile):")
    for name, row in table.items():
        print(f"  {name:55s} {row['coverage']:.1%}  ({row['p05']:.1%} / {row['p50']:.1%} / {row['p95']:.1%})")
    return table


if __name__ == "__main__":
    main()
