"""Classifier backbones. Every classifier maps uint8 images to logits.

Preprocessing (scaling and per-channel standardisation with the training
set's statistics; for pretrained ResNet-50 weights, the preprocessing they
were trained with) is part of the graph, so an exported model takes the raw
pixels a data source yields.
"""

import keras
import numpy as np

from idn_tf.models import resnet_basic
from idn_tf.models.resnet50 import CaffePreprocessing, is_pretrained, resnet50
from idn_tf.models.resnet_cifar import DEPTHS, resnet_cifar
from idn_tf.models.small_cnn import small_cnn

ARCHITECTURES = ("small_cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet50",
                 "preact_resnet18", "resnet34")


def preprocessing(inputs, mean, std):
    """uint8 pixels -> float32 standardised per channel: (x/255 − mean) / std."""
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return keras.layers.Normalization(
        axis=-1, mean=np.asarray(mean), variance=np.square(std), name="standardize")(x)


def build_classifier(arch, input_shape, num_classes, mean, std, seed=None, backbone_weights="none"):
    """A fresh classifier `arch` for uint8 inputs of `input_shape`, returning logits.

    Parameters
    ----------
    arch : str
        One of `ARCHITECTURES`.
    input_shape : tuple of int
        (H, W, C) of the uint8 images.
    num_classes : int
        K, the number of logits.
    mean, std : array-like of shape (C,)
        Pixel statistics on the [0, 1] scale (`data.views.pixel_statistics`); unused
        when `backbone_weights` is pretrained, which fixes its own.
    seed : int, optional
        Seeds the initialisers the network creates itself.
    backbone_weights : str
        resnet50 only: "none" (random), "imagenet" or a local `.h5` path;
        see `resnet50.resnet50`.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    pretrained = is_pretrained(backbone_weights)
    if pretrained and arch != "resnet50":
        raise ValueError(f"backbone_weights={backbone_weights!r} applies to resnet50 only, not {arch!r}")
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="images")
    if pretrained:  # pretrained weights only fit inputs preprocessed as in their training
        x = CaffePreprocessing(name="caffe_preprocess")(inputs)
    else:
        x = preprocessing(inputs, mean, std)
    if arch == "small_cnn":
        logits = small_cnn(x, num_classes, seed=seed)
    elif arch == "resnet50":
        logits = resnet50(x, num_classes, backbone_weights, seed=seed)
    elif arch in resnet_basic.BUILDERS:
        logits = resnet_basic.BUILDERS[arch](x, num_classes, seed=seed)
    else:
        logits = resnet_cifar(x, num_classes, DEPTHS[arch], seed=seed)
    return keras.Model(inputs, logits, name=arch)


def resnet32(num_classes, input_shape=(32, 32, 3), mean=0.0, std=1.0, seed=None):
    """ResNet-32 (option A, 0.46 M parameters) for uint8 images; returns logits [B, K].

    The default mean 0 and std 1 only scale pixels to [0, 1]; pass the
    training set's `data.views.pixel_statistics` (scalars or per channel) to
    standardise them as `build_classifier` callers do.
    """
    channels = input_shape[-1]
    mean, std = (np.broadcast_to(np.asarray(v, np.float64), (channels,)) for v in (mean, std))
    return build_classifier("resnet32", input_shape, num_classes, mean, std, seed=seed)
