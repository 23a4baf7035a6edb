"""Fine-tune a whole ImageNet-pretrained EfficientNet-Lite (0, 1 or 2) on the shop photos, in torch, then port it to
the TF SavedModel that serving loads.

    python -m pipeline.train.finetune train --backbone lite2 --out artifacts/finetune_lite2     # ~35 min on 2 cores
    python -m pipeline.train.finetune train ... --resume                                         # after an interruption
    python -m pipeline.train.finetune export --out artifacts/finetune_lite2                      # → <out>/export/

Why torch: the TF-Hub path (hub.KerasLayer, trainable) with the same recipe stayed near the frozen probe
(issue 16's trials); torch's loop reaches the recipe's figures. Serving keeps loading a TF SavedModel, ported by
pipeline.train.efficientnet_lite (agrees with torch to ~1e-5), and the manifest says which path made it.

The recipe: a cosine head (pipeline.train.cosine_head) started from the frozen network's class means, so epoch 1 does not
start at chance (before 2026-12-02: one linear layer started from the frozen network's linear probe); AdamW, head
1e-3 and backbone 2e-4, weight decay 1e-2 except biases and BatchNorm, warm-up then cosine; label smoothing 0.1;
BatchNorm statistics frozen (eval mode) while its scale and shift train; random-resized crops (scale 0.6-1) from a
whole-photo resize, flips, colour jitter.

Every choice is made on a *selection split* held back from train (pipeline.data.selection_split: stratified by class,
whole sessions, seeded, recorded in split.json); GroceryStore val is not read here. Photos are decoded once
(pipeline.core.preprocessing, as served) and kept as uint8 arrays; a checkpoint is written after every epoch so
`--resume` goes on where a run stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.classification_metrics import top_k_accuracy
from pipeline.core.model_label import LABELS_NAME, read_labels, write_labels
from pipeline.core.preprocessing import classifier_input, decode_photo
from pipeline.core.progress import progress
from pipeline.data.datasets import Split, load_labelled_data
from pipeline.data.selection_split import photo_groups, selection_split
from pipeline.train import efficientnet_lite
from pipeline.train.dataclass_cli import add_options, config_from_args
from pipeline.train.efficientnet_lite import VARIANTS, export_model
from pipeline.train.finetune_config import (
    BASELINE_EXPORT_DIR,
    BEST_NAME,
    CONFIG_NAME,
    COSINE_SCALE,
    EXPORT_DIR,
    HISTORY_NAME,
    LAST_NAME,
    PROBE_NAME,
    SPLIT_NAME,
    SUMMARY_NAME,
    FinetuneConfig,
)
from pipeline.train.finetune_network import (
    augment,
    build_network,
    fit_temperature,
    freeze_batchnorm_statistics,
    linear_probe,
    logits_of,
    parameter_groups,
    pooled_features,
    train_step,
    warmup_cosine,
    weight_average,
)
from pipeline.train.retrieval_loss import ClassificationAndRetrievalLoss, balanced_batches

# ---------------------------------------------------------------- data


def limit_per_class(split: Split, count: int | None) -> Split:
    if count is None:
        return split
    seen: dict[int, int] = {}
    keep = []
    for i, class_id in enumerate(split.class_ids):
        seen[class_id] = seen.get(class_id, 0) + 1
        if seen[class_id] <= count:
            keep.append(i)
    return Split([split.paths[i] for i in keep], [split.class_ids[i] for i in keep])


def left_out_classes(num_classes: int, count: int, seed: int) -> list[int]:
    """The `count` class ids a leave-classes-out run does not train on (sorted; seeded)."""
    return sorted(np.random.default_rng(seed).choice(num_classes, size=count, replace=False).tolist()) if count else []


def without_classes(split: Split, left_out: list[int]) -> tuple[Split, Split]:
    """`split` without the `left_out` classes (ids renumbered over the kept classes, in order), and their photos."""
    kept = [c for c in range(max(split.class_ids) + 1) if c not in left_out]
    new_id = {c: i for i, c in enumerate(kept)}
    keep = [i for i, c in enumerate(split.class_ids) if c in new_id]
    out = [i for i, c in enumerate(split.class_ids) if c not in new_id]
    return (Split([split.paths[i] for i in keep], [new_id[split.class_ids[i]] for i in keep]),
            Split([split.paths[i] for i in out], [split.class_ids[i] for i in out]))


def load_photos(paths: list[str], size: int, desc: str = "decoding") -> np.ndarray:
    """Whole photos decoded once as served (pipeline.core.preprocessing) and squashed to size x size: uint8 [N, S, S, 3]."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(progress(paths, desc=desc, unit="photo", leave=False)):
        out[i] = classifier_input(decode_photo(Path(path).read_bytes()).image, None, size)
    return out


