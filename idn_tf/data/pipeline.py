"""tf.data pipelines producing the project's record (docs/api.md, "Glossary"):

    {"image": uint8 [H, W, C], "label": observed label, "clean_label": true label or -1,
     "index": int64 row of the example in the η and ψ tables}

Training augmentation (`augmenter`) runs here, in tf.data, not in the model: the
classifier (and the exported model) sees un-augmented images at inference, and ψ
is computed on un-augmented training images (docs/method.md §2).
"""

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


def augmenter(kind, image_shape, padding=4):
    """A function (uint8 image [H, W, C], int64 seed [2]) -> uint8 image, or None for "none".

    "pad_crop_flip" (the paper's CIFAR augmentation, docs/method.md §3): zero-pad by `padding`
    pixels on every side, crop a random H x W window, flip left-right with probability
    1/2. The draws are stateless functions of `seed`, so the same seeds give the same
    images in any order and on any number of parallel calls. (keras.layers.RandomCrop /
    RandomFlip were tried first: RandomCrop crops a whole batch at one offset, and their
    seed-generator state, advanced from parallel map calls, made runs unrepeatable.)
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")
    if kind == "none":
        return None
    paddings = [[padding, padding], [padding, padding], [0, 0]]

    def augment(image, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = tf.image.stateless_random_crop(tf.pad(image, paddings), tf.shape(image),
                                               seed=crop_seed)
        return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)

    return augment


def train_dataset(images, labels, clean_labels, batch_size, seed, augment="none", padding=4,
                  epochs=1, initial_epoch=0, order=None):
    """Batches of training records for epochs initial_epoch … epochs − 1, one after another.

    Each epoch visits every example once, in an order and with augmentation draws that
    are functions of (seed, epoch) alone: a run resumed at epoch e sees exactly the
    batches an uninterrupted run sees there, and stage 1 and stage 2 (same seed) see
    the same batches. Batches never straddle two epochs; an epoch's last batch may be
    smaller, so every example's η is visited in an epoch where η is updated (docs/method.md §3,
    decisions). Pass `steps_per_epoch = ceil(N / batch_size)` to `fit`.

    Example i's draws in epoch e are seeded by fold_in((seed, e), i): stateless, so
    the same in any order and on any number of parallel calls.

    `order`: a numpy function (0-based epoch) -> the epoch's rows, int64 [M], in place of
    the shuffle (e.g. `covering.cover_order`); it must be a function of the epoch alone.
    """
    n = len(images)
    table = {k: tf.constant(v) for k, v in records(images, labels, clean_labels).items()}
    transform = augmenter(augment, images.shape[1:], padding)

    def epoch_batches(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        if order is None:
            rows_of_epoch = tf.argsort(tf.random.stateless_uniform([n], seed=epoch_seed))
        else:
            rows_of_epoch = tf.numpy_function(lambda e: np.asarray(order(int(e)), np.int64),
                                              [epoch], tf.int64, stateful=False)
            rows_of_epoch.set_shape([None])

        def rows(i):
            return {k: tf.gather(v, i) for k, v in table.items()}

        if transform is None:  # one gather per batch (per example costs ~7x the time)
            return (tf.data.Dataset.from_tensor_slices(rows_of_epoch).batch(batch_size)
                    .map(rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

        def example(i):
            record = rows(i)
            draw = tf.random.experimental.stateless_fold_in(epoch_seed, record["index"])
            return {**record, "image": transform(record["image"], draw)}

        return (tf.data.Dataset.from_tensor_slices(rows_of_epoch)
                .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size))

    data = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    # Across several workers each global batch is split between them, element by element
    # (DATA); AUTO ends there too for this in-memory source, after looking for files.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, labels, batch_size):
    """Batches of records in index order, for evaluation and prediction."""
    return (tf.data.Dataset.from_tensor_slices(records(images, labels))
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))
