"""pipeline.classifier on tiny data made here: train → export → load → predict, resume, augmentation bounds,
the same preprocessing as serving, the hub backbone path, and clear errors for bad data."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import classifier
from pipeline.augmentation import AugmentationConfig, augment_batch, sample_augmentation
from pipeline.classifier_data import ImageReader, make_dataset
from pipeline.classifier_run import TrainConfig
from pipeline.core.model_label import read_labels
from pipeline.core.paths import MODEL_LABEL_DIR, REPO_ROOT
from pipeline.core.preprocessing import classifier_input, decode_photo
from pipeline.dataclass_cli import config_argv, config_from_args
from pipeline.datasets import DatasetError, Split, load_labelled_data

COLOURS = {"blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}  # class folders sort this way
SIZE = 32
HUB_SETTINGS = {"trainable_backbone": False, "learning_rate": 3e-3, "l2": 0.0, "dropout": 0.0, "epochs": 15,
                "patience": 15}


def write_colour_images(folder: Path, colour, count: int, seed: int) -> None:
    """Noisy solid-colour JPEGs of a few sizes (the loader squashes them to SIZE)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        height, width = (40, 40) if i % 2 else (36, 48)
        pixels = np.clip(np.array(colour) + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=95)


def make_colour_folders(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    for class_index, (name, colour) in enumerate(COLOURS.items()):
        write_colour_images(root / "train" / name, colour, train_per_class, seed=class_index)
        write_colour_images(root / "val" / name, colour, val_per_class, seed=10 + class_index)
    return root


def make_mean_colour_hub_module(path: Path) -> Path:
    """A TF2 SavedModel usable by hub.KerasLayer: [0,1] images → their mean colour, times a variable."""
    import tensorflow as tf

    class MeanColour(tf.Module):
        def __init__(self):
            super().__init__()
            self.gain = tf.Variable(tf.fill([3], 10.0), name="gain")

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2]) * self.gain

    module = MeanColour()
    tf.saved_model.save(module, str(path))
    return path


def quick_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = {"input_size": SIZE, "trainable_backbone": True, "learning_rate": 1e-3, "batch_size": 4, "epochs": 2,
                "verbose": 0, "seed": 0}
    settings.update(overrides)
    return TrainConfig(data=str(data), out=str(out), **settings)


