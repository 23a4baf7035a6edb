"""Evaluation arithmetic on known answers, and export → model_label/ → load (and refuse when tampered)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_data import COLOURS, make_labelled_photos, make_yolo_folder

from pipeline import classification_metrics
from pipeline.core.model_label import ModelLabelError, load_model_label
from pipeline.core.settings import deployment_config, read_serve_config
from pipeline.data.datasets import DatasetError, load_labelled_photos
from pipeline.evaluation import evaluate
from pipeline.train import yolo_detector as detector

LABELS = list(COLOURS)  # red, green, blue: class order of the tiny classifier below


def test_top_k_accuracy_known_answer():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    targets = [0, 1, 1, 0]
    assert classification_metrics.top_k_accuracy(probabilities, targets, 1) == 0.25
    assert classification_metrics.top_k_accuracy(probabilities, targets, 2) == 0.75
    assert classification_metrics.top_k_accuracy(probabilities, targets, 3) == 1.0


def test_confusion_matrix_and_per_class_accuracy_known_answer():
    matrix = classification_metrics.confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 2], num_classes=4)
    assert matrix.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert classification_metrics.per_class_accuracy(matrix) == [2 / 3, 0.5, 1.0, None]
    summary = classification_metrics.summarize(np.eye(3)[[0, 0, 2]], [0, 1, 2], ["a", "b", "c"])
    assert summary["top1"] == pytest.approx(2 / 3)
    assert summary["per_class"]["b"] == {"n": 1, "accuracy": 0.0}


def test_labelled_photos_from_split_file_and_folders(tmp_path):
    photos = make_labelled_photos(tmp_path / "photos")
    by_folder = load_labelled_photos(photos, LABELS)
    assert by_folder == [(photos / label / f"{label}{i}.jpg", index) for index, label in enumerate(LABELS) for i in (0, 1)]
    (photos / "blue" / "more").mkdir()
    (photos / "blue" / "blue0.jpg").rename(photos / "blue" / "more" / "blue0.jpg")
    assert load_labelled_photos(photos, LABELS)[-2:] == [(photos / "blue/blue1.jpg", 2), (photos / "blue/more/blue0.jpg", 2)]
    # indices are the labels' order; a label without a folder has no photos
    assert load_labelled_photos(photos, ["green", "red", "blue", "white"])[:2] == [(p, 0) for p, _ in by_folder[2:4]]
    (photos / "val.txt").write_text("red/red0.jpg, 0, 0\nblue/blue1.jpg, 2, 0\n")
    assert load_labelled_photos(photos, LABELS) == [(photos / "red/red0.jpg", 0), (photos / "blue/blue1.jpg", 2)]
    (photos / "bad.txt").write_text("red/red0.jpg, 7, 0\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:1: class id 7 is out of range: there are 3 classes"):
        load_labelled_photos(photos / "bad.txt", LABELS)
    (photos / "purple").mkdir()
    with pytest.raises(DatasetError, match=r"folders \['purple'\] that are not the model's labels"):
        load_labelled_photos(photos, LABELS, split="test")


def make_classifier_run(run, size=32):
    """A tiny SavedModel run folder: mean colour of the picture → softmax, so red/green/blue photos are known."""
    import tensorflow as tf
    import tf_keras

    model = tf_keras.Sequential([
        tf_keras.Input(shape=(size, size, 3), dtype="float32"),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Rescaling(0.1),  # pixel means 0-255 → logits that separate the colours
        tf_keras.layers.Activation("softmax"),
    ])
    model.export(str(run / "export"))
    assert tf.saved_model.load(str(run / "export")).serve(tf.zeros([1, size, size, 3])).shape == (1, 3)
    (run / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS), encoding="utf-8")
    (run / "train_summary.json").write_text(json.dumps({"model": {"input_size": size, "backbone": "test"}}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    source = make_yolo_folder(root / "yolo", count=12)
    detector.main(["train", "--data", str(source), "--out", str(root / "detector"), "--imgsz", "64",
                   "--epochs", "1", "--batch", "4", "--workers", "0", "--val-fraction", "0.25"])
    (root / "classifier").mkdir()
    make_classifier_run(root / "classifier")  # TensorFlow after the torch work above
    make_labelled_photos(root / "photos")
    return root


@pytest.mark.train
@pytest.mark.models
def test_export_writes_a_model_label_that_loads_and_refuses_tampering(runs, tmp_path):
    from pipeline.release.export import export

    out = tmp_path / "model_label"
    manifest = export(runs / "classifier", runs / "detector", runs / "photos", out, report_dir=tmp_path / "report")

    bundle = load_model_label(out)
    assert bundle.labels == LABELS and bundle.classifier_input_size == 32 and bundle.detector_input_size == 64
    assert manifest["classifier"]["format"] == "tf_saved_model" and manifest["detector"]["format"] == "ultralytics"
    assert manifest["detector"]["classes"] == ["product"] and manifest["detector"]["architecture"] == "yolov8n"
    # mean colour decides the class: every whole photo is right, and so is any crop of it
    metrics = manifest["classifier"]["metrics"]
    assert metrics["images"] == 6
    assert metrics["whole_photo"]["top1"] == 1.0 and metrics["hello"]["top1"] == 1.0
    # every answer is right, so the calibrated threshold keeps them all known
    calibration = manifest["classifier"]["calibration"]
    assert calibration["precision"] == 1.0 and calibration["coverage"] == 1.0 and calibration["target_met"]
    assert bundle.unknown_threshold == calibration["unknown_threshold"] > 1 / 3
    assert set(manifest["detector"]["metrics"]) >= {"precision", "recall", "mAP50", "mAP50-95"}
    assert "Freiburg" in manifest["training_data"]["detector"]
    for name in ("evaluation.md", "evaluation.json", "confusion_matrix.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert report["classifier"]["whole_photo"]["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]

    # the CPU runtimes beside them, measured; with no selection split to judge them on, none meets the bar
    assert bundle.runtimes("classifier") == ["savedmodel", "tflite", "tflite_int8"]
    assert bundle.runtimes("detector") == ["torch", "onnx", "onnx_int8"]  # int8 calibrated on the detector's fit photos
    assert 0 < manifest["detector"]["runtimes"]["onnx_int8"]["calibration"]["photos"] <= 64
    assert not any(entry["meets_bar"] for entry in manifest["classifier"]["runtimes"].values())
    assert bundle.resolve_runtime("classifier", "auto", use_gpu=False) == "savedmodel"
    int8_entry = manifest["classifier"]["runtimes"]["tflite_int8"]
    assert int8_entry["representative"]["inputs"] >= 6
    # this one-convolution net's every layer would stay float under the rule, so it is plain int8 (the shipped
    # classifier's float nodes: tests/test_runtimes.py)
    assert int8_entry["float_nodes"]["nodes"] == [] and "quantization step" in int8_entry["float_nodes"]["rule"]
    assert all(entry["metrics"]["hello"]["top1"] == 1.0 for entry in manifest["classifier"]["runtimes"].values())
    assert "## Runtimes" in (tmp_path / "report" / "evaluation.md").read_text()
    # a classifier with one output (exported before embeddings) ships and serves, without an embedding
    from pipeline.core.models import load_classifier

    assert bundle.embedding_dim is None and "embedding" not in manifest["classifier"]
    assert not any("embedding" in entry for entry in manifest["classifier"]["runtimes"].values())
    for runtime in bundle.runtimes("classifier"):
        answer = load_classifier(bundle.runtime_path("classifier", runtime), runtime)([np.zeros((32, 32, 3), np.uint8)])
        assert answer.probabilities.shape == (1, 3) and answer.embeddings is None
    int8 = (out / "classifier_int8.tflite").read_bytes()
    (out / "classifier_int8.tflite").write_bytes(int8 + b"\0")
    with pytest.raises(ModelLabelError, match="classifier_int8.tflite does not match"):
        load_model_label(out)
    (out / "classifier_int8.tflite").write_bytes(int8)

    with open(out / "detector.pt", "ab") as file:
        file.write(b"\0")
    with pytest.raises(ModelLabelError, match="detector.pt does not match"):
        load_model_label(out)


@pytest.mark.train
@pytest.mark.models
def test_export_chooses_the_whole_photo_view_on_the_selection_split(runs, tmp_path):
    """A run with a selection split whose photos are a product in the middle of another colour: the mean-colour
    classifier names the product only when the view cuts enough of the border away. The export tries the views on
    the selection photos (never val), ships the one that names them most surely (the least log-loss: the tightest
    view here), and serving's loop uses it."""
    from pipeline.release.export import export

    run = selection_run(runs, tmp_path)
    manifest = export(run, runs / "detector", runs / "photos", tmp_path / "model_label", report_dir=tmp_path / "report")

    view = manifest["classifier"]["selection"]["whole_photo_share"]
    assert {share: f["top1"] for share, f in view["shares"].items()} == {
        "1": 0.0, "0.95": 0.0, "0.9": 1.0, "0.85": 1.0, "0.8": 1.0, "0.75": 1.0, "0.7": 1.0}
    losses = [f["log_loss"] for f in view["shares"].values()]
    assert losses == sorted(losses, reverse=True)  # the tighter the view, the more product: the surer
    shipped = load_model_label(tmp_path / "model_label")
    assert view["chosen"] == 0.7 == manifest["classifier"]["whole_photo_share"] == shipped.whole_photo_share
    assert manifest["classifier"]["metrics"]["whole_photo"]["top1"] == 1.0  # val's plain photos, through the 0.7 view
    assert "| 0.7 (chosen) | 100.00% |" in (tmp_path / "report" / "evaluation.md").read_text()


