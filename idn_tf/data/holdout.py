"""The noisy validation split (docs/validation.md).

A share of the noisy training split is held out from training, stratified by the
*observed* label: a user with real noisy labels has nothing else to validate on, and
the clean test set must decide nothing. The rows are drawn once per (data, noise,
seed), when the noisy labels are made, and saved beside them (noisy_labels.npz), so
every method of a comparison and every restart holds out the same examples.
"""

import numpy as np

from idn_tf.data.dataset import DataError

MAX_FRACTION = 0.5
# The split's random stream: numpy's generator seeded with (--seed, this), so that it is
# not the stream any noise generator draws from with --seed alone.
SPLIT_STREAM = 0x5EED_5A11


def validation_rows(labels, fraction, seed):
    """Rows of the noisy training split held out for validation: sorted int64 [M].

    Of the n_c examples whose observed label is c, round(fraction · n_c) (halves up)
    are drawn without replacement, for every class c that the labels use (a class no
    example is labelled with has nothing to hold out). fraction 0: no rows.
    DataError (naming --val_fraction) when the split would leave a class without
    validation examples or without training examples.
    """
    if not 0.0 <= fraction <= MAX_FRACTION:
        raise DataError(f"--val_fraction: must be in [0, {MAX_FRACTION}], got {fraction}")
    labels = np.asarray(labels, np.int64)
    if fraction == 0.0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    rows = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        m = validation_count(len(members), fraction)
        if m == 0 or m == len(members):
            side = "validation" if m == 0 else "training"
            raise DataError(
                f"--val_fraction: {fraction:g} of the {len(members)} example(s) labelled "
                f"{c} leaves that class without {side} examples (a class needs at least "
                f"{min_class_size(fraction)}); use a {'larger' if m == 0 else 'smaller'} "
                "--val_fraction, or 0 for no validation split")
        rows.append(rng.choice(members, size=m, replace=False))
    return np.sort(np.concatenate(rows)).astype(np.int64)


def validation_count(n, fraction):
    """How many of a class's `n` examples `validation_rows` holds out: round(fraction · n),
    halves up."""
    return int(np.floor(fraction * n + 0.5))


def min_class_size(fraction):
    """The fewest examples of a class that `validation_rows` splits, leaving one or more
    on each side (1 for fraction 0: nothing is held out)."""
    if fraction == 0.0:
        return 1
    n = max(1, int(0.5 / fraction) - 1)  # below the first n with fraction · n >= 0.5
    while not 0 < validation_count(n, fraction) < n:
        n += 1
    return n


def training_rows(n, validation):
    """The rows of a split of `n` examples not in `validation`, in order: int64 [n − M]."""
    keep = np.ones(n, bool)
    keep[np.asarray(validation, np.int64)] = False
    return np.flatnonzero(keep).astype(np.int64)


# The K-fold split's stream (--psi_source=crossval), again its own.
FOLD_STREAM = 0xF01D_5EED


def fold_rows(labels, folds, seed):
    """K disjoint folds of the training rows, stratified by the observed label: a list of
    `folds` sorted int64 arrays that together hold every row of `labels` once.

    The examples labelled c are shuffled (numpy's generator seeded with (`seed`,
    `FOLD_STREAM`)) and dealt to the folds in turn, starting each class at the fold
    after the one the previous class ended on, so the folds' sizes differ by at most
    one. DataError when a fold would be empty (fewer rows than folds).
    """
    labels = np.asarray(labels, np.int64)
    if folds < 2 or len(labels) < folds:
        raise DataError(f"--psi_folds: {folds} folds of {len(labels)} training examples; "
                        "give 2 or more, and at most one per example")
    rng = np.random.default_rng([seed, FOLD_STREAM])
    assigned = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        assigned[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return [np.flatnonzero(assigned == k).astype(np.int64) for k in range(folds)]
