"""Classifier backbones. Every classifier maps uint8 images to logits.

Preprocessing (scaling and per-channel standardisation with the training
set's statistics) is part of the graph, so an exported model takes the raw
pixels a data source yields.
"""

import keras
import numpy as np

from idn_tf.models.small_cnn import small_cnn

ARCHITECTURES = ("small_cnn",)


def pixel_statistics(images):
    """Per-channel mean and std of uint8 images [N, H, W, C] scaled to [0, 1]."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(axis=0), np.maximum(pixels.std(axis=0), 1e-3)


def preprocessing(inputs, mean, std):
    """uint8 pixels -> float32 standardised per channel: (x/255 − mean) / std."""
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return keras.layers.Normalization(
        axis=-1, mean=np.asarray(mean), variance=np.square(std), name="standardize")(x)


def build_classifier(arch, input_shape, num_classes, mean, std, seed=None):
    """A fresh classifier `arch` for uint8 inputs of `input_shape`, returning logits."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="images")
    x = preprocessing(inputs, mean, std)
    logits = small_cnn(x, num_classes, seed=seed)
    return keras.Model(inputs, logits, name=arch)
