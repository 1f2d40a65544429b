"""tf.data pipelines that stream image files from disk, for datasets too big for memory.

Built for Clothing1M (docs/method.md §3-§4: resize 256, random 224 crop, flip, mean subtraction,
batch 32; oversampling; row #8's half-clean batches). The records are the project's
(docs/api.md, "Glossary"), with uint8 pixels:

    {"image": uint8 [B, 224, 224, 3], "label": int64 [B], "clean_label": int64 [B] (-1 if
     unknown), "index": int64 [B] (the example's row in the η and ψ tables)}

and, from `mixed_train_dataset`, also "is_clean": bool [B].

The recipe's "mean subtraction" is not done here: the pretrained ResNet-50 subtracts the
ImageNet channel means inside the model (`models.resnet50.CaffePreprocessing`), so the
pipeline hands over raw uint8 pixels, and the exported model takes raw pixels too.

Decisions:
- **Resize** to 256 x 256, ignoring the aspect ratio (`resize_mode="square"`), as
  torchvision's `Resize((256, 256))` in L_DMI's Clothing1M code (one of the paper's
  baselines) and Caffe's 256 x 256 image layers in Clothing1M's original lineage;
  `"shorter_side"` scales the shorter side to 256 instead, keeping the aspect ratio as
  torchvision's `Resize(256)` does (DivideMix's Clothing1M code). Smaller images are
  scaled up. The crop is then a random 224 x 224 window of the resized image.
- **Interpolation**: bilinear with half-pixel centres (`tf.image.resize`). With
  `antialias=False` (default) it does not low-pass when shrinking, like OpenCV's
  INTER_LINEAR behind Caffe's layers and Keras's `Resizing` default. `antialias=True`
  matches PIL's (and torchvision's) bilinear resize to within 1 grey level, but costs
  ~4x the resize time on CPU (2.2x the CPU time per image overall), so the pipeline runs
  at ~1.3x a plain PIL loop on 2 cores instead of ~1.9x
  (benchmarks/clothing1m_pipeline.py). Images of ~300 x 400 shrink by only 1.2-1.6x.
- **Decoding**: `tf.io.decode_image(channels=3)` reads JPEG, PNG, GIF (first frame) and
  BMP; grayscale and palette images become RGB. CMYK JPEGs are converted to RGB by
  TensorFlow's JPEG decoder itself (Adobe-inverted or plain CMYK; YCCK too, which
  libjpeg turns into CMYK first): the tests check a CMYK JPEG written by PIL against
  PIL's own conversion. YCCK is untested (PIL cannot write it).
- **Randomness**: each epoch's order is a stateless permutation keyed by (seed, epoch)
  and each example's crop and flip by (seed, epoch, slot), where slot is the example's
  position in the (oversampled) row list, so copies of one example are augmented
  differently. A run resumed at epoch e sees exactly the batches of an uninterrupted run,
  whatever the parallelism (`deterministic=True` maps). Nothing is cached: every epoch
  re-reads the files.
"""

import os

import numpy as np
import tensorflow as tf

from idn_tf.data.dataset import UNKNOWN_LABEL

RESIZE_MODES = ("square", "shorter_side")
# Independent random streams: the noisy epoch order and draws, the clean set's passes,
# the clean examples' draws (mixed_train_dataset).
_NOISY, _CLEAN_ORDER, _CLEAN_DRAW = 0, 1, 2


# ---------------------------------------------------------------------------------------
# Oversampling (pure numpy)


