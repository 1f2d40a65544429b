"""Data sources: every source returns a `Dataset` of in-memory numpy arrays.

A `Dataset` holds a training and a test `Split`. Row i of the training split is example i
everywhere else (the `index` of the η and ψ tables), so every source returns its rows in
an order that does not depend on any run seed.

Sources here:
- ``digits``: scikit-learn's bundled 8x8 digits (offline; the embedded default).
- ``npz``: the user's own arrays in one ``.npz`` archive.
- ``cifar10``, ``cifar100``, ``cifar10_n``, ``cifar100_n``: tensorflow-datasets
  (tfds_sources.py, imported only when one of them is loaded).

The records themselves (`Split`, `Dataset`, `DataError`) live in dataset.py, which
every source imports.

``clothing1m`` and ``folder`` (`FILE_SOURCES`) are not loaded here: they are lists of
image files (clothing1m.py, folder.py), streamed from disk during training (streaming.py,
views.py).
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np
import sklearn.datasets
import sklearn.model_selection

# The records every source returns (re-exported: `sources.Dataset`, `sources.DataError` …).
from idn_tf.data.dataset import (UNKNOWN_LABEL, DataError, Dataset, Split,  # noqa: F401
                                 read_class_names)

TFDS_SOURCES = ("cifar10", "cifar100", "cifar10_n", "cifar100_n")
# Too big for memory: read as file lists (clothing1m.py) and streamed (streaming.py).
FILE_SOURCES = ("clothing1m", "folder")
# The sources with their own clean validation list: nothing is held out of their noisy
# training split (--val_fraction does not apply).
OWN_VALIDATION_SOURCES = ("clothing1m",)
# The sources whose classes a --class_names file may name.
NAMED_CLASS_SOURCES = ("npz", "folder")
SOURCES = ("digits", "npz") + TFDS_SOURCES + FILE_SOURCES
# The sources whose clean training labels may be unknown (-1): an npz's clean_train is
# optional, Clothing1M's noisy examples have none. Every other source gives them all.
UNKNOWN_CLEAN_SOURCES = ("npz",) + FILE_SOURCES

# Fixed, seed-independent split of the digits data, so that indices are stable across runs.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

# K is inferred as the largest label + 1; a label beyond this is taken to be corrupt data
# rather than a request for millions of (mostly empty) classes.
MAX_CLASSES = 100_000

_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
_NPZ_OPTIONAL = ("clean_train",)


def load(name: str, npz_path: str | None = None, data_dir: str | None = None,
         noisy_label_key: str | None = None, download: bool = True,
         class_names: str | None = None) -> Dataset:
    """Loads the source called `name` (one of `SOURCES`).

    "npz" needs `npz_path`, and may take `class_names` (a --class_names file). The
    tensorflow-datasets sources (`TFDS_SOURCES`) take `data_dir` (None = tfds's default),
    `noisy_label_key` (CIFAR-N only; None = its default) and `download` (whether to download
    data that is not in data_dir); see tfds_sources.load_tfds.
    """
    if name in TFDS_SOURCES:
        # Imported here: loading through it brings in tensorflow_datasets and TensorFlow,
        # which digits and npz do without.
        from idn_tf.data import tfds_sources  # pylint: disable=import-outside-toplevel
        return tfds_sources.load_tfds(name, data_dir=data_dir,
                                      noisy_label_key=noisy_label_key, download=download)
    if name in FILE_SOURCES:
        raise DataError(f"dataset {name!r} does not fit in memory; read it with "
                        "idn_tf.data.clothing1m.load_clothing1m or idn_tf.data.folder."
                        "load_folder (file lists)")
    if class_names is not None and name != "npz":
        raise DataError(f"dataset {name!r} names its own classes; class_names applies to "
                        f"{', '.join(NAMED_CLASS_SOURCES)}")
    if noisy_label_key is not None:
        raise DataError(f"dataset {name!r} has no human noisy labels (noisy_label_key="
                        f"{noisy_label_key!r}); they come with cifar10_n and cifar100_n")
    if name == "digits":
        return load_digits()
    if name == "npz":
        if npz_path is None:
            raise DataError("dataset 'npz' needs the path of an .npz file")
        return load_npz(npz_path, class_names)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(SOURCES)}")


# ---------------------------------------------------------------------------------------
# digits


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Rows of sklearn's digits that form the training and the test split.

    A stratified 80/20 split with a fixed random_state, independent of any run seed.

    Returns
    -------
    (train_rows, test_rows) : int64 arrays [1437] and [360], each sorted ascending.
    """
    target = sklearn.datasets.load_digits().target
    train_rows, test_rows = sklearn.model_selection.train_test_split(
        np.arange(len(target)), test_size=DIGITS_TEST_FRACTION, stratify=target,
        random_state=DIGITS_SPLIT_SEED)
    # Sorted so that training row i is the i-th training digit in sklearn's own order.
    return np.sort(train_rows).astype(np.int64), np.sort(test_rows).astype(np.int64)


def load_digits() -> Dataset:
    """scikit-learn's bundled digits (1797 images, 8x8x1, 10 classes), fully offline.

    Pixel values 0..16 become uint8 ``np.round(value * 255 / 16)``. The training split's
    labels are clean (``train.labels == train.clean_labels``); noise is added later.
    """
    bunch = sklearn.datasets.load_digits()
    images = np.round(bunch.images * 255 / 16).astype(np.uint8)[..., np.newaxis]
    labels = bunch.target.astype(np.int64)
    train_rows, test_rows = digits_split_indices()

    def split(rows):
        return Split(images=images[rows], labels=labels[rows], clean_labels=labels[rows])

    return Dataset(name="digits", train=split(train_rows), test=split(test_rows),
                   num_classes=10, class_names=tuple(str(c) for c in bunch.target_names))


# ---------------------------------------------------------------------------------------
# npz


def load_npz(path: str, class_names: str | None = None) -> Dataset:
    """The user's arrays from one ``.npz`` archive.

    Required arrays: ``x_train`` and ``x_test`` (uint8 [N, H, W, C], or [N, H, W], which gets
    a channel axis), ``y_train`` (observed training labels) and ``y_test`` (clean test
    labels), integer [N] or [N, 1]. Optional: ``clean_train`` (true training labels, -1
    where unknown).

    `class_names`: a file of class names, one per line (`read_class_names`): K is their
    number and every label must lie in [0, K). Without it K is the largest label + 1 and
    the names are "0" … "K-1"; labels that leave most of 0..K-1 unused (a stray 99 among
    0-9) are then taken for a mistake (`check_label_range`).

    Raises
    ------
    DataError
        With a one-line message naming the problem.
    """
    arrays = _read_npz(path)
    x_train = _images(arrays["x_train"], "x_train", path)
    x_test = _images(arrays["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{path}: x_train images are {x_train.shape[1:]} but x_test images "
                        f"are {x_test.shape[1:]}")
    y_train = _labels(arrays["y_train"], "y_train", len(x_train), "x_train", path)
    y_test = _labels(arrays["y_test"], "y_test", len(x_test), "x_test", path)
    if "clean_train" in arrays:
        clean_train = _labels(arrays["clean_train"], "clean_train", len(x_train), "x_train",
                              path, allow_unknown=True)
    else:
        clean_train = np.full(len(x_train), UNKNOWN_LABEL, dtype=np.int64)

    arrays = {"y_train": y_train, "y_test": y_test, "clean_train": clean_train}
    if class_names is not None:
        names = read_class_names(class_names)
        for key, labels in arrays.items():
            if labels.max() >= len(names):
                raise DataError(f"{path}: {key} has label {labels.max()}, outside [0, "
                                f"{len(names)}) of the {len(names)} classes in {class_names}")
    else:
        num_classes = int(max(labels.max() for labels in arrays.values())) + 1
        if num_classes < 2:
            raise DataError(f"{path}: labels name only {num_classes} class; need at least 2")
        check_label_range(np.concatenate(list(arrays.values())), path)
        names = tuple(str(c) for c in range(num_classes))
    return Dataset(
        name="npz",
        train=Split(images=x_train, labels=y_train, clean_labels=clean_train),
        test=Split(images=x_test, labels=y_test, clean_labels=y_test),
        num_classes=len(names), class_names=names)


def check_label_range(labels: np.ndarray, path: str) -> None:
    """DataError when the labels (>= 0 counted; -1 = unknown) use fewer than half of the
    classes 0..max their largest label implies: a stray label such as 99 among 0-9 would
    otherwise make a model of mostly empty classes. The message names the labels beyond
    the number of classes used (the likely strays) and suggests --class_names."""
    used = np.unique(labels[labels >= 0])
    implied = int(used.max()) + 1
    if 2 * len(used) >= implied:
        return
    stray = used[used >= len(used)]
    shown = ", ".join(str(v) for v in stray[:5]) + (", …" if len(stray) > 5 else "")
    raise DataError(f"{path}: the labels use only {len(used)} of the {implied} classes "
                    f"0..{implied - 1} their largest label implies (odd labels: {shown}); "
                    "fix the labels, or pass --class_names=FILE (one class name per line) to "
                    "set the classes")


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Reads the known arrays of an npz archive, turning every failure into a DataError."""
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder, not an .npz file")
    if not os.path.isfile(path):
        raise DataError(f"npz file not found: {path}")
    # np.load would call a text file "pickled data"; check for the zip container instead.
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in _NPZ_REQUIRED + _NPZ_OPTIONAL
                      if key in archive.files}
    # A damaged archive fails in many ways: a bad .npy header or object arrays (ValueError),
    # a truncated member (EOFError), bad CRC (BadZipFile), corrupt deflate data (zlib.error),
    # an encrypted member (RuntimeError) or an unsupported compression (NotImplementedError).
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
            NotImplementedError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: cannot read the npz archive: {reason}") from error
    missing = [key for key in _NPZ_REQUIRED if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; an npz needs "
                        f"{', '.join(_NPZ_REQUIRED)} (optional: clean_train)")
    return arrays


def _images(array: np.ndarray, key: str, path: str) -> np.ndarray:
    """Checks an image array; returns uint8 [N, H, W, C]."""
    if array.dtype != np.uint8:
        nan = np.issubdtype(array.dtype, np.inexact) and np.isnan(array).any()
        raise DataError(f"{path}: {key} must be uint8 images (0..255), got dtype {array.dtype}"
                        + (" holding NaN" if nan else ""))
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or min(array.shape) == 0:
        raise DataError(f"{path}: {key} must have shape [N, H, W] or [N, H, W, C] with no "
                        f"empty axis, got shape {array.shape}")
    return array


def _labels(array: np.ndarray, key: str, n: int, images_key: str, path: str,
            allow_unknown: bool = False) -> np.ndarray:
    """Checks a label array against its images; returns int64 [n].

    Labels must be integers >= 0 (or -1 = unknown, where `allow_unknown`).
    """
    if array.ndim == 2 and array.shape[1] == 1:  # keras.datasets style [N, 1]
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f"{path}: {key} must have shape [N] or [N, 1], got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: {key} must be integer class ids, got dtype {array.dtype}")
    if len(array) != n:
        raise DataError(f"{path}: {key} has {len(array)} labels but {images_key} has {n} "
                        f"images")
    lowest = UNKNOWN_LABEL if allow_unknown else 0
    if array.min() < lowest:
        raise DataError(f"{path}: {key} has label {array.min()} outside [0, K)"
                        + (" (-1 = unknown is allowed)" if allow_unknown else ""))
    if array.max() >= MAX_CLASSES:
        raise DataError(f"{path}: {key} has label {array.max()} >= {MAX_CLASSES}; labels must "
                        f"be class ids 0..K-1")
    return array.astype(np.int64)
