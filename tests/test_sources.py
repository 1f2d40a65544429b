"""Tests for idn_tf.data.sources: the digits source and user npz arrays."""

import numpy as np
import pytest
import sklearn.datasets

from idn_tf.data import sources
from idn_tf.data.sources import DataError

# Hand-computed round(v * 255 / 16) for the digits' pixel values v = 0..16
# (v * 15.9375; 8 -> 127.5 rounds to 128).
_DIGITS_PIXEL_TABLE = np.array(
    [0, 16, 32, 48, 64, 80, 96, 112, 128, 143, 159, 175, 191, 207, 223, 239, 255])


@pytest.fixture(scope="module")
def digits():
    return sources.load_digits()


@pytest.fixture(scope="module")
def raw_digits():
    return sklearn.datasets.load_digits()


# ---------------------------------------------------------------------------------------
# digits


def test_digits_shapes_and_dtypes(digits):
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.class_names == tuple("0123456789")
    assert digits.train.images.shape == (1437, 8, 8, 1)
    assert digits.test.images.shape == (360, 8, 8, 1)
    for split in (digits.train, digits.test):
        assert split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64 and split.clean_labels.dtype == np.int64
        assert len(split) == len(split.images)
        np.testing.assert_array_equal(split.labels, split.clean_labels)
    both = np.concatenate([digits.train.images, digits.test.images])
    assert both.min() == 0 and both.max() == 255


def test_digits_pixels_follow_the_formula(digits, raw_digits):
    train_rows, test_rows = sources.digits_split_indices()
    for split, rows in ((digits.train, train_rows), (digits.test, test_rows)):
        raw = raw_digits.images[rows].astype(int)
        np.testing.assert_array_equal(split.images[..., 0], _DIGITS_PIXEL_TABLE[raw])
        np.testing.assert_array_equal(split.labels, raw_digits.target[rows])
    # A few single entries, spelled out.
    for i, r, c in ((0, 0, 2), (5, 3, 4), (100, 7, 7), (1436, 4, 3)):
        value = raw_digits.images[train_rows[i], r, c]
        assert digits.train.images[i, r, c, 0] == int(np.floor(value * 255 / 16 + 0.5))


def test_digits_split_is_stratified(digits, raw_digits):
    full = np.bincount(raw_digits.target, minlength=10)
    train = np.bincount(digits.train.labels, minlength=10)
    test = np.bincount(digits.test.labels, minlength=10)
    np.testing.assert_array_equal(train + test, full)
    assert np.all(np.abs(train - 0.8 * full) <= 1), (train, 0.8 * full)


def test_digits_split_is_fixed(digits):
    again = sources.load_digits()
    for a, b in ((digits.train, again.train), (digits.test, again.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_digits_train_and_test_are_disjoint(raw_digits):
    train_rows, test_rows = sources.digits_split_indices()
    assert len(np.intersect1d(train_rows, test_rows)) == 0
    np.testing.assert_array_equal(np.union1d(train_rows, test_rows),
                                  np.arange(len(raw_digits.target)))
    assert len(train_rows) == 1437 and len(test_rows) == 360
    # Sorted (documented): training row i is the i-th training digit in sklearn's order.
    assert np.all(np.diff(train_rows) > 0) and np.all(np.diff(test_rows) > 0)


def test_load_by_name(digits):
    assert sources.load("digits").train.images.shape == digits.train.images.shape
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        sources.load("mnist")
    with pytest.raises(DataError, match="npz"):
        sources.load("npz")


# ---------------------------------------------------------------------------------------
# npz


def _valid_arrays():
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, size=(6, 4, 5, 3), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 2, 1, 0]),
        "x_test": rng.integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8),
        "y_test": np.array([2, 1, 3]),
    }


