"""The one photo→answer loop, with stand-in model calls: what it sends each model and how it makes the answers.
(Real models through it: tests/test_evaluate_export.py, tests/test_service.py, tests/test_cluster.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.core.loop_modes import ALL_POLICIES, ENROLLMENT, HELLO, LARGEST_PRODUCT
from pipeline.core.photo_to_answer import Classified, ModelFacts, PhotoToAnswer, nothing_detected
from pipeline.core.recognition import HELLO_POLICIES, hello_probabilities
from pipeline.core.settings import RecognizerSettings

LABELS = ["red", "blue", "grey"]
FACTS = ModelFacts(LABELS, classifier_input_size=16, detector_input_size=64, hello_policy="average", unknown_threshold=0.6)


def photo(red: tuple[int, int, int, int] | None = (0, 0, 300, 200), blue: tuple[int, int, int, int] | None = (400, 100, 500, 200)) -> bytes:
    """A 640x480 grey photo with a red and a blue product (boxes in photo pixels)."""
    image = Image.new("RGB", (640, 480), (128, 128, 128))
    for box, colour in ((red, (255, 0, 0)), (blue, (0, 0, 255))):
        if box:
            image.paste(colour, box)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class StandIns:
    """A detector that finds the red and blue areas of the letterboxed image; a classifier that names a crop by
    its colour. Both record what they were sent."""

    def __init__(self) -> None:
        self.detected: list[list[np.ndarray]] = []
        self.classified: list[list[np.ndarray]] = []

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.detected.append(images)
        found = []
        for image in images:
            boxes = []
            for channel in (0, 2):
                ys, xs = np.nonzero((image[..., channel] > 200) & (image[..., 1] < 50))
                if len(xs):
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9])
            found.append(np.array(boxes, np.float32).reshape(-1, 5))
        return found

    def classify(self, crops: list[np.ndarray]) -> Classified:
        """Probabilities by colour; the embedding is the crop's mean colour, L2-normalised."""
        self.classified.append(crops)
        means = np.array([crop.reshape(-1, 3).mean(axis=0) for crop in crops])
        scores = np.stack([means[:, 0] - means[:, 1], means[:, 2] - means[:, 1], 40 - np.abs(means[:, 0] - means[:, 2])], axis=1)
        exp = np.exp(scores / 20)
        return Classified(exp / exp.sum(axis=1, keepdims=True), (means + 1) / np.linalg.norm(means + 1, axis=1, keepdims=True))

    def classify_without_embeddings(self, crops: list[np.ndarray]) -> Classified:
        """A model exported before embeddings."""
        return Classified(self.classify(crops).probabilities, None)


def test_boxes_become_answers_largest_first_with_the_whole_photo_folded_into_the_first():
    models = StandIns()
    loop = PhotoToAnswer(FACTS, RecognizerSettings(crop_margin=0.0))
    (recognized,), seconds = loop.run([photo()], models.detect, models.classify)
    assert len(models.detected) == 1 and models.detected[0][0].shape == (64, 64, 3)  # the detector's trained size
    assert [a.label for a in recognized.answers] == ["red", "blue"]  # the red product is the larger
    assert recognized.regions[0] == pytest.approx((0, 0, 300, 200), abs=12)  # 64 px letterbox: coarse boxes
    (crops,) = models.classified
    assert len(crops) == 3 and all(c.shape == (16, 16, 3) for c in crops)  # two boxes, then the whole photo
    assert recognized.whole_photo is not None
    assert recognized.prominent == pytest.approx((recognized.probabilities[0] + recognized.whole_photo) / 2)
    assert recognized.answers[0].candidates[0][1] == pytest.approx(recognized.prominent.max())
    assert min(seconds.decode, seconds.detect, seconds.crop, seconds.classify) >= 0


def test_nothing_detected_classifies_the_whole_photo_once():
    models = StandIns()
    loop = PhotoToAnswer(FACTS, RecognizerSettings())
    (recognized,), _ = loop.run([photo(red=None, blue=None)], nothing_detected, models.classify)
    assert not recognized.detected and recognized.regions == [None] and recognized.whole_photo is None
    assert len(models.classified[0]) == 1 and [a.label for a in recognized.answers] == ["grey"]


def test_policy_crop_sends_no_whole_photo_and_prominent_only_one_box():
    models = StandIns()
    crop_policy = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy="crop"), RecognizerSettings())
    (recognized,), _ = crop_policy.run([photo()], models.detect, models.classify)
    assert len(models.classified[-1]) == 2 and recognized.whole_photo is None
    (prominent,), _ = crop_policy.run([photo()], models.detect, models.classify, ALL_POLICIES)
    assert len(models.classified[-1]) == 2 and len(prominent.answers) == 1 and prominent.whole_photo is not None


