"""tf.data pipelines producing the project's record (DESIGN.md, "data"):

    {"image": uint8 [H, W, C], "label": observed label, "clean_label": true label or -1,
     "index": int64 row of the example in the η and ψ tables}

Training augmentation (`augmenter`) runs here, in tf.data, not in the model: the
classifier (and the exported model) sees un-augmented images at inference, and ψ
is computed on un-augmented training images (SPEC §2).
"""

import keras
import numpy as np
import tensorflow as tf

AUGMENTATIONS = ("none", "pad_crop_flip")


def records(images, labels, clean_labels=None):
    """Numpy arrays -> dict of arrays in the record layout (index = row number)."""
    n = len(images)
    if clean_labels is None:
        clean_labels = np.full(n, -1, dtype=np.int64)
    return {
        "image": images,
        "label": np.asarray(labels, dtype=np.int64),
        "clean_label": np.asarray(clean_labels, dtype=np.int64),
        "index": np.arange(n, dtype=np.int64),
    }


def augmenter(kind, image_shape, padding=4, seed=None):
    """A function uint8 image [H, W, C] -> uint8 image [H, W, C] for training, or None.

    "pad_crop_flip" (the paper's CIFAR augmentation, SPEC §3): zero-pad by `padding`
    pixels on every side, crop a random H x W window, flip left-right with probability
    1/2 — Keras core layers. It is applied to one image at a time because
    keras.layers.RandomCrop crops a whole batch at the same offset. Cropping and
    flipping only move pixels, so the cast back to uint8 is exact.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")
    if kind == "none":
        return None
    height, width = image_shape[:2]
    layers = keras.Sequential([
        keras.layers.ZeroPadding2D(padding),
        keras.layers.RandomCrop(height, width, seed=seed),
        keras.layers.RandomFlip("horizontal", seed=None if seed is None else seed + 1),
    ], name="augment")

    def augment(image):
        return tf.cast(layers(image[tf.newaxis], training=True)[0], tf.uint8)

    return augment


def train_dataset(images, labels, clean_labels, batch_size, seed, augment="none", padding=4):
    """Shuffled (and augmented) batches of training records, each example once per epoch.

    The last batch may be smaller, so every example's η is visited in an
    epoch where η is updated (SPEC §3 decision). `seed` fixes the order.
    """
    data = tf.data.Dataset.from_tensor_slices(records(images, labels, clean_labels))
    data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    transform = augmenter(augment, images.shape[1:], padding, seed)
    if transform is not None:
        data = data.map(lambda r: {**r, "image": transform(r["image"])},
                        num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, labels, batch_size):
    """Batches of records in index order, for evaluation and prediction."""
    return (tf.data.Dataset.from_tensor_slices(records(images, labels))
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))