def load_in_plain_tensorflow(export_dirs: list[Path], batch: np.ndarray) -> list[np.ndarray]:
    """Load each export in a fresh Python that never imports tf_keras or tensorflow_hub, the way serving does."""
    script = (
        "import json, sys\n"
        "import numpy as np, tensorflow as tf\n"
        "batch = tf.constant(np.load(sys.argv[1]))\n"
        "results = []\n"
        "for path in sys.argv[2:]:\n"
        "    loaded = tf.saved_model.load(path)\n"
        "    results.append(loaded.serve(batch).numpy().tolist())\n"
        "assert 'tf_keras' not in sys.modules and 'tensorflow_hub' not in sys.modules, 'export needs Keras/Hub'\n"
        "print(json.dumps(results))\n"
    )
    batch_file = export_dirs[0].parent / "batch.npy"
    np.save(batch_file, batch)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, str(batch_file), *map(str, export_dirs)],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [np.asarray(r) for r in json.loads(result.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    return make_colour_folders(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def efficientnet_run(colour_data, tmp_path_factory):
    """EfficientNet-B0 (random weights, trainable) at 32 px, 2 epochs: the full recipe path, tiny."""
    out = tmp_path_factory.mktemp("run") / "classifier"
    summary = classifier.train(quick_config(colour_data, out))
    return out, summary


@pytest.fixture(scope="module")
def hub_run(colour_data, tmp_path_factory):
    """The TF-Hub path with a local SavedModel (mean colour features), frozen: learns red/green/blue."""
    root = tmp_path_factory.mktemp("hub")
    module = make_mean_colour_hub_module(root / "mean_colour")
    out = root / "classifier"
    summary = classifier.train(quick_config(colour_data, out, backbone=f"hub:{module}", **HUB_SETTINGS))
    return out, summary


@pytest.mark.train
@pytest.mark.models
def test_train_writes_the_run_folder_and_the_export_serves_softmax(efficientnet_run, colour_data):
    out, summary = efficientnet_run
    for name in ("export/saved_model.pb", "labels.txt", "history.csv", "train_summary.json", "checkpoints/state.json"):
        assert (out / name).exists(), name
    assert read_labels(out / "labels.txt") == list(COLOURS)
    assert summary["epochs_run"] == 2 and summary["model"]["input_size"] == SIZE
    assert summary["data"]["images"] == {"train": 12, "val": 6}
    assert summary["data"]["images_per_class"]["train"] == [4, 4, 4]
    assert summary["hyperparameters"]["learning_rate"] == 1e-3 and summary["replicas"] == 1
    assert json.loads((out / "train_summary.json").read_text()) == summary
    with open(out / "history.csv") as file:
        history = list(csv.DictReader(file))
    assert [row["epoch"] for row in history] == ["0", "1"]
    # the summary's best epoch is the history's: its epoch, its accuracy (not a value the summary made up); top-5 of
    # 3 classes says nothing, so it is not checked
    best = max(range(len(history)), key=lambda epoch: float(history[epoch]["val_accuracy"]))
    assert summary["best_val_accuracy"] == pytest.approx(float(history[best]["val_accuracy"])) and summary["best_epoch"] == best + 1

    import tensorflow as tf

    batch = np.random.default_rng(0).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    loaded = tf.saved_model.load(str(out / "export"))
    probabilities = loaded.serve(tf.constant(batch)).numpy()
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.train
@pytest.mark.models
def test_exports_load_without_keras_or_hub(efficientnet_run, hub_run):
    batch = np.full((2, SIZE, SIZE, 3), 128.0, np.float32)
    for probabilities in load_in_plain_tensorflow([efficientnet_run[0] / "export", hub_run[0] / "export"], batch):
        assert probabilities.shape == (2, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.train
@pytest.mark.models
def test_hub_backbone_learns_separable_colours(hub_run, colour_data):
    import tensorflow as tf

    out, summary = hub_run
    assert summary["best_val_accuracy"] == 1.0
    loaded = tf.saved_model.load(str(out / "export"))
    for class_id, name in enumerate(COLOURS):
        paths = sorted((colour_data / "val" / name).glob("*.jpg"))
        batch = np.stack([classifier_input(decode_photo(p.read_bytes()).image, size=SIZE) for p in paths]).astype(np.float32)
        assert (loaded.serve(tf.constant(batch)).numpy().argmax(axis=1) == class_id).all(), name


@pytest.mark.train
@pytest.mark.models
def test_cached_feature_stage_with_crops_then_fine_tuning_from_it(hub_run, colour_data, tmp_path):
    """The two-stage recipe on tiny data: a head on cached features of photos, augmented copies and detector
    crops (with the linear baseline beside it), then a trainable-backbone run that starts from its weights."""
    import tensorflow as tf

    backbone = hub_run[1]["model"]["backbone"]
    paths = sorted(str(p) for p in (colour_data / "train").rglob("*.jpg"))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({path: [2.0, 2.0, 30.0, 30.0] if i % 2 else None for i, path in enumerate(paths)}))
    head = tmp_path / "head"
    summary = classifier.train(quick_config(colour_data, head, backbone=backbone, cached_feature_copies=2,
                                            crop_boxes=str(boxes), **HUB_SETTINGS))
    assert summary["data"]["images"]["train"] == 12 + 6 and summary["data"]["train_detector_crops"] == 6
    assert summary["cached_feature_copies"] == 2 and summary["best_val_accuracy"] == 1.0
    cache = sorted(p.name for p in (head / "feature_cache").glob("*.npy"))
    assert len(cache) == 1 + 3 + 3 and np.load(head / "feature_cache" / "train.npy").shape == (12, 3)
    baseline = json.loads((head / "checkpoints" / "state.json").read_text())["backbone_baseline"]
    assert baseline["val_accuracy"] > 0.5  # better than chance (1/3): a real linear classifier on the features
    probe = tf.constant(np.full((1, SIZE, SIZE, 3), 200.0, np.float32))
    for export in ("export", "baseline_export"):
        assert tf.saved_model.load(str(head / export)).serve(probe).shape == (1, 3)

    tuned = classifier.train(quick_config(colour_data, tmp_path / "tuned", backbone=backbone, init_from=str(head),
                                          **{**HUB_SETTINGS, "trainable_backbone": True, "epochs": 1}))
    assert tuned["initialized_from"]["best_val_accuracy"] == 1.0
    assert tuned["best_val_accuracy"] == 1.0  # started from the trained head, not from scratch


@pytest.mark.train
@pytest.mark.models
def test_resume_continues_at_the_next_epoch(hub_run, colour_data, tmp_path):
    out = tmp_path / "classifier"
    shutil.copytree(hub_run[0], out)
    config = quick_config(colour_data, out, **{**HUB_SETTINGS, "backbone": hub_run[1]["model"]["backbone"]})
    with pytest.raises(FileExistsError, match="--resume"):
        classifier.train(config)
    summary = classifier.train(dataclasses.replace(config, epochs=HUB_SETTINGS["epochs"] + 1, resume=True))
    assert summary["epochs_run"] == HUB_SETTINGS["epochs"] + 1
    with open(out / "history.csv") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == list(range(HUB_SETTINGS["epochs"] + 1))  # the resumed run added exactly the next epoch
    with open(out / "history.csv") as file:
        last = list(csv.DictReader(file))[-1]
    assert float(last["val_accuracy"]) == 1.0  # it went on from the trained weights, not from scratch


@pytest.mark.train
@pytest.mark.models
def test_export_subcommand_exports_the_best_checkpoint(hub_run, tmp_path):
    import tensorflow as tf

    out = tmp_path / "classifier"
    shutil.copytree(hub_run[0], out, ignore=shutil.ignore_patterns("export", "train_summary.json"))
    classifier.export_checkpoint(out)
    batch = tf.constant(np.full((1, SIZE, SIZE, 3), 100.0, np.float32))
    trained, exported = tf.saved_model.load(str(hub_run[0] / "export")), tf.saved_model.load(str(out / "export"))
    np.testing.assert_allclose(exported.serve(batch).numpy(), trained.serve(batch).numpy(), atol=1e-5)
    assert json.loads((out / "train_summary.json").read_text())["best_val_accuracy"] == 1.0


@pytest.mark.train
def test_augmentation_bounds_are_the_recipe_and_hold():
    config = AugmentationConfig()
    assert (config.rotation_degrees, config.shift_fraction, config.shear) == (20.0, 0.3, 0.3)
    assert config.zoom_range == (0.8, 1.2) and config.crop_scale == (0.6, 1.0) and config.horizontal_flip

    p = {k: v.numpy() for k, v in sample_augmentation(4000, 100, config).items()}
    assert np.abs(p["rotation"]).max() <= np.radians(20.0) and np.abs(p["rotation"]).max() > np.radians(19.0)
    for key in ("shift_x", "shift_y"):
        assert np.abs(p[key]).max() <= 30.0 and np.abs(p[key]).max() > 29.0
    assert np.abs(p["shear"]).max() <= 0.3
    for key in ("zoom_x", "zoom_y"):
        assert 0.8 <= p[key].min() and p[key].max() <= 1.2
    assert 0.6 <= p["crop_area"].min() and p["crop_area"].max() <= 1.0
    crop_side = np.sqrt(p["crop_area"]) * 100
    assert (np.abs(p["crop_x"]) <= (100 - crop_side) / 2 + 1e-4).all()  # the crop stays inside the image
    assert set(np.unique(p["flip"])) == {-1.0, 1.0}


@pytest.mark.train
def test_augmentation_changes_images_and_the_identity_does_not():
    import tensorflow as tf

    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32))
    same = augment_batch(images, AugmentationConfig.none()).numpy()
    np.testing.assert_allclose(same, images.numpy(), atol=1e-3)
    changed = augment_batch(images, AugmentationConfig()).numpy()
    assert changed.shape == images.shape and changed.dtype == np.float32
    assert np.abs(changed - images.numpy()).mean() > 1.0


@pytest.mark.train
def test_training_input_is_the_serving_preprocessing(tmp_path):
    """A rotated (EXIF) non-square photo goes through tf.data exactly as serving's classifier_input sees it."""
    import tensorflow as tf

    pixels = np.random.default_rng(3).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif.tobytes())
    path = tmp_path / "photo.jpg"
    path.write_bytes(buffer.getvalue())

    split = Split([str(path)], [0])
    dataset = make_dataset(split, SIZE, 1, False, AugmentationConfig.none(), ImageReader(SIZE))
    images, class_ids = next(iter(dataset))
    served = classifier_input(decode_photo(buffer.getvalue()).image, size=SIZE)
    assert images.dtype == tf.float32 and class_ids.numpy().tolist() == [0]
    np.testing.assert_array_equal(images.numpy()[0], served.astype(np.float32))


