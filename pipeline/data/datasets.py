"""Labelled photos on disk: the readers that training (`load_labelled_data`) and evaluation
(`load_labelled_photos`) share, so both read a split file or a class folder the same way.

Two layouts:
- split files (GroceryStoreDataset): `train.txt` / `val.txt` with `path, class_id[, ...]` lines (paths relative to
  the file), class names in id order from `classes.csv`.
- class folders: one folder of images per class.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.model_label import ModelLabelError, read_labels
from pipeline.core.paths import IMAGE_SUFFIXES


class DatasetError(ValueError):
    """The data cannot be used; the message names the file or folder at fault."""


@dataclass(frozen=True)
class Split:
    """Image paths and their class ids (0-based, in label order)."""

    paths: list[str]
    class_ids: list[int]
    boxes: list[tuple[float, float, float, float] | None] | None = None  # per item: the photo cut to a box; None: whole

    def counts(self, num_classes: int) -> list[int]:
        return np.bincount(np.asarray(self.class_ids, dtype=np.int64), minlength=num_classes).tolist()

    def box_array(self) -> np.ndarray:
        """[N, 4] float32 boxes, -1 where the item is the whole photo (tf.data needs one dense tensor)."""
        boxes = self.boxes or [None] * len(self.paths)
        return np.array([box if box is not None else (-1.0,) * 4 for box in boxes], dtype=np.float32).reshape(-1, 4)

    def with_crops(self, crop_boxes: dict[str, list[float] | None]) -> Split:
        """These items, plus one item per photo cut to its box in `crop_boxes` ({photo path: box or null}, as
        `python -m pipeline.train.yolo_detector boxes` writes): the classifier then also learns the crops /hello sends it."""
        whole = self.boxes or [None] * len(self.paths)
        by_file = {Path(path).resolve(): box for path, box in crop_boxes.items()}
        files = [Path(path).resolve() for path in self.paths]
        if not any(file in by_file for file in files):
            raise DatasetError("the crop boxes name none of the training photos: were they made for this data?")
        extra: list[tuple[str, int, tuple[float, float, float, float]]] = []
        for path, class_id, file in zip(self.paths, self.class_ids, files):
            box = by_file.get(file)
            if box:
                x1, y1, x2, y2 = box
                extra.append((path, class_id, (x1, y1, x2, y2)))
        return Split(self.paths + [p for p, _, _ in extra], self.class_ids + [c for _, c, _ in extra],
                     list(whole) + [b for _, _, b in extra])


@dataclass(frozen=True)
class LabelledData:
    """A training set: class names and labels in class-id order, a train and a validation split."""

    source: str
    layout: str  # "split_files" or "class_folders"
    class_names: list[str]
    labels: list[str]
    train: Split
    val: Split

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def describe(self) -> dict:
        """What the training data was, for train_summary.json and the model manifest."""
        return {
            "source": self.source,
            "layout": self.layout,
            "num_classes": self.num_classes,
            "images": {"train": len(self.train.paths), "val": len(self.val.paths)},
            "train_detector_crops": sum(box is not None for box in self.train.boxes or []),
            "images_per_class": {
                "train": self.train.counts(self.num_classes),
                "val": self.val.counts(self.num_classes),
            },
        }


def grocery_store_label(class_name: str) -> str:
    """The original label format is name_container_size; GroceryStoreDataset classes have only a name,
    and a blank field is a single space."""
    return f"{class_name}_ _ "


# ------------------------------------------------------------------------------------ training data


def load_labelled_data(data_dir: str | Path, labels_file: str | Path | None = None, val_fraction: float = 0.1) -> LabelledData:
    """Read a training data folder, check it, and return its splits.

    - split files: train.txt, val.txt and classes.csv; labels `name_ _ `.
    - class folders: `train/<class>/` and `val/<class>/`, or just `<class>/` folders, of which every
      1/val_fraction-th image (in name order) is held back for validation; labels are the folder names.
    Class folders are in name order. A `labels_file` (one label per line, in class order) overrides labels.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir} is not a folder")
    if (data_dir / "train.txt").is_file():
        data = _load_split_files(data_dir)
    else:
        data = _load_class_folders(data_dir, val_fraction)
    if labels_file is not None:
        labels_file = Path(labels_file)
        try:
            labels = read_labels(labels_file)
        except (OSError, ModelLabelError) as error:
            raise DatasetError(f"{labels_file} cannot be read as a label file: {error}") from None
        if len(labels) != len(data.class_names):
            raise DatasetError(
                f"{labels_file} has {len(labels)} labels but {data.source} has {len(data.class_names)} classes: "
                "the label file must have one line per class, in class order"
            )
        data = dataclasses.replace(data, labels=labels)
    return data


def _load_split_files(data_dir: Path) -> LabelledData:
    classes_csv = data_dir / "classes.csv"
    if not classes_csv.is_file():
        raise DatasetError(f"{classes_csv} is missing: split files need it to name the classes")
    class_names = read_classes_csv(classes_csv)
    splits = {}
    for name in ("train", "val"):
        split_file = data_dir / f"{name}.txt"
        if not split_file.is_file():
            raise DatasetError(f"{split_file} is missing (found {data_dir / 'train.txt'}, so split files are expected)")
        splits[name] = read_split_file(split_file, len(class_names))
    return LabelledData(
        source=str(data_dir),
        layout="split_files",
        class_names=class_names,
        labels=[grocery_store_label(name) for name in class_names],
        train=splits["train"],
        val=splits["val"],
    )


