"""The records every data source returns.

In-memory sources (sources.py, tfds_sources.py) return a `Dataset` of a training and a
test `Split`; file sources (clothing1m.py, folder.py) return a `FileDataset` of
`FileSplit`s, image paths streamed from disk during training.

Apart from the sources so that each can import them without importing another source.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np

UNKNOWN_LABEL = -1  # clean_labels value where the true label is not known


class DataError(ValueError):
    """Bad user data; message is one line naming the problem."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value
class Split:
    """One split of a dataset.

    Attributes
    ----------
    images : np.ndarray
        uint8 [N, H, W, C] raw pixels.
    labels : np.ndarray
        int64 [N] observed labels. For a training split as loaded: what the source
        provides (clean for digits, the user's observed labels for npz).
    clean_labels : np.ndarray
        int64 [N] true labels, or -1 where unknown.
    """

    images: np.ndarray
    labels: np.ndarray
    clean_labels: np.ndarray

    def __post_init__(self):
        # Catch shape mix-ups where the split is built, not epochs later in training.
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} "
                             f"{self.images.shape}")
        for name in ("labels", "clean_labels"):
            array = getattr(self, name)
            if array.dtype != np.int64 or array.shape != (n,):
                raise ValueError(f"{name} must be int64 [{n}], got {array.dtype} {array.shape}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: training and test splits plus class metadata.

    Test labels are clean (``test.labels == test.clean_labels``).
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value
class FileSplit:
    """One split as files: row i is image `paths[i]`.

    Attributes
    ----------
    paths : np.ndarray
        str [N] absolute image paths (numpy unicode, ~4 bytes per character).
    labels : np.ndarray
        int64 [N] observed labels: noisy labels for the noisy split, clean ones otherwise.
    clean_labels : np.ndarray
        int64 [N] human-checked labels, -1 where unknown.
    index : np.ndarray
        int64 [N] row of the example in the η and ψ tables: 0..N-1 in list order.
    """

    paths: np.ndarray
    labels: np.ndarray
    clean_labels: np.ndarray
    index: np.ndarray

    def __post_init__(self):
        n = len(self.paths)
        if self.paths.dtype.kind != "U" or self.paths.shape != (n,):
            raise ValueError(f"paths must be a str array [N], got {self.paths.dtype} "
                             f"{self.paths.shape}")
        for name in ("labels", "clean_labels", "index"):
            array = getattr(self, name)
            if array.dtype != np.int64 or array.shape != (n,):
                raise ValueError(f"{name} must be int64 [{n}], got {array.dtype} {array.shape}")

    def __len__(self) -> int:
        return len(self.paths)


class ExcludedImage(NamedTuple):
    """A listed image left out by `skip_bad_images` (one per listing line)."""
    path: str       # absolute image path
    listed_at: str  # "<key list file>, line <n>"
    reason: str     # e.g. "image file not found", "damaged image file (PIL: ...)"


@dataclasses.dataclass(frozen=True, eq=False)
class FileDataset:
    """A file source: the noisy training split and the clean splits, as image files.

    `clean_train` and `clean_val` may be empty (a class folder has neither; Clothing1M has
    both). `excluded`: the images `skip_bad_images` left out. `own_test_labels`: the test
    labels are the user's own, not a benchmark's checked ones (a class folder), so the
    label audit checks them too (`views.FileData.audited_splits`).
    """
    noisy: FileSplit
    clean_train: FileSplit
    clean_val: FileSplit
    clean_test: FileSplit
    class_names: tuple[str, ...]
    excluded: tuple[ExcludedImage, ...] = ()
    name: str = "files"
    own_test_labels: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def empty_file_split() -> FileSplit:
    """A split with no files."""
    return FileSplit(np.array([], "U1"), *[np.zeros(0, np.int64)] * 3)


def class_names_problem(names) -> str:
    """Why `names` (class k's name at position k) cannot name a served model's classes,
    or "" if they can: each must be a non-blank string on one line (a line of the
    SavedModel's names file, export.py), none repeated."""
    seen = {}
    for k, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            return f"class {k} has no name (got {name!r})"
        if name.splitlines() != [name]:
            return f"class {k}'s name {name!r} holds a line break"
        if name in seen:
            return f"{name!r} is already class {seen[name]}"
        seen[name] = k
    return ""


def read_class_names(path: str) -> tuple[str, ...]:
    """The class names of a --class_names file: one name per line, class k on line k + 1.

    Surrounding whitespace is stripped and blank lines at the end are ignored; a blank
    line in between, a repeated name or fewer than 2 names is a DataError.
    """
    if not os.path.isfile(path):
        raise DataError(f"class names file not found: {path}")
    try:
        with open(path, encoding="utf-8") as file:
            lines = [line.strip() for line in file.read().splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the class names ({error})") from None
    while lines and not lines[-1]:
        lines.pop()
    seen = {}
    for number, name in enumerate(lines, 1):
        if not name:
            raise DataError(f"{path}, line {number}: blank; one class name per line, class k "
                            "on line k + 1")
        if name in seen:
            raise DataError(f"{path}, line {number}: {name!r} is already class {seen[name]} "
                            f"(line {seen[name] + 1})")
        seen[name] = number - 1
    if len(lines) < 2:
        raise DataError(f"{path}: {len(lines)} class name(s); need at least 2")
    return tuple(lines)