def test_answer_only_computes_what_the_prominent_answer_reads():
    """/hello's work: under the whole-photo policy with no catalog to match, the whole photo alone (no detector call,
    no crop) and the same answer as the largest product's; a catalog to match, or a policy that reads the crop,
    needs the detector and the largest crop back."""
    models = StandIns()
    whole_photo = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy="whole_photo"), RecognizerSettings())
    (prominent,), _ = whole_photo.run([photo()], models.detect, models.classify, LARGEST_PRODUCT)
    assert len(models.detected) == 1 and len(models.classified[-1]) == 2  # the largest crop, then the whole photo
    (alone,), seconds = whole_photo.run([photo()], models.detect, models.classify, HELLO)
    assert len(models.detected) == 1 and seconds.detect == 0.0  # the detector was not asked, and no time is booked to it
    (whole,) = models.classified[-1]
    assert whole.shape == (16, 16, 3) and np.array_equal(whole, models.classified[-2][1])  # the same whole photo
    assert alone.regions == [None] and not alone.detected and len(alone.answers) == 1
    assert alone.answers[0] == prominent.answers[0] and np.array_equal(alone.prominent, prominent.prominent)

    nothing_enrolled = lambda embeddings: [None] * len(embeddings)  # noqa: E731  a catalog copy with no match
    (matched,), _ = whole_photo.run([photo()], models.detect, models.classify, HELLO, match=nothing_enrolled)
    assert len(models.detected) == 2 and len(models.classified[-1]) == 2  # the crop's embedding is what is matched
    assert matched.answers[0].label == prominent.answers[0].label and matched.detected

    (averaged,), _ = PhotoToAnswer(FACTS, RecognizerSettings()).run([photo()], models.detect, models.classify, HELLO)
    assert len(models.detected) == 3 and len(models.classified[-1]) == 2 and len(averaged.answers) == 1


def test_every_policys_answer_derived_from_one_all_policies_pass_is_what_the_loop_answers_under_it():
    """Evaluation's way (recognition.hello_probabilities over an ALL_POLICIES pass) gives, for each /hello policy,
    the loop's own answer in HELLO under a model whose policy it is: a photo with products, and one without."""
    models = StandIns()
    photos = [photo(), photo(red=None, blue=None)]
    both, _ = PhotoToAnswer(FACTS, RecognizerSettings()).run(photos, models.detect, models.classify, ALL_POLICIES)
    crop = np.stack([r.probabilities[0] for r in both])
    whole = np.stack([r.whole_photo if r.whole_photo is not None else r.probabilities[0] for r in both])
    for policy in HELLO_POLICIES:
        loop = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy=policy), RecognizerSettings())
        served, _ = loop.run(photos, models.detect, models.classify, HELLO)
        derived = hello_probabilities(crop, whole, [r.detected for r in both], policy)
        assert np.allclose(derived, np.stack([r.prominent for r in served])), policy


def test_many_photos_take_one_call_per_model_and_come_back_in_order():
    models = StandIns()
    loop = PhotoToAnswer(FACTS, RecognizerSettings())
    photos = [photo(), photo(red=None, blue=None), photo(red=(0, 0, 100, 100), blue=(200, 100, 600, 400))]
    recognized, _ = loop.run(photos, models.detect, models.classify)
    assert len(models.detected) == 1 and len(models.detected[0]) == 3 and len(models.classified) == 1
    assert len(models.classified[0]) == 3 + 1 + 3  # 2 boxes + whole, the whole photo alone, 2 boxes + whole
    assert [[a.label for a in r.answers] for r in recognized] == [["red", "blue"], ["grey"], ["blue", "red"]]


def test_threshold_and_top_k_from_the_settings_else_the_models():
    models = StandIns()
    (default,), _ = PhotoToAnswer(FACTS, RecognizerSettings()).run([photo()], models.detect, models.classify)
    (strict,), _ = PhotoToAnswer(FACTS, RecognizerSettings(top_k=2, unknown_threshold=1.0)).run([photo()], models.detect, models.classify)
    assert len(default.answers[1].candidates) == 3 and len(strict.answers[1].candidates) == 2
    assert default.answers[1].known == (default.probabilities[1].max() >= FACTS.unknown_threshold)
    assert not any(a.known for a in strict.answers)