def selection_run(runs: Path, tmp_path: Path) -> Path:
    """The tiny classifier run with a selection split whose photos are a product in the middle of another colour:
    the mean-colour classifier names the product only when the view cuts enough of the border away."""
    import shutil

    from PIL import Image

    run = tmp_path / "classifier"
    shutil.copytree(runs / "classifier", run)
    selection, targets = [], []
    for i, (product, border) in enumerate((("red", "green"), ("blue", "red"), ("green", "blue"), ("red", "blue"))):
        image = Image.new("RGB", (200, 160), COLOURS[border])
        side = 0.655  # the product's share of each side: under half the area until the view is 0.9 of each side
        image.paste(COLOURS[product], (round(100 - 100 * side), round(80 - 80 * side), round(100 + 100 * side), round(80 + 80 * side)))
        image.save(tmp_path / f"selection{i}.png")
        selection.append(str(tmp_path / f"selection{i}.png"))
        targets.append(LABELS.index(product))
    fit = [str(path) for path, _ in load_labelled_photos(runs / "photos", LABELS)]
    (run / "split.json").write_text(json.dumps({"seed": 0, "fraction": 0.5, "fit": fit, "fit_class_ids": [0] * len(fit),
                                                "selection": selection, "selection_class_ids": targets}))
    return run