def _load_class_folders(data_dir: Path, val_fraction: float) -> LabelledData:
    if (data_dir / "train").is_dir():
        train_images = _images_by_class_folder(data_dir / "train")
        if not (data_dir / "val").is_dir():
            raise DatasetError(f"{data_dir / 'val'} is missing: with a train/ folder, a val/ folder is expected")
        val_images = _images_by_class_folder(data_dir / "val")
        if list(val_images) != list(train_images):
            raise DatasetError(
                f"{data_dir / 'val'} has class folders {list(val_images)} but {data_dir / 'train'} has {list(train_images)}"
            )
    else:
        if not 0 < val_fraction < 1:
            raise DatasetError(f"{data_dir} has no val/ folder, so --val-fraction must be between 0 and 1")
        every = max(2, round(1 / val_fraction))
        all_images = _images_by_class_folder(data_dir)
        train_images = {name: [p for i, p in enumerate(files) if i % every != every - 1] for name, files in all_images.items()}
        val_images = {name: [p for i, p in enumerate(files) if i % every == every - 1] for name, files in all_images.items()}
    class_names = list(train_images)

    def split(images: dict[str, list[str]]) -> Split:
        pairs = [(path, class_id) for class_id, name in enumerate(class_names) for path in images[name]]
        return Split([p for p, _ in pairs], [c for _, c in pairs])

    return LabelledData(
        source=str(data_dir),
        layout="class_folders",
        class_names=class_names,
        labels=list(class_names),
        train=split(train_images),
        val=split(val_images),
    )


def _images_by_class_folder(folder: Path) -> dict[str, list[str]]:
    """{class folder name: image paths}, both in name order."""
    return {class_dir.name: class_folder_images(class_dir) for class_dir in class_folders(folder)}


# ------------------------------------------------------------------------ a model's labelled photos


def load_labelled_photos(path: Path | str, labels: Sequence[str], split: str = "val") -> list[tuple[Path, int]]:
    """(image path, index in `labels`) pairs, to evaluate a model with these labels on: from a split file, a
    folder holding <split>.txt, or a folder with one sub-folder per label (named as the label; a label without a
    folder is not evaluated; images in sub-folders count too)."""
    path = Path(path)
    if path.is_dir() and (path / f"{split}.txt").is_file():
        path = path / f"{split}.txt"
    if path.is_file():
        items = read_split_file(path, len(labels))
        return [(Path(image), class_id) for image, class_id in zip(items.paths, items.class_ids)]
    if path.is_dir():
        return _photos_by_label_folder(path, labels)
    raise FileNotFoundError(f"{path} is neither a split file nor a folder of labelled photos")


def _photos_by_label_folder(root: Path, labels: Sequence[str]) -> list[tuple[Path, int]]:
    folders = {folder.name: folder for folder in class_folders(root)}
    unknown = sorted(set(folders) - set(labels))
    if unknown:
        raise DatasetError(f"{root} has folders {unknown} that are not the model's labels: names must match labels.txt")
    return [(Path(image), index) for index, label in enumerate(labels) if label in folders
            for image in class_folder_images(folders[label], recursive=True)]


# ------------------------------------------------------------------------------------------ readers


def read_classes_csv(path: Path) -> list[str]:
    """classes.csv: a header, then `class name, class id, ...` rows; ids must be 0..n-1."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        rows = [row for row in csv.reader(file) if row]
    names_by_id: dict[int, str] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        try:
            names_by_id[int(row[1])] = row[0].strip()
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{line_number}: expected `class name, class id, ...`, got {row}") from None
    if sorted(names_by_id) != list(range(len(names_by_id))) or not names_by_id:
        raise DatasetError(f"{path}: class ids must be 0..n-1 with none missing, got {sorted(names_by_id)}")
    return [names_by_id[i] for i in range(len(names_by_id))]


def read_split_file(split_file: Path, num_classes: int) -> Split:
    """A split file's images (paths relative to the file) and class ids, each checked."""
    paths, class_ids = [], []
    for line_number, line in enumerate(split_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            relative_path, class_id = fields[0], int(fields[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{split_file}:{line_number}: expected `path, class_id, ...`, got {line!r}") from None
        if not 0 <= class_id < num_classes:
            raise DatasetError(
                f"{split_file}:{line_number}: class id {class_id} is out of range: there are {num_classes} classes "
                f"(ids 0..{num_classes - 1})"
            )
        path = split_file.parent / relative_path
        if not path.is_file():
            raise DatasetError(f"{split_file}:{line_number}: image {path} does not exist")
        paths.append(str(path))
        class_ids.append(class_id)
    if not paths:
        raise DatasetError(f"{split_file} lists no images")
    return Split(paths, class_ids)


def class_folders(folder: Path) -> list[Path]:
    """The class folders in `folder` (not hidden ones), in name order; none is an error."""
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DatasetError(f"{folder} has no class folders (expected one folder of images per class)")
    return found


def class_folder_images(class_dir: Path, recursive: bool = False) -> list[str]:
    """The images in a class folder (and its sub-folders when `recursive`), in path order; none is an error."""
    files = class_dir.rglob("*") if recursive else class_dir.iterdir()
    images = sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [str(p) for p in images]