def test_each_region_gets_the_embedding_of_its_own_crop_and_the_whole_photo_its_own():
    """Three photos in one classifier call: every photo's embedding rows are its regions' crops', in region order,
    and the whole photo's row is apart (`whole_embedding`), when the policy looked at it."""
    models = StandIns()
    photos = [photo(), photo(red=None, blue=None), photo(red=(0, 0, 100, 100), blue=(200, 100, 600, 400))]
    recognized, _ = PhotoToAnswer(FACTS, RecognizerSettings(crop_margin=0.0)).run(photos, models.detect, models.classify)
    (crops,) = models.classified
    sent = models.classify(crops).embeddings
    red, blue, grey = (np.array(c, float) + 1 for c in ((255, 0, 0), (0, 0, 255), (128, 128, 128)))
    cosine = lambda row, colour: float(row @ colour / np.linalg.norm(colour))  # noqa: E731
    first, alone, third = recognized
    assert first.embeddings.shape == (2, 3) and cosine(first.embeddings[0], red) > 0.99 and cosine(first.embeddings[1], blue) > 0.99
    assert third.embeddings.shape == (2, 3) and cosine(third.embeddings[0], blue) > 0.99 and cosine(third.embeddings[1], red) > 0.99
    assert np.array_equal(first.whole_embedding, sent[2]) and np.array_equal(third.whole_embedding, sent[6])
    assert cosine(first.whole_embedding, grey) > 0.9  # the whole photo is mostly grey
    assert alone.embeddings.shape == (1, 3) and alone.whole_embedding is None and cosine(alone.embeddings[0], grey) > 0.99
    assert np.array_equal(np.concatenate([first.embeddings, first.whole_embedding[None], alone.embeddings, third.embeddings,
                                          third.whole_embedding[None]]), sent)
    (cropped,), _ = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy="crop"), RecognizerSettings()).run(
        [photo()], models.detect, models.classify)
    assert cropped.whole_embedding is None and len(cropped.embeddings) == 2  # the policy did not look at the whole photo
    (old,), _ = PhotoToAnswer(FACTS, RecognizerSettings()).run([photo()], models.detect, models.classify_without_embeddings)
    assert old.embeddings is None and old.whole_embedding is None and [a.label for a in old.answers] == ["red", "blue"]


def test_an_enrolled_photo_is_the_unit_mean_of_its_largest_crop_and_the_whole_photo():
    models = StandIns()
    loop = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy="whole_photo"), RecognizerSettings())
    (enrolled, blank), _ = loop.run([photo(), photo(red=None, blue=None)], models.detect, models.classify,
                                    ENROLLMENT)
    crop, whole = enrolled.embeddings[0], enrolled.whole_embedding
    assert np.allclose(enrolled.enrolled_vector, (crop + whole) / np.linalg.norm(crop + whole))
    assert np.linalg.norm(enrolled.enrolled_vector) == pytest.approx(1.0) and 0.5 < float(crop @ whole) < 0.99
    assert blank.enrolled_vector is None  # no product: enrollment refuses the photo
    crop_policy = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy="crop"), RecognizerSettings())
    (crop_only,), _ = crop_policy.run([photo()], models.detect, models.classify, LARGEST_PRODUCT)
    with pytest.raises(ValueError, match="policy 'average'"):
        crop_only.enrolled_vector  # noqa: B018  reading the property is what raises


def test_without_a_classifier_the_loop_stops_at_the_regions():
    models = StandIns()
    (recognized,), _ = PhotoToAnswer(FACTS, RecognizerSettings(crop_margin=0.2)).run([photo()], models.detect, None)
    assert recognized.answers == [] and not models.classified and len(recognized.regions) == 2
    x1, y1, x2, y2 = recognized.regions[0]
    assert x1 < 0 and x2 > 300  # grown by the margin (clipped only when cut)


def test_the_whole_photo_view_is_the_models_centre_share_and_boxes_stay_as_detected():
    """A model_label's whole_photo_share < 1: the whole-photo view (and a photo with nothing detected) is the centre
    share of each side, squashed; detector boxes are cut as before. A red square filling exactly the centre half of
    each side is all the classifier sees at share 0.5, and a quarter of it at share 1."""
    models = StandIns()
    red_centre = photo(red=(160, 120, 480, 360), blue=None)
    for share, red_share in ((1.0, 0.25), (0.5, 1.0)):
        loop = PhotoToAnswer(ModelFacts(LABELS, 16, 64, hello_policy="whole_photo", whole_photo_share=share), RecognizerSettings())
        (seen,), _ = loop.run([red_centre], nothing_detected, models.classify, HELLO)
        (whole,) = models.classified[-1]
        assert seen.regions == [None]
        redness = np.mean(whole[..., 0].astype(float) - whole[..., 1]) / 255  # grey: 0, red: 1
        assert abs(redness - red_share) < 0.05, (share, redness)
    (boxed,), _ = loop.run([red_centre], models.detect, models.classify, LARGEST_PRODUCT)
    crop, whole = models.classified[-1]
    assert np.all(whole == (255, 0, 0))  # the view
    assert len(boxed.boxes) == 1 and boxed.regions[0] is not None and crop.shape == whole.shape  # the box (with its margin)
    with pytest.raises(ValueError, match="share"):
        PhotoToAnswer(ModelFacts(LABELS, 16, 64, whole_photo_share=1.5), RecognizerSettings()).run(
            [red_centre], nothing_detected, models.classify)


def test_run_files_reports_each_batch_done(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(photo())
    models, done = StandIns(), []
    recognized = PhotoToAnswer(FACTS, RecognizerSettings()).run_files(paths, models.detect, models.classify, ALL_POLICIES,
                                                                     batch=2, progress=done.append)
    assert done == [2, 2, 1] and len(recognized) == 5
    assert [len(images) for images in models.detected] == [2, 2, 1]
