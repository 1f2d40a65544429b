"""The records every data source returns: a `Dataset` of a training and a test `Split`.

Apart from the sources (sources.py, tfds_sources.py, clothing1m.py) so that each can
import them without importing another source.
"""

from __future__ import annotations

import dataclasses

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
