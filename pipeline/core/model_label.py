"""The model_label/ folder: what training writes and what serving loads, tied together by manifest.json.

The manifest records each file's checksum, the classifier's input size and label count, the detector's
input size, the preprocessing, the training data and the figures measured at training time. Serving calls
`load_model_label()` at startup, which refuses a folder whose files disagree with its manifest, with a
message that says which file and how.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.catalog.rule import CatalogRule
from pipeline.core.paths import MODEL_LABEL_DIR
from pipeline.core.recognition import DEFAULT_HELLO_POLICY, HELLO_POLICIES
from pipeline.core.unknown_keys import hint

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
GALLERY_NAME = "classifier_gallery.npz"  # pipeline.release.catalog_gallery: the embeddings of the classifier's fit photos
CLASSIFIER_NAME = "classifier"  # a TensorFlow SavedModel directory
DETECTOR_NAME = "detector.pt"  # an ultralytics checkpoint
FORMAT_VERSION = 1
DEFAULT_UNKNOWN_THRESHOLD = 0.5
"""For a manifest without a calibrated threshold (models exported before calibration existed)."""

DEFAULT_MODEL_DIR = MODEL_LABEL_DIR

FRAMEWORK_RUNTIME = {"classifier": "savedmodel", "detector": "torch"}
"""The runtime each model is trained in: the reference the others are measured against, and the GPU path."""
RUNTIMES = {"classifier": ("savedmodel", "tflite", "tflite_int8"), "detector": ("torch", "onnx", "onnx_int8")}
AUTO_RUNTIME = "auto"


def unknown_runtime(part: str, runtime: str) -> str | None:
    """Why `runtime` is no runtime of `part` (the close names told), or None when it is one of RUNTIMES (or auto)."""
    names = (AUTO_RUNTIME, *RUNTIMES[part])
    return None if runtime in names else f"unknown {part} runtime {runtime!r}; {hint(runtime, names)}"


def fastest_within_bar(part: str, entries: dict[str, dict[str, Any]]) -> str:
    """`auto` on CPU: among `part`'s framework runtime and the runtimes that met the accuracy bar, the fastest
    by the `ms_per_item` export measured (`entries`: runtime → its manifest entry)."""
    framework = FRAMEWORK_RUNTIME[part]
    eligible = [runtime for runtime, entry in entries.items() if runtime == framework or entry.get("meets_bar")]
    return min(eligible, key=lambda runtime: entries[runtime].get("ms_per_item", float("inf")))


class ModelLabelError(RuntimeError):
    """model_label/ is missing something or its files disagree with the manifest."""


def sha256_of(path: Path) -> str:
    """Checksum of a file, or of a directory's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_labels(path: Path) -> list[str]:
    """One label per line, UTF-8 (a BOM and CRLF endings, as in the original label file, are accepted).

    Only line endings are stripped: a blank field of a `name_container_size` label is a single space.
    """
    text = path.read_text(encoding="utf-8-sig")
    labels = [line.rstrip("\r") for line in text.split("\n")]  # not splitlines(): it also splits on \x85, \u2028
    while labels and not labels[-1].strip():
        labels.pop()
    if not labels:
        raise ModelLabelError(f"{path} holds no labels")
    if any(not label.strip() for label in labels):
        raise ModelLabelError(f"{path} has a blank line among its labels")
    return labels


def write_labels(path: Path, labels: list[str]) -> None:
    path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def parse_label(label: str) -> dict[str, str | None]:
    """`name_container_size` into its fields; a blank field (a single space) or a missing one is None."""
    fields = label.split("_", 2) + [None, None]
    name, container, size = (f.strip() if f is not None else None for f in fields[:3])
    return {"name": name, "container": container or None, "size": size or None}


