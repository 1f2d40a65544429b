"""The noisy validation split (`data.holdout`) and the views' `hold_out`: stratified by the
observed label, disjoint from the trained rows, the same for the same seed."""

import numpy as np
import pytest

from idn_tf.data import holdout, sources, views
from idn_tf.data.dataset import DataError, Dataset, Split

LABELS = np.repeat(np.arange(4), [10, 25, 7, 58])  # 100 examples, four class sizes


def test_each_class_holds_out_its_share_rounded_half_up():
    rows = holdout.validation_rows(LABELS, 0.1, seed=0)
    # 10 · 0.1 = 1, 25 · 0.1 = 2.5 -> 3, 7 · 0.1 = 0.7 -> 1, 58 · 0.1 = 5.8 -> 6
    assert np.bincount(LABELS[rows], minlength=4).tolist() == [1, 3, 1, 6]
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)  # sorted, no repeats


def test_the_training_rows_are_the_rest_in_order():
    rows = holdout.validation_rows(LABELS, 0.2, seed=3)
    train = holdout.training_rows(len(LABELS), rows)
    assert not set(rows) & set(train)
    np.testing.assert_array_equal(np.sort(np.concatenate([rows, train])), np.arange(100))
    assert np.all(np.diff(train) > 0)


def test_the_same_seed_draws_the_same_rows_and_another_seed_others():
    a, b = (holdout.validation_rows(LABELS, 0.1, seed=5) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, holdout.validation_rows(LABELS, 0.1, seed=6))


def test_the_draw_is_uniform_within_a_class():
    """Over many seeds every row of a class is held out about equally often."""
    counts = np.zeros(len(LABELS))
    for seed in range(400):
        counts[holdout.validation_rows(LABELS, 0.1, seed)] += 1
    for c, share in ((0, 1 / 10), (1, 3 / 25), (3, 6 / 58)):
        members = counts[LABELS == c] / 400
        assert abs(members.mean() - share) < 1e-12  # exact: the per-class count is fixed
        assert members.min() > share / 2 and members.max() < 2 * share


def test_no_fraction_holds_out_nothing():
    assert holdout.validation_rows(LABELS, 0.0, seed=0).shape == (0,)


def test_an_unused_class_is_not_an_error():
    labels = np.array([0] * 10 + [2] * 10)  # class 1 has no example
    assert np.bincount(labels[holdout.validation_rows(labels, 0.1, 0)]).tolist() == [1, 0, 1]


@pytest.mark.parametrize("labels, fraction, expect", [
    (np.array([0] * 20 + [1] * 4), 0.1, "labelled 1 leaves that class without validation"),
    (np.array([0] * 20 + [1]), 0.1, "labelled 1 leaves that class without validation"),
    (np.array([0] * 20 + [1]), 0.5, "labelled 1 leaves that class without training"),  # 1 of 1
])
def test_a_split_that_empties_a_side_of_a_class_is_refused(labels, fraction, expect):
    with pytest.raises(DataError, match=expect):
        holdout.validation_rows(labels, fraction, seed=0)


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0])
def test_a_fraction_outside_0_to_half_is_refused(fraction):
    with pytest.raises(DataError, match="--val_fraction: must be in"):
        holdout.validation_rows(LABELS, fraction, seed=0)


def test_the_view_without_the_held_out_rows():
    rng = np.random.default_rng(0)
    n = len(LABELS)
    images = rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    clean = np.asarray(LABELS, np.int64)
    observed = (clean + (rng.random(n) < 0.3)) % 4
    test = Split(images[:5], clean[:5], clean[:5])
    data = views.ArrayData(Dataset("toy", Split(images, clean, clean), test, 4, tuple("abcd")))
    rows = holdout.validation_rows(observed, 0.1, seed=1)
    view, labels = data.hold_out(rows, observed)
    train = holdout.training_rows(n, rows)
    np.testing.assert_array_equal(view.rows, train)
    np.testing.assert_array_equal(labels, observed[train])
    np.testing.assert_array_equal(view.train.images, images[train])
    np.testing.assert_array_equal(view.train.clean_labels, clean[train])
    assert view.table_size == n - len(rows) and view.validation_size == len(rows)
    # The validation records carry the held-out rows' observed labels, in row order.
    batches = list(view.validation_dataset(batch_size=4))
    np.testing.assert_array_equal(np.concatenate([b["label"].numpy() for b in batches]),
                                  observed[rows])
    np.testing.assert_array_equal(np.concatenate([b["image"].numpy() for b in batches]),
                                  images[rows])
    # The pixel statistics are the trained rows' only.
    np.testing.assert_allclose(view.pixel_statistics()[0], images[train].mean() / 255.0)
    # Nothing held out: the view itself, without validation.
    same, all_labels = data.hold_out(np.zeros(0, np.int64), observed)
    assert same is data and data.validation_dataset(4) is None and data.validation_size == 0
    np.testing.assert_array_equal(data.rows, np.arange(n))


def test_digits_default_split_is_stratified_by_the_observed_labels():
    digits = sources.load("digits")
    labels = digits.train.labels
    rows = holdout.validation_rows(labels, 0.1, seed=0)
    counts, held = np.bincount(labels), np.bincount(labels[rows], minlength=10)
    np.testing.assert_array_equal(held, np.floor(0.1 * counts + 0.5).astype(int))
