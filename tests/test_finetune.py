"""The training path that made the shipped classifier (pipeline.train.finetune), on a small real subset of GroceryStore:
the selection split kept apart from train's fit photos and from val, updates that lower the loss with BatchNorm
statistics frozen, checkpoints that resume, and the TF export agreeing with the torch network it comes from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from load_tests.photos import GROCERY
from pipeline.data.datasets import load_labelled_data
from pipeline.data.selection_split import photo_groups, selection_split
from pipeline.train import finetune, finetune_config, finetune_network

pytestmark = [pytest.mark.data, pytest.mark.models]  # GroceryStore photos through the pretrained Lite0 network


@pytest.fixture(scope="module")
def data():
    return load_labelled_data(GROCERY)


def test_selection_split_holds_back_whole_sessions_seeded(data):
    subset = finetune.limit_per_class(data.train, 8)
    network = finetune_network.build_network("lite0", data.num_classes)
    features = finetune_network.pooled_features(network, finetune.load_photos(subset.paths, 224))
    groups = photo_groups(features, subset.class_ids, 0.8)
    assert len(np.unique(groups)) < 0.8 * len(subset.paths)  # train photos do come in near-duplicate sessions
    fit, selection = selection_split(subset, 0.15, seed=0, groups=groups)
    assert not set(fit.paths) & set(selection.paths)
    assert sorted(fit.paths + selection.paths) == sorted(subset.paths)
    assert not set(selection.paths) & set(data.val.paths)  # val is never a selection photo
    assert 0.08 * len(subset.paths) < len(selection.paths) < 0.25 * len(subset.paths)
    assert set(fit.class_ids) == set(subset.class_ids)  # every class keeps photos to learn from
    held = {p for p in selection.paths}
    group_of = dict(zip(subset.paths, groups))
    assert not {group_of[p] for p in held} & {group_of[p] for p in fit.paths}  # no session on both sides
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    index = {p: i for i, p in enumerate(subset.paths)}
    for path, class_id in zip(selection.paths, selection.class_ids):  # so no selection photo has a twin in fit
        twins = [index[p] for p, c in zip(fit.paths, fit.class_ids) if c == class_id]
        assert (unit[twins] @ unit[index[path]]).max() <= 0.8
    assert selection_split(subset, 0.15, seed=0, groups=groups)[1].paths == selection.paths
    assert selection_split(subset, 0.15, seed=1, groups=groups)[1].paths != selection.paths


@pytest.mark.train
def test_updates_lower_the_loss_and_keep_batchnorm_statistics(data):
    import torch

    torch.manual_seed(0)
    subset = finetune.limit_per_class(data.train, 1)
    images = finetune.load_photos(subset.paths[:24], 224)
    targets = np.asarray(subset.class_ids[:24])
    config = finetune_config.FinetuneConfig(out="unused")
    network = finetune_network.build_network("lite0", data.num_classes)
    optimizer = torch.optim.AdamW(finetune_network.parameter_groups(network, config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, finetune_network.warmup_cosine(2, 8))
    loss_function = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    statistics = network._bn1.running_mean.clone()
    head = network._fc.weight.clone()
    network.train()
    finetune_network.freeze_batchnorm_statistics(network)
    losses = [finetune_network.train_step(network, optimizer, scheduler, loss_function, torch.from_numpy(images), targets)
              for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0]
    assert torch.equal(network._bn1.running_mean, statistics)  # ImageNet statistics kept
    assert not torch.equal(network._fc.weight, head)
    # No weight decay on biases and BatchNorm; the head's and the backbone's own rates.
    groups = {(g["initial_lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert groups == {(config.head_lr, 0.0), (config.head_lr, config.weight_decay),
                      (config.backbone_lr, 0.0), (config.backbone_lr, config.weight_decay)}


def test_the_additive_margin_asks_the_true_class_to_win_by_the_margin():
    import torch

    from pipeline.train.cosine_head import AdditiveMarginLoss

    cosines = torch.tensor([[0.50, 0.45, 0.10], [0.20, 0.70, 0.30]])
    targets = torch.tensor([0, 1])
    plain = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(16 * cosines, targets)
    assert torch.allclose(AdditiveMarginLoss(16, 0.0, 0.1)(16 * cosines, targets), plain)
    # The first photo is right by 0.05 only: with a 0.2 margin it counts as 0.15 wrong, and costs more than the second.
    lowered = cosines - 0.2 * torch.nn.functional.one_hot(targets, 3)
    expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1, reduction="none")(16 * lowered, targets)
    assert torch.allclose(AdditiveMarginLoss(16, 0.2, 0.1)(16 * cosines, targets), expected.mean())
    assert expected[0] > expected[1] and AdditiveMarginLoss(16, 0.2, 0.1)(16 * cosines, targets) > plain


@pytest.mark.train
def test_the_weight_average_follows_the_weights_by_its_decay():
    """EMA: the first update takes the weights; each one after moves the average (1 - decay) of the way to them."""
    import torch

    assert finetune_network.weight_average(finetune_network.build_network("lite0", 3), 0.0) is None
    network = finetune_network.build_network("lite0", 3)
    average = finetune_network.weight_average(network, 0.9)
    start = network._fc.weight.detach().clone()
    with torch.no_grad():
        network._fc.weight.add_(1.0)
    average.update_parameters(network)
    torch.testing.assert_close(average.module._fc.weight, start + 1.0)
    with torch.no_grad():
        network._fc.weight.add_(1.0)
    average.update_parameters(network)
    torch.testing.assert_close(average.module._fc.weight, start + 1.1)
    torch.testing.assert_close(average.module._bn1.running_mean, network._bn1.running_mean)  # statistics copied


@pytest.mark.train
def test_linear_probe_names_photos_of_its_classes(data):
    network = finetune_network.build_network("lite0", data.num_classes)
    subset = finetune.limit_per_class(data.train, 3)
    features = finetune_network.pooled_features(network, finetune.load_photos(subset.paths, 224))
    targets = np.asarray(subset.class_ids)
    weight, bias = finetune_network.linear_probe(features, targets, data.num_classes, 0.03)
    assert np.mean((features @ weight.T + bias).argmax(axis=1) == targets) > 0.9  # the photos it was fitted on
    val = finetune.limit_per_class(data.val, 1)
    val_features = finetune_network.pooled_features(network, finetune.load_photos(val.paths, 224))
    assert np.mean((val_features @ weight.T + bias).argmax(axis=1) == np.asarray(val.class_ids)) > 0.2  # chance: 1/81


@pytest.mark.train
@pytest.mark.parametrize("head", finetune_config.HEADS)
def test_run_resumes_and_exports_what_torch_computes(tmp_path: Path, head: str):
    import torch

    out = tmp_path / "run"
    config = finetune_config.FinetuneConfig(out=str(out), data=str(GROCERY), backbone="lite0", max_per_class=3, epochs=1,
                                     max_steps=2, batch_size=8, head=head, ema_decay=0.9)
    first = finetune.train(config)
    assert first["epochs_run"] == 1 and (out / finetune_config.LAST_NAME).is_file() and (out / finetune_config.BEST_NAME).is_file()
    split = json.loads((out / finetune_config.SPLIT_NAME).read_text())
    assert split["selection"] and not set(split["selection"]) & set(split["fit"])
    config.epochs, config.resume = 2, True
    second = finetune.train(config)
    assert second["epochs_run"] == 2
    history = (out / finetune_config.HISTORY_NAME).read_text().splitlines()
    assert len(history) == 3  # header + one line per epoch, once
    assert all(line.split(",")[-1] for line in history)  # the weight average scored every epoch, resumed too
    assert second["best_weights"] in ("trained", "average")

    export_dir = finetune.export(out)
    summary = json.loads((out / finetune_config.SUMMARY_NAME).read_text())
    assert 0.2 < summary["temperature"] < 5
    network = finetune_network.build_network("lite0", 81, head)
    network.load_state_dict(torch.load(out / finetune_config.BEST_NAME, weights_only=True))
    photos = finetune.load_photos(split["selection"][:4], 224)
    expected = torch.softmax(torch.from_numpy(finetune_network.logits_of(network, photos)) / summary["temperature"], 1).numpy()
    features = finetune_network.pooled_features(network, photos)

    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))  # keep a reference: its variables die with it
    served = loaded.serve(tf.constant(photos.astype(np.float32)))
    probabilities, embedding = served["probabilities"].numpy(), served["embedding"].numpy()
    assert np.abs(probabilities - expected).max() < 1e-4  # float32 summation order only
    assert (probabilities.argmax(1) == expected.argmax(1)).all()
    # the embedding: the fine-tuned network's pooled features (what its head reads), L2-normalised
    assert np.abs(embedding - features / np.linalg.norm(features, axis=1, keepdims=True)).max() < 1e-5


@pytest.mark.train
def test_a_final_fit_trains_the_held_back_runs_recipe_on_every_photo_it_saw(tmp_path: Path):
    """VTAB's protocol: once the held-back run has made every choice, its recipe is trained again on fit + selection,
    stopped at the epoch it chose, keeping the weights it chose; export takes its temperature (nothing is left to fit
    one on)."""
    held_back = tmp_path / "held_back"
    config = finetune_config.FinetuneConfig(out=str(held_back), data=str(GROCERY), backbone="lite0", max_per_class=3,
                                            epochs=3, max_steps=1, batch_size=8, ema_decay=0.9)
    chosen = finetune.train(config)
    summary_path = held_back / finetune_config.SUMMARY_NAME  # the temperature its export fits on its selection split
    summary_path.write_text(json.dumps(json.loads(summary_path.read_text()) | {"temperature": 1.25}))
    held_back_split = json.loads((held_back / finetune_config.SPLIT_NAME).read_text())

    final = tmp_path / "final"
    summary = finetune.train(finetune_config.FinetuneConfig(out=str(final), final_fit=str(held_back)))
    split = json.loads((final / finetune_config.SPLIT_NAME).read_text())
    assert split["fit"] == held_back_split["fit"] + held_back_split["selection"] and split["selection"] == []
    assert split["fit_class_ids"] == held_back_split["fit_class_ids"] + held_back_split["selection_class_ids"]
    assert summary["final_fit_of"] == str(held_back) and summary["data"]["selection_photos"] == 0
    assert summary["epochs_run"] == summary["best_epoch"] == chosen["best_epoch"]  # stopped where the held-back run chose
    assert summary["best_weights"] == chosen["best_weights"] and (final / finetune_config.BEST_NAME).is_file()
    recipe = json.loads((final / finetune_config.CONFIG_NAME).read_text())
    assert recipe["epochs"] == 3 and recipe["max_per_class"] == 3 and recipe["ema_decay"] == 0.9  # the held-back recipe
    finetune.export(final)
    assert json.loads((final / finetune_config.SUMMARY_NAME).read_text())["temperature"] == 1.25