@dataclass(frozen=True)
class ModelLabel:
    """A verified model_label/ folder."""

    directory: Path
    manifest: dict[str, Any]
    labels: list[str]

    @property
    def classifier_path(self) -> Path:
        return self.directory / self.manifest["classifier"]["path"]

    @property
    def detector_path(self) -> Path:
        return self.directory / self.manifest["detector"]["path"]

    @property
    def classifier_input_size(self) -> int:
        return int(self.manifest["classifier"]["input_size"])

    @property
    def detector_input_size(self) -> int:
        return int(self.manifest["detector"]["input_size"])

    @property
    def unknown_threshold(self) -> float:
        """Top-1 probability under which an answer is "unknown": calibrated at export (manifest), else 0.5."""
        calibration = self.manifest["classifier"].get("calibration") or {}
        return float(calibration.get("unknown_threshold", DEFAULT_UNKNOWN_THRESHOLD))

    @property
    def hello_policy(self) -> str:
        """What the prominent product's answer is made of (pipeline.core.recognition.HELLO_POLICIES), chosen at export."""
        return str(self.manifest["classifier"].get("hello_policy", DEFAULT_HELLO_POLICY))

    @property
    def whole_photo_share(self) -> float:
        """The whole-photo view's centre share of each side (pipeline.core.recognition.whole_photo_box), chosen at
        export on the selection split; 1 (the whole photo) for a model_label/ from before it."""
        return float(self.manifest["classifier"].get("whole_photo_share", 1.0))

    @property
    def versions(self) -> dict[str, str]:
        return {part: self.manifest[part]["version"] for part in ("classifier", "detector")}

    def runtimes(self, part: str) -> list[str]:
        """The runtimes `part` (classifier or detector) was exported for: its framework's, then the manifest's `runtimes`."""
        return [FRAMEWORK_RUNTIME[part], *(self.manifest[part].get("runtimes") or {})]

    def runtime_entry(self, part: str, runtime: str) -> dict[str, Any]:
        """The manifest entry of `part` in `runtime`: path, checksum, and what export measured of it."""
        if runtime == FRAMEWORK_RUNTIME[part]:
            return self.manifest[part]
        entry = (self.manifest[part].get("runtimes") or {}).get(runtime)
        if entry is None:
            raise ModelLabelError(
                f"{self.directory / MANIFEST_NAME} has no {part} for runtime {runtime!r}, only {self.runtimes(part)}: "
                "export it (python -m pipeline.release.export) or ask for another runtime in serve_config.yaml's args")
        return entry

    def runtime_path(self, part: str, runtime: str) -> Path:
        return self.directory / self.runtime_entry(part, runtime)["path"]

    def resolve_runtime(self, part: str, requested: str, use_gpu: bool) -> str:
        """`requested` if this folder has it (ModelLabelError if not); for `auto`, the framework runtime on a GPU,
        and on CPU the fastest runtime export measured (ms_per_item) among those that met the accuracy bar."""
        unknown = unknown_runtime(part, requested)
        if unknown:
            raise ModelLabelError(unknown)
        if requested != AUTO_RUNTIME:
            self.runtime_entry(part, requested)
            return requested
        if use_gpu:
            return FRAMEWORK_RUNTIME[part]
        return fastest_within_bar(part, {runtime: self.runtime_entry(part, runtime) for runtime in self.runtimes(part)})

    def unknown_threshold_for(self, runtime: str) -> float:
        """The unknown threshold calibrated for the classifier in `runtime` (each runtime's probabilities differ a
        little, int8's most), else the framework runtime's."""
        calibration = self.runtime_entry("classifier", runtime).get("calibration") or {}
        return float(calibration.get("unknown_threshold", self.unknown_threshold))

    @property
    def catalog_rule(self) -> CatalogRule:
        """When the catalog names a product for this classifier: the manifest's `catalog.rule` (chosen by
        pipeline.release.catalog_evaluation), else pipeline.core.catalog.rule's defaults."""
        rule = self.manifest.get("catalog", {}).get("rule")
        if not rule:
            return CatalogRule()
        return CatalogRule(rule["policy"], float(rule["threshold"]), tuple(float(w) for w in rule.get("weights", ())))

    @property
    def gallery_path(self) -> Path | None:
        """The classifier's gallery (pipeline.release.catalog_gallery), None when the folder has none."""
        gallery = self.manifest["classifier"].get("gallery")
        return self.directory / gallery["path"] if gallery else None

    @property
    def embedding_dim(self) -> int | None:
        """The width of the classifier's embedding output (manifest `classifier.embedding`), None if it has none."""
        embedding = self.manifest["classifier"].get("embedding")
        return int(embedding["dim"]) if embedding else None

    def check_classifier_outputs(self, outputs: int, embedding_dim: int | None) -> None:
        """Called once the classifier is loaded: its output width must be the label count, and its embedding (None:
        it has none) as wide as the manifest says."""
        if outputs != len(self.labels):
            raise ModelLabelError(
                f"{self.classifier_path} has {outputs} outputs but {self.directory / LABELS_NAME} "
                f"has {len(self.labels)} labels: they must be exported together"
            )
        if embedding_dim != self.embedding_dim:
            raise ModelLabelError(
                f"{self.classifier_path} has {'no embedding' if embedding_dim is None else f'a {embedding_dim}-d embedding'} "
                f"but {self.directory / MANIFEST_NAME} says {self.embedding_dim}: they must be exported together")