@pytest.mark.train
def test_detector_crops_are_extra_training_items_cut_as_serving_cuts_them(tmp_path):
    """--crop-boxes: a photo with a box is also an item cut to that box, exactly as /hello's crop."""
    pixels = np.random.default_rng(4).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        Image.fromarray(pixels).save(path)
    box = [10.5, 5.0, 40.0, 30.0]
    split = Split([str(p) for p in paths], [0, 1]).with_crops({str(paths[0]): box, str(paths[1]): None})
    assert split.class_ids == [0, 1, 0] and split.boxes == [None, None, tuple(box)]
    dataset = make_dataset(split, SIZE, 3, False, AugmentationConfig.none(), ImageReader(SIZE))
    images, _ = next(iter(dataset))
    image = decode_photo(paths[0].read_bytes()).image
    np.testing.assert_array_equal(images.numpy()[0], classifier_input(image, size=SIZE).astype(np.float32))
    np.testing.assert_array_equal(images.numpy()[2], classifier_input(image, tuple(box), SIZE).astype(np.float32))


def test_split_files_layout_gives_grocery_store_labels(tmp_path):
    make_colour_folders(tmp_path / "images")
    (tmp_path / "classes.csv").write_text(
        "Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int)\n"
        + "".join(f"{name.title()},{i},{name},{i}\n" for i, name in enumerate(COLOURS))
    )
    for split in ("train", "val"):
        lines = [f"images/{split}/{name}/{p.name}, {i}, {i}" for i, name in enumerate(COLOURS)
                 for p in sorted((tmp_path / "images" / split / name).glob("*.jpg"))]
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    data = load_labelled_data(tmp_path)
    assert data.layout == "split_files" and data.labels == ["Blue_ _ ", "Green_ _ ", "Red_ _ "]
    assert data.describe()["images"] == {"train": 12, "val": 6}

    (tmp_path / "val.txt").write_text("images/val/red/0.jpg, 3, 0\n")
    with pytest.raises(DatasetError, match=r"val\.txt:1: class id 3 is out of range"):
        load_labelled_data(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    make_colour_folders(tmp_path)
    (tmp_path / "train" / "purple").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*train/purple holds no images"):
        load_labelled_data(tmp_path)


def test_label_file_must_have_one_label_per_class(tmp_path):
    make_colour_folders(tmp_path / "data")
    labels = tmp_path / "labels.txt"
    labels.write_text("Blue_ _ \nGreen_ _ \n")
    with pytest.raises(DatasetError, match=r"labels\.txt has 2 labels but .* has 3 classes"):
        load_labelled_data(tmp_path / "data", labels)
    labels.write_text("Blue_ _ \nGreen_ _ \nRed_ _ \n")
    assert load_labelled_data(tmp_path / "data", labels).labels == ["Blue_ _ ", "Green_ _ ", "Red_ _ "]


@pytest.mark.train
@pytest.mark.models
def test_unreadable_image_is_named(tmp_path):
    data = make_colour_folders(tmp_path / "data", train_per_class=2, val_per_class=1)
    (data / "train" / "green" / "broken.jpg").write_bytes(b"not a jpeg at all")
    module = make_mean_colour_hub_module(tmp_path / "mean_colour")
    config = quick_config(data, tmp_path / "out", backbone=f"hub:{module}", trainable_backbone=False, epochs=1)
    with pytest.raises(DatasetError, match=r"image .*green/broken\.jpg cannot be read"):
        classifier.train(config)


@pytest.mark.train
@pytest.mark.models
def test_cli_trains_and_reports(tmp_path, capsys):
    data = make_colour_folders(tmp_path / "data", train_per_class=2, val_per_class=1)
    module = make_mean_colour_hub_module(tmp_path / "mean_colour")
    code = classifier.main([
        "train", "--data", str(data), "--out", str(tmp_path / "out"), "--backbone", f"hub:{module}",
        "--input-size", str(SIZE), "--epochs", "1", "--batch-size", "2", "--verbose", "0", "--no-augment",
    ])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["epochs_run"] == 1
    hyperparameters = json.loads((tmp_path / "out" / "train_summary.json").read_text())["hyperparameters"]
    assert hyperparameters["learning_rate"] == 0.007 and hyperparameters["patience"] == 5  # the recipe's defaults


def test_train_options_are_the_config_fields():
    """`train`'s options are generated from TrainConfig: the flags the README and recorded runs use give the
    config back, the defaults are the dataclass's, and any config is a command line that repeats it."""
    def parse(argv):
        return config_from_args(TrainConfig, classifier._parser().parse_args(["train", *argv]))

    assert parse(["--data", "d", "--out", "o"]) == TrainConfig(data="d", out="o")
    config = parse(["--data", "d", "--out", "o", "--labels", "l.txt", "--backbone", "hub:m", "--trainable-backbone",
                    "--learning-rate", "5e-5", "--batch-size", "32", "--no-augment", "--zoom-range", "0.9", "1.1",
                    "--no-horizontal-flip", "--cached-feature-copies", "3", "--verbose", "2", "--seed", "7"])
    assert config == TrainConfig(
        data="d", out="o", labels_file="l.txt", backbone="hub:m", trainable_backbone=True, learning_rate=5e-5,
        batch_size=32, augment=False, augmentation=AugmentationConfig(zoom_range=(0.9, 1.1), horizontal_flip=False),
        cached_feature_copies=3, verbose=2, seed=7)
    assert parse(config_argv(config)) == config
    with pytest.raises(SystemExit):
        parse(["--data", "d"])  # --out is required: the field has no default


def test_shipped_classifier_hyperparameters_are_a_command_line():
    """The hyperparameters recorded in the shipped manifest, written as options, give the same config back."""
    training = json.loads((MODEL_LABEL_DIR / "manifest.json").read_text())["classifier"]["training"]
    if "hyperparameters" not in training:
        pytest.skip("the shipped manifest keeps only the scalar entries of this classifier's training summary")
    recorded = training["hyperparameters"]
    if str(training.get("trainer", "")).startswith("pipeline.finetune"):  # the whole network fine-tuned in torch
        from pipeline import finetune

        tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}
        argv = ["train", *config_argv(finetune.FinetuneConfig(**tuples))]
        parsed_run = config_from_args(finetune.FinetuneConfig, finetune._parser().parse_args(argv))
        parsed = json.loads(json.dumps(dataclasses.asdict(parsed_run)))
        newer = {key: value for key, value in parsed.items() if key not in recorded}  # options added since that run
        assert {key: parsed[key] for key in recorded} == recorded
        assert newer == {key: json.loads(json.dumps(dataclasses.asdict(finetune.FinetuneConfig(out="x"))[key])) for key in newer}
        return
    augmentation = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded["augmentation"].items()}
    config = TrainConfig(**{**recorded, "augmentation": AugmentationConfig(**augmentation)})
    parsed = config_from_args(TrainConfig, classifier._parser().parse_args(["train", *config_argv(config)]))
    assert json.loads(json.dumps(dataclasses.asdict(parsed))) == recorded