def _write(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_valid(tmp_path):
    arrays = _valid_arrays()
    clean = np.array([0, 1, 2, 0, -1, 0])
    dataset = sources.load_npz(_write(tmp_path, **arrays, clean_train=clean))
    assert dataset.name == "npz"
    assert dataset.num_classes == 4  # largest label (3, in y_test) + 1
    assert dataset.class_names == ("0", "1", "2", "3")
    np.testing.assert_array_equal(dataset.train.images, arrays["x_train"])
    np.testing.assert_array_equal(dataset.train.labels, arrays["y_train"])
    np.testing.assert_array_equal(dataset.train.clean_labels, clean)
    np.testing.assert_array_equal(dataset.test.images, arrays["x_test"])
    np.testing.assert_array_equal(dataset.test.labels, arrays["y_test"])
    np.testing.assert_array_equal(dataset.test.clean_labels, arrays["y_test"])
    assert dataset.train.labels.dtype == np.int64


def test_npz_grayscale_keras_style_and_no_clean(tmp_path):
    arrays = _valid_arrays()
    arrays["x_train"] = arrays["x_train"][..., 0]  # [N, H, W]
    arrays["x_test"] = arrays["x_test"][..., 0]
    arrays["y_train"] = arrays["y_train"][:, None].astype(np.uint8)  # keras.datasets [N, 1]
    dataset = sources.load(name="npz", npz_path=_write(tmp_path, **arrays))
    assert dataset.train.images.shape == (6, 4, 5, 1)
    np.testing.assert_array_equal(dataset.train.labels, [0, 1, 2, 2, 1, 0])
    np.testing.assert_array_equal(dataset.train.clean_labels, np.full(6, -1))


def _bad(name):
    """A valid set of arrays broken in the way `name` says."""
    arrays = _valid_arrays()
    if name == "missing":
        del arrays["y_test"]
    elif name == "length":
        arrays["y_train"] = arrays["y_train"][:5]
    elif name == "clean_length":
        arrays["clean_train"] = np.zeros(4, dtype=int)
    elif name == "negative":
        arrays["y_train"][2] = -1
    elif name == "float_labels":
        arrays["y_test"] = arrays["y_test"].astype(np.float32)
    elif name == "float_images":
        arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255
    elif name == "rank":
        arrays["x_test"] = arrays["x_test"].reshape(3, -1)
    elif name == "image_shape":
        arrays["x_test"] = arrays["x_test"][:, :3]
    elif name == "one_class":
        arrays["y_train"][:] = 0
        arrays["y_test"][:] = 0
    return arrays


@pytest.mark.parametrize("name, message", [
    ("missing", "missing array.*y_test"),
    ("length", "y_train has 5 labels but x_train has 6"),
    ("clean_length", "clean_train has 4 labels"),
    ("negative", "y_train has label -1 outside"),
    ("float_labels", "y_test must be integer"),
    ("float_images", "x_train must be uint8.*float32"),
    ("rank", r"x_test must have shape.*\(3, 60\)"),
    ("image_shape", "x_train images are .* but x_test"),
    ("one_class", "at least 2"),
])
def test_npz_bad_arrays(tmp_path, name, message):
    path = _write(tmp_path, **_bad(name))
    with pytest.raises(DataError, match=message) as error:
        sources.load_npz(path)
    assert "\n" not in str(error.value)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.npz"):
        sources.load_npz(str(tmp_path / "nope.npz"))


def test_npz_not_an_npz(tmp_path):
    text = tmp_path / "labels.npz"
    text.write_text("0 1 2\n3 4 5\n")
    with pytest.raises(DataError, match="not an .npz archive"):
        sources.load_npz(str(text))
    single = tmp_path / "single.npy"  # a bare .npy array is not an archive either
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match="not an .npz archive"):
        sources.load_npz(str(single))


def test_npz_object_arrays_are_refused(tmp_path):
    arrays = _valid_arrays()
    arrays["y_train"] = np.array([0, 1, 2, 2, 1, "x"], dtype=object)
    with pytest.raises(DataError, match="cannot read"):
        sources.load_npz(_write(tmp_path, **arrays))
