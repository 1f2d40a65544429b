"""tf.data pipelines producing the project's record (DESIGN.md, "data"):

    {"image": uint8 [H, W, C], "label": observed label, "clean_label": true label or -1,
     "index": int64 row of the example in the η and ψ tables}
"""

import numpy as np
import tensorflow as tf


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


def train_dataset(images, labels, clean_labels, batch_size, seed):
    """Shuffled batches of training records, each example once per epoch.

    The last batch may be smaller, so every example's η is visited in an
    epoch where η is updated (SPEC §3 decision). `seed` fixes the order.
    """
    data = records(images, labels, clean_labels)
    return (tf.data.Dataset.from_tensor_slices(data)
            .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def eval_dataset(images, labels, batch_size):
    """Batches of records in index order, for evaluation and prediction."""
    return (tf.data.Dataset.from_tensor_slices(records(images, labels))
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))