@pytest.mark.train
@pytest.mark.models
def test_a_final_fit_ships_with_the_choices_its_held_back_run_was_released_with(runs, tmp_path):
    """A final fit (pipeline.train.finetune --final-fit) holds nothing back: its release takes every choice from
    the held-back run's (here the 0.7 view its selection split chose, which a run with no selection split would not
    make), each runtime's threshold included; it refuses to guess without that release, or with another run's."""
    import shutil

    from pipeline.release.export import export

    held_back = selection_run(runs, tmp_path)
    summary = json.loads((held_back / "train_summary.json").read_text())
    (held_back / "train_summary.json").write_text(json.dumps(summary | {"hyperparameters": {"out": str(held_back)}}))
    released = export(held_back, runs / "detector", runs / "photos", tmp_path / "held_back_label", report_dir=tmp_path / "r1")
    split = json.loads((held_back / "split.json").read_text())

    final = tmp_path / "final"
    shutil.copytree(runs / "classifier", final)
    (final / "train_summary.json").write_text(json.dumps(summary | {
        "final_fit_of": str(held_back), "best_epoch": 1, "best_weights": "trained",
        "data": {"fit_photos": len(split["fit"]) + len(split["selection"]), "selection_photos": 0}}))
    (final / "split.json").write_text(json.dumps(split | {"fit": split["fit"] + split["selection"], "selection": [],
                                                          "fit_class_ids": split["fit_class_ids"] + split["selection_class_ids"],
                                                          "selection_class_ids": [], "final_fit_of": str(held_back)}))
    with pytest.raises(ValueError, match="--choices-from"):
        export(final, runs / "detector", runs / "photos", tmp_path / "refused", report_dir=tmp_path / "r2")
    other = tmp_path / "other_label"
    shutil.copytree(tmp_path / "held_back_label", other)
    manifest_path = other / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace(str(held_back), str(tmp_path / "another_run")))
    with pytest.raises(ValueError, match="was released from"):
        export(final, runs / "detector", runs / "photos", tmp_path / "refused", report_dir=tmp_path / "r2",
               choices_from=other)

    manifest = export(final, runs / "detector", runs / "photos", tmp_path / "model_label", report_dir=tmp_path / "r3",
                      choices_from=tmp_path / "held_back_label")
    classifier, chosen = manifest["classifier"], released["classifier"]
    assert classifier["whole_photo_share"] == chosen["whole_photo_share"] == 0.7
    assert classifier["hello_policy"] == chosen["hello_policy"] and classifier["selection"] == chosen["selection"]
    assert classifier["calibration"]["unknown_threshold"] == chosen["calibration"]["unknown_threshold"]
    for name, entry in classifier["runtimes"].items():
        assert entry["calibration"]["unknown_threshold"] == chosen["runtimes"][name]["calibration"]["unknown_threshold"]
    assert "final_fit" in classifier["model_selection"]
    assert load_model_label(tmp_path / "model_label").whole_photo_share == 0.7