def model_dir_from_env() -> Path:
    """MODEL_LABEL_DIR overrides the shipped folder (tests point it at models they make)."""
    return Path(os.environ.get("MODEL_LABEL_DIR") or DEFAULT_MODEL_DIR).resolve()


def load_model_label(directory: Path | str | None = None, verify_checksums: bool = True) -> ModelLabel:
    """Read and verify a model_label/ folder; raise ModelLabelError naming the first disagreement."""
    directory = Path(directory).resolve() if directory is not None else model_dir_from_env()
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelLabelError(f"{manifest_path} is missing: train and export models first (docs/training.md)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelLabelError(f"{manifest_path} is not valid JSON: {error}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLabelError(
            f"{manifest_path} has format_version {manifest.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    files = []
    for part in ("classifier", "detector", "labels"):
        entry = manifest.get(part)
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise ModelLabelError(f"{manifest_path} has no valid '{part}' entry (path and sha256)")
        files.append((f"the {part}", entry))
        runtimes = entry.get("runtimes") or {}
        files += [(f"the {part} for runtime {name}", runtime) for name, runtime in runtimes.items()]
        if entry.get("gallery"):
            files.append((f"the {part}'s gallery", entry["gallery"]))
    for what, entry in files:
        path = directory / entry["path"]
        if not path.exists():
            raise ModelLabelError(f"{path} is missing but {manifest_path} lists it as {what}")
        if verify_checksums and sha256_of(path) != entry["sha256"]:
            raise ModelLabelError(
                f"{path} does not match the sha256 in {manifest_path}: the file was changed or replaced "
                "without exporting again"
            )
    labels = read_labels(directory / manifest["labels"]["path"])
    expected = manifest["classifier"].get("num_classes")
    if expected != len(labels):
        raise ModelLabelError(
            f"{directory / manifest['labels']['path']} has {len(labels)} labels but the manifest's classifier "
            f"has num_classes={expected}"
        )
    policy = manifest["classifier"].get("hello_policy", DEFAULT_HELLO_POLICY)
    if policy not in HELLO_POLICIES:
        raise ModelLabelError(f"{manifest_path} has classifier.hello_policy {policy!r}; this code knows {sorted(HELLO_POLICIES)}")
    bundle = ModelLabel(directory=directory, manifest=manifest, labels=labels)
    if not 0 < bundle.whole_photo_share <= 1:
        raise ModelLabelError(f"{manifest_path} has classifier.whole_photo_share {bundle.whole_photo_share}; it must be in (0, 1]")
    if bundle.catalog_rule.needs_gallery and bundle.gallery_path is None:
        raise ModelLabelError(f"{manifest_path}'s catalog rule {bundle.catalog_rule.policy!r} needs the classifier's gallery, "
                              "which it does not list: python -m pipeline.release.catalog_gallery")
    return bundle


def write_manifest(
    directory: Path,
    *,
    classifier: dict[str, Any],
    detector: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write manifest.json for the files already in `directory`, with fresh checksums and versions.

    `classifier` must hold input_size and num_classes, `detector` input_size; anything else given
    (preprocessing, training data, metrics, `runtimes`: {runtime: {"path": ..., ...}}) is recorded as is.
    """
    directory = Path(directory)
    labels = read_labels(directory / LABELS_NAME)
    now = datetime.datetime.now(datetime.UTC)
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "created": now.isoformat(timespec="seconds")}
    for part, name, info in (("classifier", CLASSIFIER_NAME, classifier), ("detector", DETECTOR_NAME, detector)):
        checksum = sha256_of(directory / name)
        manifest[part] = {
            "path": name,
            "sha256": checksum,
            "version": info.get("version") or f"{part}-{now:%Y%m%d}-{checksum[:8]}",
            **{k: v for k, v in info.items() if k != "version"},
        }
        if info.get("embedding"):  # the embedding space is the classifier's: pinned to its version
            manifest[part]["embedding"] = {**info["embedding"], "model_version": manifest[part]["version"]}
        if info.get("runtimes"):  # the same model in other runtimes: their files' checksums too
            manifest[part]["runtimes"] = {runtime: {**entry, "sha256": sha256_of(directory / entry["path"])}
                                          for runtime, entry in info["runtimes"].items()}
    manifest["labels"] = {"path": LABELS_NAME, "sha256": sha256_of(directory / LABELS_NAME), "count": len(labels)}
    manifest.update(extra or {})
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
