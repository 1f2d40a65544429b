"""Tests for idn_tf.data.pipeline: records, shuffling and the CIFAR augmentation."""

import numpy as np
import pytest

from idn_tf.data import pipeline


def _where(image, original, padding):
    """(row, column, flipped) offsets at which `image` is a crop of the padded original."""
    padded = np.pad(original, ((padding, padding), (padding, padding), (0, 0)))
    h, w = original.shape[:2]
    found = []
    for flipped in (False, True):
        for i in range(2 * padding + 1):
            for j in range(2 * padding + 1):
                crop = padded[i:i + h, j:j + w]
                if np.array_equal(crop[:, ::-1] if flipped else crop, image):
                    found.append((i, j, flipped))
    return found


@pytest.fixture(scope="module")
def images():
    # Distinct, non-symmetric pixels, so every crop/flip of an image is recognisable.
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, size=(64, 8, 8, 3), dtype=np.uint8)


def test_pad_crop_flip_gives_crops_of_the_padded_image(images):
    augment = pipeline.augmenter("pad_crop_flip", images.shape[1:], padding=2)
    seen = set()
    for k in range(len(images)):
        out = augment(images[k], np.array([7, k], np.int64)).numpy()
        assert out.dtype == np.uint8 and out.shape == images[k].shape
        where = _where(out, images[k], padding=2)
        assert len(where) == 1, k
        seen.add(where[0])
    # Offsets and flips vary from image to image; 64 draws from 5 x 5 x 2 outcomes.
    assert len(seen) >= 15
    assert {flipped for _, _, flipped in seen} == {False, True}


def test_train_dataset_augments_and_visits_every_example_once_per_epoch(images):
    labels = np.arange(len(images)) % 10
    epochs = []
    for epoch in range(2):
        data = pipeline.train_dataset(images, labels, labels, batch_size=10, seed=1,
                                      augment="pad_crop_flip", padding=2,
                                      epochs=epoch + 1, initial_epoch=epoch)
        batches = list(data.as_numpy_iterator())
        assert [len(b["index"]) for b in batches] == [10] * (len(images) // 10) + (
            [len(images) % 10] if len(images) % 10 else [])
        index = np.concatenate([b["index"] for b in batches])
        np.testing.assert_array_equal(np.sort(index), np.arange(len(images)))
        for b in batches:
            np.testing.assert_array_equal(b["label"], labels[b["index"]])
            for image, i in zip(b["image"], b["index"]):
                assert _where(image, images[i], padding=2), i
        epochs.append(index)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_same_seed_same_augmented_batches(images):
    labels = np.zeros(len(images), np.int64)

    def two_epochs(seed):
        data = pipeline.train_dataset(images, labels, labels, batch_size=16, seed=seed,
                                      augment="pad_crop_flip", padding=2, epochs=2)
        batches = [b["image"] for b in data.as_numpy_iterator()]
        per_epoch = len(batches) // 2
        return [np.concatenate(batches[:per_epoch]), np.concatenate(batches[per_epoch:])]

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    for epoch in range(2):
        np.testing.assert_array_equal(first[epoch], again[epoch])
        assert not np.array_equal(first[epoch], other[epoch])
    assert not np.array_equal(first[0], first[1])  # new draws every epoch


def test_no_augmentation_passes_images_through(images):
    assert pipeline.augmenter("none", images.shape[1:]) is None
    data = pipeline.train_dataset(images, np.zeros(len(images)), None, batch_size=64, seed=0)
    batch = next(data.as_numpy_iterator())
    np.testing.assert_array_equal(batch["image"], images[batch["index"]])
    with pytest.raises(ValueError, match="augmentation"):
        pipeline.augmenter("mixup", images.shape[1:])


def test_an_epoch_is_the_same_whichever_epoch_the_dataset_starts_at(images):
    """A resumed run (initial_epoch = 2) sees exactly the batches of an uninterrupted one."""
    labels = np.arange(len(images)) % 10

    def batches(**kwargs):
        data = pipeline.train_dataset(images, labels, labels, batch_size=16, seed=5,
                                      augment="pad_crop_flip", padding=2, **kwargs)
        return list(data.as_numpy_iterator())

    per_epoch = -(-len(images) // 16)
    whole = batches(epochs=4)
    resumed = batches(epochs=4, initial_epoch=2)
    assert len(whole) == 4 * per_epoch and len(resumed) == 2 * per_epoch
    for a, b in zip(whole[2 * per_epoch:], resumed):
        for key in ("image", "label", "index"):
            np.testing.assert_array_equal(a[key], b[key])
    orders = [np.concatenate([b["index"] for b in whole[e * per_epoch:(e + 1) * per_epoch]])
              for e in range(4)]
    assert len({o.tobytes() for o in orders}) == 4  # a new order every epoch