@pytest.mark.train
@pytest.mark.models
def test_evaluate_command_on_an_exported_model_label(runs, tmp_path, capsys):
    import yaml

    from pipeline.release.export import export

    export(runs / "classifier", runs / "detector", runs / "photos", tmp_path / "model_label",
           report_dir=tmp_path / "export_report")
    # serve_config.yaml with a detector threshold low enough that an untrained detector's boxes get cut
    config = read_serve_config()
    detector_config = deployment_config(config, "Detector")
    detector_config["user_config"]["confidence_threshold"] = 0.000001
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    report = evaluate.main(["--model-label", str(tmp_path / "model_label"), "--data", str(runs / "photos"),
                            "--detector-data", str(runs / "yolo"), "--out", str(tmp_path / "eval"),
                            "--serve-config", str(tmp_path / "serve_config.yaml")])
    assert report["settings"]["detector"]["confidence_threshold"] == 0.000001
    assert report["classifier"]["hello"]["no_detection_whole_photo_used"] == 0
    assert report["classifier"]["hello"]["top1"] == 1.0  # (top-5 of 3 labels is 1.0 whatever the model does)
    assert [answer["label"] for answer in report["answers"]] == [answer["target"] for answer in report["answers"]]
    assert report["detector"]["data"].endswith("data.yaml")
    assert "| the classifier, whole photo | 100.00% (100.0%-100.0%) | 100.00% |" in capsys.readouterr().out