# ---------------------------------------------------------------- the run


def final_fit_recipe(config: FinetuneConfig) -> tuple[FinetuneConfig, dict[str, Any], dict[str, Any]]:
    """The held-back run's recipe with this run's folder, threads and resume; its split and its summary."""
    run = Path(str(config.final_fit))
    recipe = json.loads((run / CONFIG_NAME).read_text())
    recipe.update(out=config.out, threads=config.threads, resume=config.resume, final_fit=str(run))
    if recipe.get("leave_out"):
        raise ValueError(f"{run} left classes out: a final fit is of a full run")
    recipe["crop_scale"] = tuple(recipe["crop_scale"])
    return FinetuneConfig(**recipe), json.loads((run / SPLIT_NAME).read_text()), json.loads((run / SUMMARY_NAME).read_text())


def train(config: FinetuneConfig) -> dict[str, Any]:
    import torch

    started = time.time()
    held_back: dict[str, Any] | None = None  # a final fit: the held-back run's summary (its chosen epoch and weights)
    if config.final_fit:
        config, held_back_split, held_back = final_fit_recipe(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    variant = VARIANTS[config.backbone]
    data = load_labelled_data(config.data)
    train_split = limit_per_class(data.train, config.max_per_class)
    if held_back is not None:  # every photo the held-back run saw or chose with, none held back
        train_split = Split(held_back_split["fit"] + held_back_split["selection"],
                            held_back_split["fit_class_ids"] + held_back_split["selection_class_ids"])
        fit, selection = train_split, Split([], [])
        split_record: dict[str, Any] = {"seed": config.seed, "fraction": 0.0, "source": data.source,
                                        "final_fit_of": config.final_fit, "fit": fit.paths, "selection": [],
                                        "fit_class_ids": fit.class_ids, "selection_class_ids": []}
    else:
        # Sessions found with the same ImageNet Lite0 features whatever the backbone: every backbone gets the same split.
        lite0_features = pooled_features(build_network("lite0", data.num_classes),
                                         load_photos(train_split.paths, VARIANTS["lite0"].input_size), desc="sessions")
        groups = photo_groups(lite0_features, train_split.class_ids, config.group_similarity)
        fit, selection = selection_split(train_split, config.selection_fraction, config.seed, groups)
        split_record = {"seed": config.seed, "fraction": config.selection_fraction, "source": data.source,
                        "grouping": {"features": "ImageNet EfficientNet-Lite0, pooled, whole photo at 224 px",
                                     "cosine_above": config.group_similarity, "groups": int(len(np.unique(groups))),
                                     "classes_in_selection": len(set(selection.class_ids))},
                        "fit": fit.paths, "selection": selection.paths,
                        "fit_class_ids": fit.class_ids, "selection_class_ids": selection.class_ids}
    labels = data.labels
    left_out = left_out_classes(data.num_classes, config.leave_out, config.seed)
    if left_out:  # the same fit / selection split as a full run, less the left-out classes (recorded, ids as in data)
        (fit, fit_out), (selection, selection_out) = without_classes(fit, left_out), without_classes(selection, left_out)
        labels = [label for c, label in enumerate(data.labels) if c not in left_out]
        split_record.update(fit=fit.paths, selection=selection.paths, fit_class_ids=fit.class_ids,
                            selection_class_ids=selection.class_ids,
                            left_out={"class_ids": left_out, "labels": [data.labels[c] for c in left_out],
                                      "all_labels": data.labels, "fit": fit_out.paths, "fit_class_ids": fit_out.class_ids,
                                      "selection": selection_out.paths, "selection_class_ids": selection_out.class_ids})
    if config.resume and (out / SPLIT_NAME).is_file():
        if json.loads((out / SPLIT_NAME).read_text())["selection"] != selection.paths:
            raise ValueError(f"{out / SPLIT_NAME} holds another selection split: resume with the same data and seed")
    (out / SPLIT_NAME).write_text(json.dumps(split_record) + "\n")
    (out / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n")
    write_labels(out / LABELS_NAME, labels)

    size = variant.input_size
    fit_photos = load_photos(fit.paths, round(size * config.resize_margin), "decoding fit photos")
    selection_photos = load_photos(selection.paths, size, "decoding selection photos")
    fit_targets, selection_targets = np.asarray(fit.class_ids), np.asarray(selection.class_ids)
    print(f"{len(fit.paths)} fit / {len(selection.paths)} selection photos, {len(labels)} classes, "
          f"decoded in {time.time() - started:.0f} s", flush=True)

    network = build_network(config.backbone, len(labels), config.head, config.cosine_scale)
    steps_per_epoch = math.ceil(len(fit.paths) / config.batch_size)
    if config.max_steps:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    optimizer = torch.optim.AdamW(parameter_groups(network, config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, steps_per_epoch * config.epochs))
    state: dict[str, Any] = {"epoch": 0, "best_selection_top1": -1.0, "best_epoch": 0, "probe": None}
    average = weight_average(network, config.ema_decay)
    if config.resume and (out / LAST_NAME).is_file():
        checkpoint = torch.load(out / LAST_NAME, map_location="cpu", weights_only=False)
        network.load_state_dict(checkpoint["model"])
        if average is not None:
            average.load_state_dict(checkpoint["average"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        state = checkpoint["state"]
        print(f"resumed after epoch {state['epoch']}", flush=True)
    else:
        # The head starts from the frozen network's linear probe, or for the cosine head its class means (on the fit
        # photos at the native size, unaugmented); for Lite0 those features are the ones the sessions were found with.
        if config.backbone == "lite0" and held_back is None:
            position = {path: i for i, path in enumerate(train_split.paths)}
            fit_features = lite0_features[[position[path] for path in fit.paths]]
        else:
            fit_features = pooled_features(network, load_photos(fit.paths, size))
        # The probe is fitted for either head: it is also the evaluation's first row (export's baseline_export).
        weight, bias = linear_probe(fit_features, fit_targets, len(labels), config.probe_l2)
        np.savez(out / PROBE_NAME, weight=weight, bias=bias)
        if config.head == "cosine":
            network._fc.imprint(torch.from_numpy(fit_features), torch.from_numpy(fit_targets))
        else:
            with torch.no_grad():
                network._fc.weight.copy_(torch.from_numpy(weight))
                network._fc.bias.copy_(torch.from_numpy(bias))
        if len(selection_photos):
            probe = logits_of(network, selection_photos)
            state["probe"] = {"head": config.head, "selection_top1": top_k_accuracy(probe, selection_targets, 1),
                              "selection_top5": top_k_accuracy(probe, selection_targets, 5)}
            print(f"{config.head} head at its start: selection top-1 {state['probe']['selection_top1']:.3f}", flush=True)
        if average is not None:  # the head's start is the average's start too
            average = weight_average(network, config.ema_decay)
        with (out / HISTORY_NAME).open("w", newline="") as file:
            csv.writer(file).writerow(["epoch", "train_loss", "selection_top1", "selection_top5", "seconds",
                                       "average_top1", "average_top5"])

    if config.cosine_margin:
        if config.head != "cosine":
            raise ValueError("--cosine-margin needs --head cosine")
        from pipeline.train.cosine_head import AdditiveMarginLoss  # imports torch at module level: here, torch loads only when training

        loss_function: torch.nn.Module = AdditiveMarginLoss(config.cosine_scale, config.cosine_margin, config.label_smoothing)
    else:
        loss_function = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    if config.retrieval_weight:
        loss_function = ClassificationAndRetrievalLoss(  # type: ignore[assignment]
            loss_function, config.retrieval_weight, config.retrieval_temperature)
    generator = np.random.default_rng(config.seed + state["epoch"])
    # A final fit runs the held-back run's schedule (its epochs) and stops at the epoch that run chose.
    last_epoch = config.epochs if held_back is None else int(held_back["best_epoch"])
    while state["epoch"] < last_epoch:
        epoch_started = time.time()
        network.train()
        freeze_batchnorm_statistics(network)
        order = generator.permutation(len(fit.paths))
        batches = [order[step * config.batch_size:(step + 1) * config.batch_size] for step in range(steps_per_epoch)]
        if config.photos_per_class:
            batches = balanced_batches(fit_targets, config.batch_size, config.photos_per_class, generator)[:steps_per_epoch]
        losses = []
        for index in progress(batches, desc=f"epoch {state['epoch'] + 1}/{last_epoch}", unit="step", leave=False):
            images = augment(torch.from_numpy(fit_photos[index]), size, config)
            losses.append(train_step(network, optimizer, scheduler, loss_function, images, fit_targets[index]))
            if average is not None:
                average.update_parameters(network)
        state["epoch"] += 1
        if held_back is not None:  # nothing to score on: the held-back run's chosen weights, at its chosen epoch
            top1 = top5 = float("nan")
            candidates = [(top1, top5, "trained", network)] + ([(top1, top5, "average", average.module)] if average else [])
            if state["epoch"] == last_epoch:
                weights = held_back.get("best_weights", "trained")
                best_network = next(c[3] for c in candidates if c[2] == weights)
                state.update(best_epoch=state["epoch"], best_weights=weights)
                torch.save(best_network.state_dict(), out / BEST_NAME)
        else:
            logits = logits_of(network, selection_photos, desc="selection: trained")
            top1, top5 = top_k_accuracy(logits, selection_targets, 1), top_k_accuracy(logits, selection_targets, 5)
            candidates = [(top1, top5, "trained", network)]
            if average is not None:
                averaged = logits_of(average.module, selection_photos, desc="selection: weight average")
                candidates.append((top_k_accuracy(averaged, selection_targets, 1),
                                   top_k_accuracy(averaged, selection_targets, 5), "average", average.module))
            best_top1, best_top5, weights, best_network = max(candidates, key=lambda c: c[0])  # ties: the trained weights
            if best_top1 > state["best_selection_top1"]:
                state.update(best_selection_top1=best_top1, best_selection_top5=best_top5, best_epoch=state["epoch"],
                             best_weights=weights)
                torch.save(best_network.state_dict(), out / BEST_NAME)
        seconds = time.time() - epoch_started
        averages = [f"{candidates[1][0]:.4f}", f"{candidates[1][1]:.4f}"] if average is not None else ["", ""]
        with (out / HISTORY_NAME).open("a", newline="") as file:
            csv.writer(file).writerow([state["epoch"], f"{np.mean(losses):.4f}", f"{top1:.4f}", f"{top5:.4f}", f"{seconds:.0f}",
                                       *averages])
        state.setdefault("first_loss", losses[0])
        state["last_loss"] = float(np.mean(losses[-max(1, len(losses) // 4):]))
        _save_atomically({"model": network.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "torch_rng": torch.get_rng_state(), "state": state,
                          "average": average.state_dict() if average is not None else None}, out / LAST_NAME)
        print(f"epoch {state['epoch']}/{config.epochs}: loss {np.mean(losses):.3f}, selection top-1 {top1:.3f} "
              f"top-5 {top5:.3f}" + (f", weight average {averages[0]} / {averages[1]}" if average is not None else "")
              + f", {seconds:.0f} s", flush=True)

    summary = {
        "trainer": "pipeline.train.finetune (torch, whole network), ported to TF by pipeline.train.efficientnet_lite",
        "backbone": config.backbone, "input_size": size, "hyperparameters": asdict(config),
        "data": {"source": data.source, "num_classes": len(labels), "left_out_classes": len(left_out), "fit_photos": len(fit.paths),
                 "selection_photos": len(selection.paths), "selection_seed": config.seed,
                 "selection_fraction": config.selection_fraction},
        "linear_probe": state["probe"], "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "best_weights": state.get("best_weights", "trained"),
        "best_selection_top1": state["best_selection_top1"], "best_selection_top5": state.get("best_selection_top5"),
        "first_loss": state.get("first_loss"), "last_loss": state.get("last_loss"),
        **({"final_fit_of": config.final_fit, "held_back_best_epoch": held_back["best_epoch"],
            "held_back_epochs": config.epochs} if held_back is not None else {}),
        "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "wall_seconds": round(time.time() - started, 1),
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _save_atomically(content: Any, path: Path) -> None:
    import torch

    partial = path.with_suffix(".partial")
    torch.save(content, partial)
    os.replace(partial, path)


# ---------------------------------------------------------------- export


def export(out: Path | str) -> Path:
    """The best checkpoint as a TF SavedModel (pipeline.train.efficientnet_lite.export_model's `serve` contract: float32 0-255 →
    softmax), its softmax temperature fitted on the selection photos; writes <out>/export and updates the summary."""
    import torch

    out = Path(out)
    config = json.loads((out / CONFIG_NAME).read_text())
    backbone, head, cosine_scale = config["backbone"], config.get("head", "linear"), config.get("cosine_scale", COSINE_SCALE)
    split = json.loads((out / SPLIT_NAME).read_text())
    variant = VARIANTS[backbone]
    labels_count = len(read_labels(out / LABELS_NAME))
    network = build_network(backbone, labels_count, head, cosine_scale)
    network.load_state_dict(torch.load(out / BEST_NAME, map_location="cpu", weights_only=True))
    summary = json.loads((out / SUMMARY_NAME).read_text()) if (out / SUMMARY_NAME).is_file() else {}
    if summary.get("final_fit_of"):  # nothing held back: the held-back run's temperature, fitted on its selection split
        temperature = float(json.loads((Path(summary["final_fit_of"]) / SUMMARY_NAME).read_text())["temperature"])
    else:
        selection_photos = load_photos(split["selection"], variant.input_size)
        temperature = fit_temperature(logits_of(network, selection_photos), np.asarray(split["selection_class_ids"]))
    state = {key: value.detach().numpy() for key, value in network.state_dict().items()}
    model = efficientnet_lite.classifier_from_state_dict(backbone, state, labels_count, temperature,
                                                         cosine_scale if head == "cosine" else None)
    export_model(model, out / EXPORT_DIR)
    if (out / PROBE_NAME).is_file():  # the comparison's first row: the ImageNet network, frozen, with its probe
        probe = np.load(out / PROBE_NAME)
        imagenet = {key: value.detach().numpy() for key, value in build_network(backbone, labels_count).state_dict().items()}
        imagenet.update({"_fc.weight": probe["weight"], "_fc.bias": probe["bias"]})
        export_model(efficientnet_lite.classifier_from_state_dict(backbone, imagenet, labels_count), out / BASELINE_EXPORT_DIR)
    summary["temperature"] = temperature
    summary["model"] = {"num_classes": labels_count, "input_size": variant.input_size, "head": head,
                        "backbone": f"efficientnet-{backbone} (fine-tuned whole, torch; ported to TF)"}
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return out / EXPORT_DIR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train.finetune", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_options(commands.add_parser("train", help="fine-tune, checkpointing every epoch"), FinetuneConfig)
    export_parser = commands.add_parser("export", help="port the best checkpoint to a TF SavedModel")
    export_parser.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "train":
        print(json.dumps(train(config_from_args(FinetuneConfig, args)), indent=2))
    else:
        print(export(args.out))


if __name__ == "__main__":
    main()

