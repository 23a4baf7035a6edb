"""model_label/ loading: a folder that disagrees with its manifest is refused at startup, naming the problem."""

import json
import shutil

import pytest

from deployments.classifier import Classifier
from pipeline.core.model_label import (
    ModelLabelError,
    load_model_label,
    parse_label,
    read_labels,
    sha256_of,
    write_labels,
    write_manifest,
)
from pipeline.core.paths import SHARED_DATA
from tests.tiny_models import make_model_label

ORIGINAL_LABELS = SHARED_DATA.parent / "reference" / "original_labels.txt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_label(tmp_path_factory.mktemp("model_label"), ["Banana_ _ ", "신라면_컵_114", "Kiwi_ _ "])


@pytest.fixture
def copy_of(model_dir, tmp_path):
    target = tmp_path / "model_label"
    shutil.copytree(model_dir, target)
    return target


@pytest.mark.models
def test_a_consistent_folder_loads(model_dir):
    bundle = load_model_label(model_dir)
    assert bundle.labels == ["Banana_ _ ", "신라면_컵_114", "Kiwi_ _ "]
    assert bundle.classifier_input_size == 64
    assert set(bundle.versions) == {"classifier", "detector"}


@pytest.mark.models
def test_missing_file_is_named(copy_of):
    (copy_of / "detector.pt").unlink()
    with pytest.raises(ModelLabelError, match="detector.pt is missing"):
        load_model_label(copy_of)


def test_missing_manifest_says_what_to_do(tmp_path):
    with pytest.raises(ModelLabelError, match="manifest.json is missing"):
        load_model_label(tmp_path)


@pytest.mark.models
def test_changed_file_fails_its_checksum(copy_of):
    with open(copy_of / "detector.pt", "ab") as file:
        file.write(b"tampered")
    with pytest.raises(ModelLabelError, match="detector.pt does not match the sha256"):
        load_model_label(copy_of)


@pytest.mark.models
def test_changed_file_inside_the_saved_model_fails_its_checksum(copy_of):
    variables = next((copy_of / "classifier" / "variables").glob("*.data-*"))
    data = variables.read_bytes()
    variables.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ModelLabelError, match="classifier does not match the sha256"):
        load_model_label(copy_of)


@pytest.mark.models
def test_label_count_must_match_the_manifest(copy_of):
    write_labels(copy_of / "labels.txt", ["a_ _ ", "b_ _ "])
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["labels"]["sha256"] = sha256_of(copy_of / "labels.txt")
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLabelError, match="has 2 labels but the manifest's classifier has num_classes=3"):
        load_model_label(copy_of)


@pytest.mark.models
def test_an_unknown_hello_policy_is_refused_and_none_means_crop(copy_of):
    assert load_model_label(copy_of).hello_policy == "crop"  # manifests from before the policy existed
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["classifier"]["hello_policy"] = "average"
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    assert load_model_label(copy_of).hello_policy == "average"
    manifest["classifier"]["hello_policy"] = "largest_only"
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLabelError, match="hello_policy 'largest_only'"):
        load_model_label(copy_of)


@pytest.mark.models
def test_the_whole_photo_share_is_the_manifests_one_and_must_be_a_share(copy_of):
    assert load_model_label(copy_of).whole_photo_share == 1.0  # manifests from before the view existed: the whole photo
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["classifier"]["whole_photo_share"] = 0.85
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    assert load_model_label(copy_of).whole_photo_share == 0.85
    manifest["classifier"]["whole_photo_share"] = 0
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLabelError, match="whole_photo_share 0"):
        load_model_label(copy_of)


@pytest.mark.models
def test_label_count_must_match_the_classifier_outputs(tmp_path, model_dir):
    # A manifest that is consistent with itself, around a classifier with 3 outputs but 4 labels.
    other = make_model_label(tmp_path / "four", ["a_ _ ", "b_ _ ", "c_ _ ", "d_ _ "], detector_from=model_dir / "detector.pt")
    shutil.rmtree(other / "classifier")
    shutil.copytree(model_dir / "classifier", other / "classifier")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["classifier"]["sha256"] = sha256_of(other / "classifier")
    (other / "manifest.json").write_text(json.dumps(manifest))
    load_model_label(other)  # the files agree with the manifest...
    with pytest.raises(ModelLabelError, match="has 3 outputs but .* has 4 labels"):
        Classifier.func_or_class(str(other))  # ...but the replica refuses to start


@pytest.mark.models
def test_the_embedding_is_pinned_to_the_classifier_version_and_a_replica_checks_it(copy_of):
    assert load_model_label(copy_of).embedding_dim is None  # the tiny classifier has no embedding output
    write_manifest(copy_of, classifier={"input_size": 64, "num_classes": 3, "embedding": {"output": "embedding", "dim": 16}},
                   detector={"input_size": 320})
    bundle = load_model_label(copy_of)
    assert bundle.embedding_dim == 16 and bundle.manifest["classifier"]["embedding"]["model_version"] == bundle.versions["classifier"]
    with pytest.raises(ModelLabelError, match="has no embedding but .*manifest.json says 16"):
        Classifier.func_or_class(str(copy_of))  # the manifest promises what the model does not give: no start


@pytest.mark.data
def test_original_label_file_reads_with_crlf_and_blank_fields():
    labels = read_labels(ORIGINAL_LABELS)
    # 149 CRLF line ends and a last line without one: 150 labels (wc -l says 149).
    assert len(labels) == 150 == ORIGINAL_LABELS.read_bytes().count(b"\r\n") + 1
    assert labels[0] == "2%부족할때아쿠아_ _500" and labels[-1] == "환타레몬_캔_355"
    assert not any(label.endswith("\r") for label in labels)
    assert parse_label("신라면_컵_114") == {"name": "신라면", "container": "컵", "size": "114"}
    blank = next(label for label in labels if label.startswith("가그린제로"))
    assert parse_label(blank) == {"name": "가그린제로", "container": None, "size": None}
    assert parse_label("Banana") == {"name": "Banana", "container": None, "size": None}