def test_the_bootstrap_interval_holds_the_figure_and_narrows_with_more_photos():
    few = classification_metrics.bootstrap_interval([1] * 85 + [0] * 15)
    many = classification_metrics.bootstrap_interval([1] * 850 + [0] * 150)
    assert few[0] < 0.85 < few[1] and many[0] < 0.85 < many[1]
    assert 0.10 < few[1] - few[0] < 0.18  # ~4 standard errors of sqrt(.85 x .15 / 100)
    assert many[1] - many[0] < (few[1] - few[0]) / 2.5  # sqrt(10) narrower
    assert classification_metrics.bootstrap_interval([1] * 10) == [1.0, 1.0]
    assert classification_metrics.bootstrap_interval([1, 0] * 50) == classification_metrics.bootstrap_interval([1, 0] * 50)  # seeded


def test_calibration_picks_the_lowest_threshold_that_keeps_known_answers_precise():
    # top-1 probabilities 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (right), 0.5 (wrong)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    targets = [0, 1, 1, 1, 1]
    result = classification_metrics.calibrate_unknown(probabilities, targets, target_precision=0.75)
    assert result["unknown_threshold"] == 0.6 and result["precision"] == 0.75 and result["coverage"] == 0.8
    strict = classification_metrics.calibrate_unknown(probabilities, targets, target_precision=0.95)
    assert strict["unknown_threshold"] == 0.8 and strict["precision"] == 1.0 and strict["coverage"] == 0.4
    unreachable = classification_metrics.calibrate_unknown(np.array([[0.6, 0.4]]), [1], target_precision=0.95)
    assert not unreachable["target_met"] and unreachable["precision"] == 0.0


def test_a_policy_is_surely_better_only_by_more_than_chance():
    """The /hello policies' choice: two policies that disagree on 16 of 357 photos, one right on 10 and the other on
    6, differ by chance (the cheaper policy stays an equal); 40 photos more right is no chance."""
    rng = np.random.default_rng(0)
    other = rng.random(357) < 0.83
    four_more, forty_more = other.copy(), other.copy()
    four_more[np.flatnonzero(~other)[:10]] = True
    four_more[np.flatnonzero(other)[:6]] = False
    forty_more[np.flatnonzero(~other)[:40]] = True
    assert not classification_metrics.surely_better(four_more, other)
    assert classification_metrics.surely_better(forty_more, other) and not classification_metrics.surely_better(other, forty_more)
    assert set(evaluate.POLICY_COST) == set(evaluate.HELLO_POLICIES)
    assert min(evaluate.POLICY_COST, key=evaluate.POLICY_COST.get) == "whole_photo"


def test_known_signals_cover_what_each_signal_separates():
    """Hand-made answers where the wrong ones have the higher top-1 probability but a close second: the margin over
    the second keeps both right answers known at 100% precision, the top-1 probability none; gated by the crop's
    agreement, a right answer the crop disagrees with is no longer known."""
    from pipeline.evaluation.known_signals import coverage_table

    whole = np.array([[0.50, 0.25, 0.25],   # right (0), margin 0.25
                      [0.25, 0.52, 0.23],   # right (1), margin 0.27
                      [0.55, 0.45, 0.00],   # wrong (target 1), margin 0.10
                      [0.58, 0.00, 0.42]])  # wrong (target 2), margin 0.16
    targets = np.array([0, 1, 1, 2])
    table = coverage_table(whole, whole, targets, target_precision=1.0)
    assert table["margin over the second"]["coverage"] == 0.5
    assert table["top-1 probability (shipped)"]["coverage"] == 0.0
    assert not classification_metrics.calibrate_unknown(whole, targets, 1.0)["target_met"]  # the shipped rule agrees
    crop = whole.copy()
    crop[1] = [0.9, 0.05, 0.05]
    assert coverage_table(crop, whole, targets, 1.0)["margin over the second, crop and whole agreeing"]["coverage"] == 0.25
