"""Tests for idn_tf.data.streaming: decoding, resizing, crops, epochs, oversampling, mixing.

A module-scoped folder of real image files (JPEG of several sizes, some smaller than the
crop, grayscale, CMYK; PNG) stands in for Clothing1M.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from idn_tf.data import streaming

# (width, height, PIL mode, format): sizes around Clothing1M's, smaller than 224, square.
FILES = [(400, 300, "RGB", "jpg"), (300, 400, "RGB", "jpg"), (150, 100, "RGB", "jpg"),
         (320, 240, "L", "jpg"), (330, 250, "CMYK", "jpg"), (260, 300, "RGB", "png"),
         (500, 333, "RGB", "jpg"), (224, 224, "RGB", "jpg"), (256, 256, "RGB", "png"),
         (360, 280, "RGB", "jpg")]
LABELS = np.array([0, 1, 1, 2, 0, 1, 2, 1, 1, 1])
CROP = 224


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for k, (width, height, mode, fmt) in enumerate(FILES):
        # Gradients plus noise: photo-like enough for JPEG, and every crop window and flip
        # is distinct, so a crop can be located in its source image.
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 200 // width, y * 200 // height, (x + 2 * y) % 200], axis=-1)
        pixels = (pixels + rng.integers(0, 56, pixels.shape)).astype(np.uint8)
        path = folder / f"{k}.{fmt}"
        Image.fromarray(pixels).convert(mode).save(path)
        out.append(str(path))
    return out


def _reference_resized(path, size=256, mode="square"):
    """Decoded, resized image (float) computed here with tf.io / tf.image directly."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    height, width = image.shape[:2]
    if mode == "square":
        shape = (size, size)
    else:  # torchvision's Resize(size): the longer side becomes int(size * long / short)
        short = min(height, width)
        shape = (size * height // short, size * width // short)
    return tf.image.resize(image, shape, method="bilinear").numpy()


def _to_uint8(image):
    return np.clip(np.round(image), 0, 255).astype(np.uint8)  # round half to even, as tf


def _where(crop, resized):
    """All (top, left, flipped) at which `crop` is a window of `resized` (uint8)."""
    height, width = crop.shape[:2]
    found = []
    for flipped in (False, True):
        target = crop[:, ::-1] if flipped else crop
        for top in range(resized.shape[0] - height + 1):
            for left in range(resized.shape[1] - width + 1):
                if (np.array_equal(resized[top, left:left + width], target[0])
                        and np.array_equal(resized[top:top + height, left:left + width], target)):
                    found.append((top, left, flipped))
    return found


def _numpy_bilinear(image, height, width):
    """Bilinear resize with half-pixel centres and no antialiasing, in float64 numpy."""
    def axis(n_in, n_out):
        x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        low = np.floor(x)
        return (np.clip(low, 0, n_in - 1).astype(int), np.clip(low + 1, 0, n_in - 1).astype(int),
                x - low)
    y0, y1, fy = axis(image.shape[0], height)
    x0, x1, fx = axis(image.shape[1], width)
    image = image.astype(np.float64)
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _epochs(batches, per_epoch):
    return [batches[e * per_epoch:(e + 1) * per_epoch] for e in range(len(batches) // per_epoch)]


def _concat(batches, key):
    return np.concatenate([b[key] for b in batches])


# ---------------------------------------------------------------------------------------
# decoding and resizing


def test_decode_gives_rgb_for_gray_cmyk_and_png(paths):
    for path, (width, height, mode, fmt) in zip(paths, FILES):
        image = streaming.decode(tf.io.read_file(path)).numpy()
        expected = np.asarray(Image.open(path).convert("RGB"))
        assert image.dtype == np.uint8 and image.shape == (height, width, 3), path
        difference = np.abs(image.astype(int) - expected)
        if fmt == "png":
            np.testing.assert_array_equal(image, expected)
        else:  # two JPEG decoders (TF's and PIL's) differ by a few levels at most
            assert difference.max() <= 6 and difference.mean() < 1.5, (path, difference.max())
        if mode == "L":
            np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_resize_is_bilinear_with_half_pixel_centres(paths):
    image = np.asarray(Image.open(paths[5]).convert("RGB"))  # PNG: exact pixels
    for mode, shape in (("square", (256, 256)), ("shorter_side", (295, 256))):
        out = streaming.resize_image(tf.constant(image), 256, mode).numpy()
        assert out.shape == (*shape, 3)
        # atol: TF interpolates in float32.
        np.testing.assert_allclose(out, _numpy_bilinear(image, *shape), rtol=0, atol=0.01)
    small = np.asarray(Image.open(paths[8]).convert("RGB"))[:100, :150]  # scaled up
    out = streaming.resize_image(tf.constant(small), 256, "shorter_side").numpy()
    np.testing.assert_allclose(out, _numpy_bilinear(small, 256, 384), rtol=0, atol=0.01)


def test_antialias_matches_pil_bilinear_within_one_level(paths):
    image = Image.open(paths[5]).convert("RGB")  # 260 x 300 -> 256 x 256 shrinks the height
    out = _to_uint8(streaming.resize_image(tf.constant(np.asarray(image)), 256,
                                           antialias=True).numpy())
    expected = np.asarray(image.resize((256, 256), Image.BILINEAR))
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_resized_shape_follows_torchvision_resize():
    for height, width in ((300, 400), (400, 300), (100, 150), (333, 500), (224, 224)):
        short, long = sorted((height, width))
        scaled = int(256 * long / short)
        expected = (256, scaled) if height <= width else (scaled, 256)
        got = streaming.resized_shape(tf.constant([height, width, 3]), 256, "shorter_side")
        assert tuple(got.numpy()) == expected
    with pytest.raises(ValueError, match="resize_mode"):
        streaming.resized_shape(tf.constant([3, 3, 3]), 256, "stretch")


# ---------------------------------------------------------------------------------------
# training and evaluation datasets


@pytest.mark.parametrize("resize_mode", ["square", "shorter_side"])
def test_train_batches_are_random_windows_of_the_resized_images(paths, resize_mode):
    n = len(paths)
    data = streaming.train_dataset(paths, LABELS, None, None, batch_size=4, seed=1, epochs=2,
                                   resize_mode=resize_mode)
    batches = list(data.as_numpy_iterator())
    assert [len(b["index"]) for b in batches] == [4, 4, 2] * 2
    references = [_to_uint8(_reference_resized(p, mode=resize_mode)) for p in paths]
    seen = set()
    for epoch in _epochs(batches, 3):
        index = _concat(epoch, "index")
        np.testing.assert_array_equal(np.sort(index), np.arange(n))  # each example once
        np.testing.assert_array_equal(_concat(epoch, "label"), LABELS[index])
        np.testing.assert_array_equal(_concat(epoch, "clean_label"), np.full(n, -1))
        for batch in epoch:
            assert batch["image"].dtype == np.uint8 and batch["image"].shape[1:] == (CROP, CROP, 3)
            for crop, i in zip(batch["image"], batch["index"]):
                where = _where(crop, references[i])
                assert len(where) == 1, (i, where)
                seen.add(where[0])
    assert len(seen) > n  # windows (and flips) vary between epochs and images
    assert {flipped for _, _, flipped in seen} == {False, True}


def test_an_epoch_is_the_same_whichever_epoch_the_dataset_starts_at(paths):
    def batches(seed=3, **kwargs):
        return list(streaming.train_dataset(paths, LABELS, LABELS, np.arange(10, 20), 4, seed,
                                            **kwargs).as_numpy_iterator())

    whole, resumed = batches(epochs=3), batches(epochs=3, initial_epoch=2)
    assert len(whole) == 9 and len(resumed) == 3
    for a, b in zip(whole[6:], resumed):
        for key in ("image", "label", "clean_label", "index"):
            np.testing.assert_array_equal(a[key], b[key])
    orders = [_concat(epoch, "index") for epoch in _epochs(whole, 3)]
    assert len({o.tobytes() for o in orders}) == 3  # a new order every epoch
    assert set(orders[0]) == set(range(10, 20))  # the given index column is passed through
    other = batches(seed=4, epochs=1)
    assert not np.array_equal(_concat(whole[:3], "index"), _concat(other, "index"))


def test_eval_gives_centre_crops_in_file_order(paths):
    for mode in ("square", "shorter_side"):
        batches = list(streaming.eval_dataset(paths, LABELS, batch_size=4,
                                              resize_mode=mode).as_numpy_iterator())
        assert [len(b["index"]) for b in batches] == [4, 4, 2]
        np.testing.assert_array_equal(_concat(batches, "index"), np.arange(len(paths)))
        np.testing.assert_array_equal(_concat(batches, "label"), LABELS)
        for image, path in zip(_concat(batches, "image"), paths):
            resized = _reference_resized(path, mode=mode)
            top, left = (resized.shape[0] - CROP) // 2, (resized.shape[1] - CROP) // 2
            window = resized[top:top + CROP, left:left + CROP]
            np.testing.assert_array_equal(image, _to_uint8(window))


def test_bad_arguments_are_rejected(paths):
    with pytest.raises(ValueError, match="image_size"):
        streaming.train_dataset(paths, LABELS, None, None, 4, 0, image_size=300)
    with pytest.raises(ValueError, match="resize_mode"):
        streaming.eval_dataset(paths, LABELS, 4, resize_mode="crop")
    with pytest.raises(ValueError, match="one entry per path"):
        streaming.train_dataset(paths, LABELS[:-1], None, None, 4, 0)
    with pytest.raises(ValueError, match="even"):
        streaming.mixed_train_dataset(paths, LABELS, None, None, paths, LABELS, 5, 0)


# ---------------------------------------------------------------------------------------
# oversampling


def _splitmix64(x, seed):
    """Reference splitmix64 in Python integers."""
    mask = 2**64 - 1
    z = (x + seed * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_row_hash_is_splitmix64():
    rows = np.array([0, 1, 7, 123456789])
    for seed in (0, 3, 2**40):
        expected = np.array([_splitmix64(int(r), seed) for r in rows], np.uint64)
        np.testing.assert_array_equal(streaming._mix64(rows, seed), expected)


def test_oversample_indices_hand_worked():
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(streaming.oversample_indices(labels, None), np.arange(7))
    # auto: class 1 (one row) and class 2 (two rows) up to class 0's four.
    np.testing.assert_array_equal(streaming.oversample_indices(labels, "auto", seed=5),
                                  [0, 1, 2, 3, 4, 4, 4, 4, 5, 5, 6, 6])
    # multipliers: class 1 x2 -> 2 rows; class 2 x1.5 -> 3 rows, the odd copy by hash rank.
    rows = streaming.oversample_indices(labels, [1, 2, 1.5], seed=0)
    odd = 5 if _splitmix64(5, 0) < _splitmix64(6, 0) else 6
    np.testing.assert_array_equal(rows, np.sort([0, 1, 2, 3, 4, 4, 5, 6, odd]))
    assert streaming.steps_per_epoch(labels, 4, "auto") == 3
    assert streaming.steps_per_epoch(labels, 4, "auto", mixed=True) == 6


def test_oversample_indices_counts_and_balance():
    rng = np.random.default_rng(0)
    labels = rng.choice(14, size=2000, p=np.arange(1, 15) / 105)
    counts = np.bincount(labels, minlength=14)
    multipliers = rng.uniform(1, 3.5, size=14)
    for mode, targets in (("auto", np.full(14, counts.max())),
                          (multipliers, np.floor(multipliers * counts + 0.5))):
        rows = streaming.oversample_indices(labels, mode, seed=1)
        np.testing.assert_array_equal(np.bincount(labels[rows], minlength=14), targets)
        copies = np.bincount(rows, minlength=len(labels))
        assert copies.min() >= 1  # every row still visited each epoch
        for c in range(14):  # copies spread evenly over a class's rows
            assert np.ptp(copies[labels == c]) <= 1
        np.testing.assert_array_equal(rows, streaming.oversample_indices(labels, mode, seed=1))
    assert not np.array_equal(streaming.oversample_indices(labels, multipliers, seed=1),
                              streaming.oversample_indices(labels, multipliers, seed=2))


def test_oversample_rejects_bad_modes():
    labels = np.array([0, 1, 2])
    for mode, match in (("balanced", "oversample"), ([1, 1], "one multiplier per class"),
                        ([1, 0.5, 1], ">= 1"), ([1, np.nan, 1], ">= 1")):
        with pytest.raises(ValueError, match=match):
            streaming.oversample_indices(labels, mode)
    with pytest.raises(ValueError, match="non-negative"):
        streaming.oversample_indices(np.array([0, -1]), "auto")


def test_oversampled_copies_share_their_index_and_get_their_own_crops(paths):
    index = np.arange(100, 110)
    batches = list(streaming.train_dataset(paths, LABELS, None, index, batch_size=8, seed=2,
                                           oversample="auto").as_numpy_iterator())
    rows = streaming.oversample_indices(LABELS, "auto", seed=2)
    epoch_index = _concat(batches, "index")
    np.testing.assert_array_equal(np.sort(epoch_index), np.sort(index[rows]))  # copies share it
    np.testing.assert_array_equal(np.bincount(_concat(batches, "label")), [6, 6, 6])
    np.testing.assert_array_equal(_concat(batches, "label"), LABELS[epoch_index - 100])
    images = _concat(batches, "image")
    copies = images[epoch_index == 100]  # class 0 has 2 rows, so row 0 appears 3 times
    assert len(copies) == 3 and len({c.tobytes() for c in copies}) == 3


# ---------------------------------------------------------------------------------------
# mixed noisy / clean batches (row #8)


@pytest.mark.e2e
def test_mixed_batches_are_half_clean(paths):
    noisy, clean = paths[:7], paths[7:]  # 7 noisy rows, 3 clean rows
    clean_labels = np.array([4, 5, 6])
    kwargs = dict(batch_size=4, seed=6, epochs=3)
    data = streaming.mixed_train_dataset(noisy, LABELS[:7], None, None, clean, clean_labels,
                                         **kwargs)
    batches = list(data.as_numpy_iterator())
    per_epoch = streaming.steps_per_epoch(LABELS[:7], 4, mixed=True)
    assert per_epoch == 4 and [len(b["index"]) for b in batches] == [4, 4, 4, 2] * 3
    for batch in batches:  # alternating noisy, clean
        np.testing.assert_array_equal(batch["is_clean"], np.arange(len(batch["index"])) % 2 == 1)
    clean_uses = []
    for epoch in _epochs(batches, per_epoch):
        flags = _concat(epoch, "is_clean")
        np.testing.assert_array_equal(np.sort(_concat(epoch, "index")[~flags]), np.arange(7))
        clean_index = _concat(epoch, "index")[flags]
        assert set(clean_index) <= {7, 8, 9}  # default: rows after the noisy ones
        for key in ("label", "clean_label"):
            np.testing.assert_array_equal(_concat(epoch, key)[flags], clean_labels[clean_index - 7])
        clean_uses.append(clean_index)
    # The clean set is cycled in whole passes: over 3 epochs (21 = 7 passes of 3) each
    # clean example is used exactly 7 times, and the passes are reshuffled.
    stream = np.concatenate(clean_uses)
    np.testing.assert_array_equal(np.bincount(stream - 7), [7, 7, 7])
    passes = stream.reshape(7, 3)
    assert all(sorted(p) == [7, 8, 9] for p in passes) and len({p.tobytes() for p in passes}) > 1

    # The noisy half is train_dataset's epoch (same seed) in half batches.
    plain = list(streaming.train_dataset(noisy, LABELS[:7], None, None, 2, seed=6,
                                         epochs=3).as_numpy_iterator())
    for key in ("image", "index", "label"):
        np.testing.assert_array_equal(_concat(plain, key),
                                      _concat(batches, key)[~_concat(batches, "is_clean")])

    resumed = list(streaming.mixed_train_dataset(
        noisy, LABELS[:7], None, None, clean, clean_labels, initial_epoch=2,
        **kwargs).as_numpy_iterator())
    for a, b in zip(batches[2 * per_epoch:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_mixed_clean_index_can_be_given(paths):
    data = streaming.mixed_train_dataset(paths[:4], LABELS[:4], None, np.arange(4), paths[4:6],
                                         [0, 1], batch_size=2, seed=0, clean_index=[50, 51])
    batches = list(data.as_numpy_iterator())
    assert set(_concat(batches, "index")[_concat(batches, "is_clean")]) <= {50, 51}
    with pytest.raises(ValueError, match="clean_index"):
        streaming.mixed_train_dataset(paths[:4], LABELS[:4], None, None, paths[4:6], [0, 1],
                                      batch_size=2, seed=0, clean_index=[3, 4])
