"""Image features for the instance-dependent noise generators (docs/method.md §5).

The paper embeds CIFAR-10 with an ImageNet-pretrained ResNet-50 (pool-5, 2048 dims) before
k-means (``resnet50``). Offline, or for small images, the features are the pixels or their
first principal components (``pixels``, ``pca``). TensorFlow is imported only for
``resnet50``, so that the noise module stays importable without it.
"""

from __future__ import annotations

import numpy as np
import sklearn.decomposition

from idn_tf.data.dataset import DataError

NOISE_FEATURES = ("pca", "pixels", "resnet50")

# ResNet-50's ImageNet weights were trained on 224x224 images; CIFAR's 32x32 images are
# resized (bilinear) to this size by default so that pool-5 sees objects at about the scale
# it was trained on. The paper does not say whether it resized; --noise_feature_size changes it.
RESNET50_INPUT_SIZE = 224


def features_for_noise(images: np.ndarray, kind: str = "pca", dims: int = 3, seed: int = 0,
                       size: int = RESNET50_INPUT_SIZE, weights: str = "imagenet",
                       batch_size: int = 64) -> np.ndarray:
    """Features of the training images for kmeans / mlp noise.

    Parameters
    ----------
    images : uint8 [N, H, W, C].
    kind : "pixels" -> the flattened pixels / 255, float32 [N, H*W*C];
        "pca" -> their first `dims` principal components (sklearn PCA), [N, dims];
        "resnet50" -> ResNet-50 pool-5 activations of the images resized to `size`, float32
        [N, 2048] (`resnet50_features`).
    seed : random_state of PCA (used only if sklearn picks a randomised solver).
    size, weights, batch_size : used by "resnet50" only.
    """
    if kind not in NOISE_FEATURES:
        raise ValueError(f"unknown noise features {kind!r}; expected one of "
                         f"{', '.join(NOISE_FEATURES)}")
    if kind == "resnet50":
        return resnet50_features(images, size=size, weights=weights, batch_size=batch_size)
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    if kind == "pixels":
        return pixels
    if not 1 <= dims <= min(pixels.shape):
        raise DataError(f"--noise_feature_dims must be in [1, {min(pixels.shape)}] for this "
                        f"data, got {dims}")
    return sklearn.decomposition.PCA(n_components=dims, random_state=seed).fit_transform(pixels)


def resnet50_features(images: np.ndarray, size: int = RESNET50_INPUT_SIZE,
                      weights: str = "imagenet", batch_size: int = 64,
                      verbose: int = 1) -> np.ndarray:
    """ResNet-50 pool-5 (global average pool of the last block) features, float32 [N, 2048].

    Parameters
    ----------
    images : uint8 [N, H, W, C] with C = 1 (repeated to RGB) or 3.
    size : images are resized (bilinear) to size x size first; >= 32.
    weights : "imagenet" (Keras downloads them once into ~/.keras/models), a path to the
        no-top weights file (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5) for a
        machine without network, or "none" (random weights: for tests only, the features
        then carry no meaning). See idn_tf.models.resnet50.backbone.

    Raises
    ------
    DataError
        Bad size or channel count, a missing weights file, or "imagenet" weights that
        cannot be downloaded.
    """
    import tensorflow as tf

    from idn_tf.models.resnet50 import MIN_SIZE, CaffePreprocessing

    if size < MIN_SIZE:
        raise DataError(f"--noise_feature_size must be >= {MIN_SIZE} for ResNet-50, got {size}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"ResNet-50 features need images [N, H, W, 1 or 3], got {images.shape}")

    net = _resnet50(size, weights)
    # The ImageNet weights expect caffe-style input: BGR, ImageNet mean subtracted, 0..255.
    caffe = CaffePreprocessing()

    def embed(batch):
        x = tf.image.resize(tf.cast(batch, tf.float32), (size, size))
        if x.shape[-1] == 1:
            x = tf.repeat(x, 3, axis=-1)
        return net(caffe(x), training=False)

    embed = tf.function(embed, reduce_retracing=True)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).prefetch(2)
    out, done, every = [], 0, max(1, len(images) // 10)
    for batch in dataset:
        out.append(embed(batch).numpy())
        if verbose and (done // every != (done + len(batch)) // every or done == 0):
            print(f"ResNet-50 features: {done + len(batch)}/{len(images)} images", flush=True)
        done += len(batch)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2048), np.float32)


def _resnet50(size: int, weights: str):
    """The classifiers' ResNet-50 backbone (idn_tf.models.resnet50), errors as DataError."""
    from idn_tf.models.resnet50 import BackboneError, backbone

    try:
        return backbone((size, size, 3), weights)
    except BackboneError as e:
        raise DataError(f"--noise_feature_weights: {e}") from e