def _mix64(values, seed):
    """splitmix64 of (seed, values): uint64 hashes, the same on every platform and version."""
    with np.errstate(over="ignore"):
        z = np.asarray(values, np.uint64)
        z = z + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def oversample_indices(labels, mode=None, seed=0):
    """Row numbers of one epoch, with added copies of minority-class rows (docs/method.md §4).

    Parameters
    ----------
    labels : array-like of int, [N]
        Observed labels of the training rows.
    mode : None, "auto" or sequence of float
        None: every row once (arange(N)). "auto": every class brought up to the count of
        the largest class. A sequence m (one multiplier per class, m[c] >= 1): class c
        with n_c rows gets round(m[c] * n_c) rows. "auto" equals m[c] = max_c' n_c' / n_c.
    seed : int
        Chooses which rows get the odd copies.

    Returns
    -------
    np.ndarray of int64, sorted, with repeats: every row at least once. A class with n_c
    rows and t_c target rows repeats each row (t_c - n_c) // n_c extra times, plus one
    more copy for the (t_c - n_c) % n_c rows of smallest hash(seed, row) — chosen
    without a random generator, so the list never changes with NumPy's version. Copies
    keep their row's `index` downstream (one η per example).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError("labels must be a 1-D array of non-negative integers")
    rows = np.arange(len(labels), dtype=np.int64)
    if mode is None or len(labels) == 0:
        return rows
    counts = np.bincount(labels)
    if isinstance(mode, str):
        if mode != "auto":
            raise ValueError(
                f"oversample must be None, 'auto' or per-class multipliers; got {mode!r}")
        targets = np.where(counts > 0, counts.max(), 0)
    else:
        multipliers = np.asarray(mode, np.float64)
        if multipliers.ndim != 1 or len(multipliers) < len(counts):
            raise ValueError(f"oversample needs one multiplier per class (at least {len(counts)}), "
                             f"got {multipliers.shape}")
        if not (np.isfinite(multipliers).all() and (multipliers >= 1).all()):
            raise ValueError(
                "oversample multipliers must be finite and >= 1 (copies are only added)")
        targets = np.floor(multipliers[:len(counts)] * counts + 0.5).astype(np.int64)
    extra = [rows]
    for c in np.flatnonzero(targets > counts):
        members = rows[labels == c]
        rounds, odd = divmod(int(targets[c] - counts[c]), len(members))
        ranked = members[np.argsort(_mix64(members, seed), kind="stable")]
        extra += [members] * rounds + [ranked[:odd]]
    return np.sort(np.concatenate(extra))


def steps_per_epoch(labels, batch_size, oversample=None, mixed=False):
    """Batches per epoch of `train_dataset` (or `mixed_train_dataset` if mixed): pass to fit."""
    rows = len(oversample_indices(labels, oversample))
    per_batch = batch_size // 2 if mixed else batch_size
    return -(-rows // per_batch)


# ---------------------------------------------------------------------------------------
# Per-image transforms (TensorFlow)


def decode(contents):
    """Encoded JPEG / PNG / GIF / BMP bytes -> uint8 RGB [H, W, 3] (gray, CMYK converted)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resized_shape(shape, size, mode):
    """[height, width] after resizing an image of `shape` [H, W, ...] (int32 tensor)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "square":
        return tf.constant([size, size], tf.int32)
    height, width = shape[0], shape[1]
    shorter = tf.minimum(height, width)
    # torchvision's Resize(size): the longer side becomes int(size * long / short).
    return tf.stack([tf.maximum(size * height // shorter, size),
                     tf.maximum(size * width // shorter, size)])


def resize_image(image, size, mode="square", antialias=False):
    """uint8 [H, W, 3] -> float32 resized image (bilinear, half-pixel centres), not rounded."""
    return tf.image.resize(image, resized_shape(tf.shape(image), size, mode),
                           method="bilinear", antialias=antialias)


def _to_uint8(image):
    return tf.saturate_cast(tf.round(image), tf.uint8)


def random_crop_flip(image, crop_size, seed):
    """Random crop_size² window of float `image`, flipped left-right with p = 1/2 -> uint8.

    Stateless: the window and the flip are functions of `seed` (int64 [2]) alone. The
    crop comes before the rounding so only the window is converted.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = tf.image.stateless_random_crop(image, [crop_size, crop_size, 3], seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(_to_uint8(window), seed=flip_seed)


def center_crop(image, crop_size):
    """Central crop_size² window of float `image` -> uint8 (offsets (H - crop) // 2)."""
    shape = tf.shape(image)
    top, left = (shape[0] - crop_size) // 2, (shape[1] - crop_size) // 2
    return _to_uint8(image[top:top + crop_size, left:left + crop_size])


# ---------------------------------------------------------------------------------------
# Datasets


def _table(paths, labels, clean_labels, index):
    """Columns of one example set as tensors; clean_labels / index default to -1 / arange."""
    paths = [os.fspath(p) for p in paths]
    n = len(paths)
    columns = {"label": labels,
               "clean_label": np.full(n, UNKNOWN_LABEL) if clean_labels is None else clean_labels,
               "index": np.arange(n) if index is None else index}
    columns = {k: np.asarray(v, np.int64) for k, v in columns.items()}
    for name, column in columns.items():
        if column.shape != (n,):
            raise ValueError(f"{name} must have one entry per path ({n}), got shape {column.shape}")
    if n == 0:
        raise ValueError("no image paths given")
    return {"path": tf.constant(paths, tf.string),
            **{k: tf.constant(v) for k, v in columns.items()}}


def check_sizes(image_size, resize_to, resize_mode):
    """ValueError unless `resize_mode` is known and 0 < image_size <= resize_to."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if not 0 < image_size <= resize_to:
        raise ValueError(f"image_size must be in [1, resize] = [1, {resize_to}], got {image_size}")


def _loader(table, transform, extra=None):
    """(row, seed) -> record of row `row` of `table`, its image read and transformed."""
    def load(row, seed):
        record = {k: tf.gather(v, row) for k, v in table.items() if k != "path"}
        image = transform(decode(tf.io.read_file(tf.gather(table["path"], row))), seed)
        return {"image": image, **record, **(extra or {})}
    return load


def _key(seed, stream, number):
    """Stateless RNG key (int64 [2]) of epoch or pass `number` of random `stream`."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(number, tf.int64)])
    return tf.random.experimental.stateless_fold_in(key, stream)


def _permutation(size, key):
    return tf.argsort(tf.random.stateless_uniform([size], seed=key))


def _augmenter(image_size, resize_to, resize_mode, antialias):
    def augment(image, seed):
        resized = resize_image(image, resize_to, resize_mode, antialias)
        return random_crop_flip(resized, image_size, seed)
    return augment


def _noisy_epoch(table, rows, seed, epoch, transform, extra=None):
    """Examples of one epoch: slots of `rows` in the (seed, epoch) order, each slot's
    draws keyed by (seed, epoch, slot) (slots differ where rows repeat)."""
    key = _key(seed, _NOISY, epoch)
    load = _loader(table, transform, extra)

    def example(slot):
        return load(tf.gather(rows, slot), tf.random.experimental.stateless_fold_in(key, slot))

    return (tf.data.Dataset.from_tensor_slices(_permutation(tf.size(rows), key))
            .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _finish(data):
    # Several workers split each global batch element by element (as pipeline.py).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options).prefetch(tf.data.AUTOTUNE)


def train_dataset(paths, labels, clean_labels, index, batch_size, seed, epochs=1,
                  initial_epoch=0, image_size=224, resize=256, resize_mode="square",
                  antialias=False, oversample=None):
    """Batches of augmented training records for epochs initial_epoch … epochs − 1.

    Parameters
    ----------
    paths : sequence of str or os.PathLike, [N]
        Image files (JPEG, PNG, GIF, BMP).
    labels, clean_labels, index : array-like of int, [N]
        Observed labels; true labels or None (-1); η/ψ rows or None (0 … N − 1).
    batch_size, seed : int
    epochs, initial_epoch : int
        Epochs initial_epoch … epochs − 1, one after another; batches never straddle two
        epochs and an epoch's last batch may be smaller (as pipeline.train_dataset).
    image_size, resize, resize_mode, antialias :
        Resize to `resize` (module docstring), then a random image_size² crop and a
        random horizontal flip.
    oversample : None, "auto" or sequence of float
        Per-class copies (`oversample_indices`); one epoch visits every row of
        oversample_indices(labels, oversample, seed) once. Pass
        `steps_per_epoch(labels, batch_size, oversample)` to `fit`.
    """
    check_sizes(image_size, resize, resize_mode)
    table = _table(paths, labels, clean_labels, index)
    rows = tf.constant(oversample_indices(labels, oversample, seed))
    transform = _augmenter(image_size, resize, resize_mode, antialias)
    data = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
        lambda epoch: _noisy_epoch(table, rows, seed, epoch, transform).batch(batch_size))
    return _finish(data)


def eval_dataset(paths, labels, batch_size, image_size=224, resize=256, resize_mode="square",
                 antialias=False, clean_labels=None, index=None):
    """Batches of records in file order: resize, central image_size² crop, no randomness.

    For test and validation sets, and for ψ on the un-augmented training images (docs/method.md §2).
    """
    check_sizes(image_size, resize, resize_mode)
    table = _table(paths, labels, clean_labels, index)

    def transform(image, _):
        return center_crop(resize_image(image, resize, resize_mode, antialias), image_size)

    load = _loader(table, transform)
    data = (tf.data.Dataset.range(table["label"].shape[0])
            .map(lambda row: load(row, None), num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .batch(batch_size))
    return _finish(data)


def _clean_epoch(table, seed, epoch, rows_per_epoch, transform):
    """The clean examples of one epoch of mixed_train_dataset: `rows_per_epoch` of them.

    The clean set is an endless stream of passes, each a (seed, pass) permutation of its
    C rows; epoch e takes stream positions e·R … (e + 1)·R − 1 (R = rows_per_epoch), so
    the clean rows are used evenly across epochs and any epoch can be rebuilt on its own.
    A position's draws are keyed by (seed, epoch, position).
    """
    size = tf.size(table["label"], tf.int64)
    start = tf.cast(epoch, tf.int64) * rows_per_epoch
    key = _key(seed, _CLEAN_DRAW, epoch)
    load = _loader(table, transform, {"is_clean": tf.constant(True)})
    passes = tf.data.Dataset.range(start // size, (start + rows_per_epoch - 1) // size + 1)
    rows = (passes.map(lambda p: _permutation(size, _key(seed, _CLEAN_ORDER, p)))
            .unbatch().skip(start % size).take(rows_per_epoch))
    positions = tf.data.Dataset.range(start, start + rows_per_epoch)
    return (tf.data.Dataset.zip(rows, positions)
            .map(lambda row, p: load(row, tf.random.experimental.stateless_fold_in(key, p)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _interleave(noisy, clean):
    """Two half batches -> one batch alternating noisy, clean, noisy, clean, …

    Alternating (not noisy half then clean half) keeps the 1:1 mix in every replica's
    share when a tf.distribute strategy splits the batch into contiguous, even pieces.
    """
    def pair(a, b):
        return tf.reshape(tf.stack([a, b], axis=1), tf.concat([[-1], tf.shape(a)[1:]], 0))
    return {k: pair(noisy[k], clean[k]) for k in noisy}


def mixed_train_dataset(paths, labels, clean_labels, index, clean_paths, clean_set_labels,
                        batch_size, seed, clean_index=None, epochs=1, initial_epoch=0,
                        image_size=224, resize=256, resize_mode="square", antialias=False,
                        oversample=None):
    """Batches of half noisy, half clean examples (the paper's row #8, docs/method.md §4).

    The noisy set defines the epoch, exactly as `train_dataset` (same order, draws and
    oversampling for the same seed), in half batches of batch_size / 2; each is paired
    with as many clean examples (the last batch too, so it holds 2 × its noisy count).
    The clean set is cycled and reshuffled as needed (`_clean_epoch`). Records carry
    "is_clean" (False / True), alternating noisy, clean, … within a batch.
    Steps per epoch: `steps_per_epoch(labels, batch_size, oversample, mixed=True)`.

    Clean examples' η rows (a proposal for IDNModel): clean example j gets its own row,
    `clean_index[j]`, by default N + j where N = max(noisy index) + 1, so the tables hold
    N + C rows. The model keeps those rows' η at 0 (their ψ is unused): initialise them
    to 0 and leave them unwritten where "is_clean" is True. With η = 0, q equals the
    observed (clean) label exactly (docs/method.md §2). A separate range, rather than index -1,
    keeps every gather in range and the η step unchanged apart from that mask.

    Parameters
    ----------
    paths, labels, clean_labels, index : the noisy set, as in `train_dataset`.
    clean_paths, clean_set_labels : sequence [C]
        The clean set's files and (true) labels; both "label" and "clean_label" of a
        clean record are its clean label.
    clean_index : array-like of int [C], optional
        Table rows of the clean examples (default N + arange(C), above).
    batch_size : int
        Even, >= 2.
    Other parameters as `train_dataset`.
    """
    if batch_size < 2 or batch_size % 2:
        raise ValueError(
            f"batch_size must be even and >= 2 for half-clean batches, got {batch_size}")
    check_sizes(image_size, resize, resize_mode)
    noisy = _table(paths, labels, clean_labels, index)
    if clean_index is None:
        first = int(tf.reduce_max(noisy["index"])) + 1
        clean_index = np.arange(first, first + len(clean_paths))
    clean = _table(clean_paths, clean_set_labels, clean_set_labels, clean_index)
    if np.intersect1d(noisy["index"].numpy(), clean["index"].numpy()).size:
        raise ValueError("clean_index must not share rows with the noisy set's index")
    rows = oversample_indices(labels, oversample, seed)
    transform = _augmenter(image_size, resize, resize_mode, antialias)
    half = batch_size // 2

    def epoch_batches(epoch):
        noisy_part = _noisy_epoch(noisy, tf.constant(rows), seed, epoch, transform,
                                  {"is_clean": tf.constant(False)})
        clean_part = _clean_epoch(clean, seed, epoch, len(rows), transform)
        return (tf.data.Dataset.zip(noisy_part.batch(half), clean_part.batch(half))
                .map(_interleave))

    data = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    return _finish(data)
