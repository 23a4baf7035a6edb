"""The TensorFlow port of ImageNet-pretrained EfficientNet-Lite0 against the torch network it comes from, on
real photos; and its TF-Hub-style SavedModel loaded with hub.KerasLayer, frozen and fine-tunable."""

from __future__ import annotations

import numpy as np
import pytest

from load_tests.photos import GROCERY
from pipeline.core.preprocessing import load_training_image
from pipeline.train import efficientnet_lite

pytestmark = pytest.mark.models

BANANA = 954  # ImageNet class index
TOLERANCE = 1e-4  # max abs difference of the 1,280-d features (they range up to ~6): float32 summation order only


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Real val photos at Lite0's 224 px, through the training/serving preprocessing: two bananas, two others."""
    paths = sorted((GROCERY / "val" / "Fruit" / "Banana").glob("*.jpg"))[:2]
    paths += [sorted((GROCERY / "val" / "Packages" / "Milk").rglob("*.jpg"))[0],
              sorted((GROCERY / "val" / "Vegetables" / "Cabbage").rglob("*.jpg"))[0]]
    return np.stack([load_training_image(str(p), efficientnet_lite.INPUT_SIZE) for p in paths]).astype(np.float32)


@pytest.fixture(scope="module")
def torch_reference(photos):
    """The `efficientnet-lite-pytorch` network with the packaged state dict (strict): features and logits."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    network.load_state_dict(torch.load(efficientnet_lite.pretrained_weights_path(), map_location="cpu", weights_only=True))
    network.eval()
    with torch.no_grad():
        x = torch.from_numpy((photos - efficientnet_lite.MEAN) / efficientnet_lite.STDDEV).permute(0, 3, 1, 2)
        features = network._avg_pooling(network.extract_features(x)).flatten(1).numpy()
        logits = network(x).numpy()
    return features, logits


@pytest.fixture(scope="module")
def hub_module(tmp_path_factory):
    return efficientnet_lite.export_feature_vector(tmp_path_factory.mktemp("lite0") / "feature_vector")


@pytest.mark.data
def test_tensorflow_port_matches_torch_on_real_photos(photos, torch_reference):
    features, logits = torch_reference
    model = efficientnet_lite.pretrained_lite0(include_top=True)
    tf_logits = model(photos / 255.0, training=False).numpy()
    tf_features = efficientnet_lite.pretrained_lite0()(photos / 255.0, training=False).numpy()
    assert tf_features.shape == (4, 1280)
    assert np.abs(tf_features - features).max() <= TOLERANCE
    assert np.abs(tf_logits - logits).max() <= TOLERANCE * 10  # logits range up to ~20
    assert tf_logits[:2].argmax(axis=1).tolist() == [BANANA, BANANA]  # the ImageNet head names the bananas
    assert BANANA not in tf_logits[2:].argmax(axis=1).tolist()


@pytest.mark.data
def test_the_serving_classifier_answers_probabilities_and_embedding_of_one_forward_pass(photos, torch_reference):
    """classifier_from_state_dict's two outputs against torch's one pass: softmax(logits / T) and the pooled features
    the head read, L2-normalised."""
    features, logits = torch_reference
    state = efficientnet_lite.read_state_dict(efficientnet_lite.pretrained_weights_path())
    model = efficientnet_lite.classifier_from_state_dict("lite0", state, efficientnet_lite.IMAGENET_CLASSES, temperature=2.0)
    outputs = model(photos, training=False)  # pixels 0-255: the model rescales
    assert sorted(outputs) == ["embedding", "probabilities"]
    scaled = logits / 2.0
    expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    assert np.abs(outputs["probabilities"].numpy() - expected / expected.sum(axis=1, keepdims=True)).max() < 1e-5
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert outputs["embedding"].shape == (4, efficientnet_lite.FEATURES)
    assert np.abs(outputs["embedding"].numpy() - unit).max() < 1e-5  # features within 1e-4, their norm ~10 or more
    assert np.abs(np.linalg.norm(outputs["embedding"].numpy(), axis=1) - 1).max() < 1e-6


def test_state_dict_of_another_network_is_refused():
    model = efficientnet_lite.build_lite0()
    state = efficientnet_lite.read_state_dict(efficientnet_lite.pretrained_weights_path())
    state.pop("_blocks.3._depthwise_conv.weight")
    with pytest.raises(KeyError, match="_blocks.3._depthwise_conv.weight"):
        efficientnet_lite.load_state_dict(model, state)


@pytest.mark.data
def test_hub_keras_layer_loads_the_export_frozen_and_trainable(hub_module, photos, torch_reference):
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

    features, _ = torch_reference
    frozen = hub.KerasLayer(str(hub_module), trainable=False)
    assert np.abs(frozen(photos / 255.0).numpy() - features).max() <= TOLERANCE
    assert not frozen.trainable_weights

    # Fine-tuning through TF-Hub's layer: trainable weights, BatchNorm kept in inference mode.
    layer = hub.KerasLayer(str(hub_module), trainable=True)
    inputs = tf_keras.Input((224, 224, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(layer(inputs, training=False)))
    assert len(layer.trainable_weights) > 100 and layer.non_trainable_weights  # BN moving statistics
    moving_before = [w.numpy().copy() for w in layer.non_trainable_weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(photos / 255.0, training=True) ** 2)
    gradients = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in gradients)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(moving_before, layer.non_trainable_weights))
    # training=True really switches BatchNorm to batch statistics (the traced mode is there to pass through)
    assert np.abs(layer(photos / 255.0, training=True).numpy() - features).max() > 0.1
