"""What a run sees of its data (idn_tf/data/views.py): `ArrayData` over pixels in memory and
`FileData` over a Clothing1M folder of real JPEG files, checked against numpy (the images,
their statistics, log softmax of a linear classifier written out by hand, through `model.example_log_probs`), sha256 of the
rows written out here, and the examples each epoch's batches visit."""

import hashlib
import os
import shutil
import types

import keras
import numpy as np
import pytest

from idn_tf.data import clothing1m, sources, views
from idn_tf.model import example_log_probs

N, TEST, K = 10, 5, 3


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 4, 4, 3)).astype(np.uint8)
    images[..., 2] = 77  # a constant channel: std 0, floored
    labels = np.arange(N, dtype=np.int64) % K
    clean = labels.copy()
    clean[:2] = -1
    train = sources.Split(images, labels, clean)
    test_images = rng.integers(0, 256, (TEST, 4, 4, 3)).astype(np.uint8)
    test = sources.Split(test_images, np.arange(TEST, dtype=np.int64) % K,
                         np.arange(TEST, dtype=np.int64) % K)
    return sources.Dataset("toy", train, test, K, ("a", "b", "c"))


def linear_classifier(input_shape, seed=0):
    """uint8 → x/255 → flatten → Dense(K) with known weights, and its numpy twin."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(input_shape))
    kernel, bias = rng.normal(size=(size, K)), rng.normal(size=K)
    inputs = keras.Input(input_shape, dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    net = keras.Model(inputs, keras.layers.Dense(K)(x))
    net.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])

    def numpy_log_probs(images):
        logits = images.reshape(len(images), -1).astype(np.float64) / 255 @ kernel + bias
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    return net, numpy_log_probs


# ---------------------------------------------------------------------------------------
# ArrayData


def test_array_data_describes_its_source(arrays):
    data = views.ArrayData(arrays, augment="pad_crop_flip", padding=2)
    assert (data.name, data.num_classes, data.class_names) == ("toy", K, ("a", "b", "c"))
    assert data.train is arrays.train
    assert data.test_size == TEST and data.input_shape == (4, 4, 3) and data.table_size == N
    assert data.fingerprint() is None
    assert (data.augment, data.padding) == ("pad_crop_flip", 2)


def test_array_data_pixel_statistics_are_per_channel_on_the_unit_scale(arrays):
    mean, std = views.ArrayData(arrays).pixel_statistics()
    images = arrays.train.images.astype(np.float64) / 255
    for c in range(3):
        assert mean[c] == pytest.approx(images[..., c].mean(), abs=1e-12)
    assert std[0] == pytest.approx(images[..., 0].std(), abs=1e-12)
    assert std[2] == 1e-3  # the constant channel: floored, so standardising stays finite


def test_array_data_tables_start_values(arrays):
    data = views.ArrayData(arrays)
    psi = data.table_psi([0.5, 0.25] * 5)
    assert psi.dtype == np.float32 and psi.tolist() == [0.5, 0.25] * 5
    eta = data.initial_eta(0.01)
    assert eta.dtype == np.float32 and eta.shape == (N,)
    np.testing.assert_array_equal(eta, np.float32(0.01))


@pytest.mark.parametrize("batch_size, steps", [(1, 10), (3, 4), (5, 2), (10, 1), (64, 1)])
def test_array_data_steps_per_epoch_count_the_last_partial_batch(arrays, batch_size, steps):
    assert views.ArrayData(arrays).steps_per_epoch(arrays.train.labels, batch_size) == steps


def test_array_data_batches_visit_every_example_once_per_epoch_with_the_given_labels(arrays):
    data = views.ArrayData(arrays)
    given = (arrays.train.labels + 1) % K  # not the source's labels
    batches = list(data.train_dataset(given, batch_size=4, seed=3, epochs=2))
    assert [len(b["index"]) for b in batches] == [4, 4, 2] * 2
    for epoch in (batches[:3], batches[3:]):
        index = np.concatenate([b["index"].numpy() for b in epoch])
        assert sorted(index) == list(range(N))
        for b in epoch:
            i = b["index"].numpy()
            np.testing.assert_array_equal(b["image"].numpy(), arrays.train.images[i])  # none
            np.testing.assert_array_equal(b["label"].numpy(), given[i])
            np.testing.assert_array_equal(b["clean_label"].numpy(), arrays.train.clean_labels[i])
    # A resumed run (initial_epoch=1) sees exactly the second epoch.
    resumed = list(data.train_dataset(given, batch_size=4, seed=3, epochs=2, initial_epoch=1))
    assert [b["index"].numpy().tolist() for b in resumed] == [
        b["index"].numpy().tolist() for b in batches[3:]]


def test_array_data_augmentation_is_pad_crop_flip(arrays):
    data = views.ArrayData(arrays, augment="pad_crop_flip", padding=1)
    (batch,) = data.train_dataset(arrays.train.labels, batch_size=N, seed=0, epochs=1)
    padded = np.pad(arrays.train.images, [(0, 0), (1, 1), (1, 1), (0, 0)])
    for image, i in zip(batch["image"].numpy(), batch["index"].numpy()):
        windows = [padded[i, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
        windows += [w[:, ::-1] for w in windows]
        assert any(np.array_equal(image, w) for w in windows), i


def test_array_data_test_batches_are_the_test_split_in_order(arrays):
    batches = list(views.ArrayData(arrays).test_dataset(batch_size=2))
    np.testing.assert_array_equal(np.concatenate([b["image"].numpy() for b in batches]),
                                  arrays.test.images)
    np.testing.assert_array_equal(np.concatenate([b["label"].numpy() for b in batches]),
                                  arrays.test.labels)


def test_array_data_unaugmented_log_probs_and_images(arrays):
    data = views.ArrayData(arrays)
    net, numpy_log_probs = linear_classifier((4, 4, 3))
    got = example_log_probs(net, data, batch_size=3)
    assert got.shape == (N, K) and got.dtype == np.float32
    np.testing.assert_allclose(got, numpy_log_probs(arrays.train.images), atol=1e-5)
    np.testing.assert_array_equal(data.images([7, 2, 7]), arrays.train.images[[7, 2, 7]])
    assert data.images([]).shape == (0, 4, 4, 3)


def test_as_examples_wraps_arrays_and_passes_views_through(arrays):
    data = views.ArrayData(arrays)
    assert views.as_examples(data) is data
    examples = views.as_examples(arrays.test.images)
    assert isinstance(examples, views.ImageArray)
    net, numpy_log_probs = linear_classifier((4, 4, 3), seed=1)
    np.testing.assert_allclose(example_log_probs(net, examples, 2), numpy_log_probs(arrays.test.images),
                               atol=1e-5)
    np.testing.assert_array_equal(examples.images(np.array([4, 0])), arrays.test.images[[4, 0]])


def test_array_data_audits_its_held_out_rows_but_not_the_test_split(arrays):
    data = views.ArrayData(arrays)
    assert data.audited_splits() == () and len(data.validation_rows) == 0
    given = (arrays.train.labels + 1) % K
    view, _ = data.hold_out([7, 2], given)
    (val,) = view.audited_splits()
    assert val.split == "validation" and len(val) == 2 and val.paths is None
    np.testing.assert_array_equal(val.rows, [7, 2])
    np.testing.assert_array_equal(val.labels, given[[7, 2]])
    np.testing.assert_array_equal(val.clean_labels, arrays.train.clean_labels[[7, 2]])
    np.testing.assert_array_equal(val.examples.images([1, 0]), arrays.train.images[[2, 7]])
    # A fold's view (`without`) keeps the validation rows, numbered as in the source.
    fold, _ = view.without([0, 1], given[view.rows])
    np.testing.assert_array_equal(fold.audited_splits()[0].rows, [7, 2])
    np.testing.assert_array_equal(fold.rows, view.rows[2:])


# ---------------------------------------------------------------------------------------
# FileData

COUNTS = {"noisy": 9, "clean_train": 4, "clean_val": 2, "clean_test": 3}
SIZE = 8  # crops of images resized to 10 x 10


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("views") / "c1m"
    clothing1m.make_fake_clothing1m(str(root), counts=COUNTS, overlap=2)
    return root


@pytest.fixture(scope="module")
def c1m(folder):
    return clothing1m.load_clothing1m(str(folder), verbose=False)


def file_data(c1m, folder, **kwargs):
    return views.FileData(c1m, image_size=SIZE, resize=10, root=str(folder), **kwargs)


def test_file_data_describes_its_folder(c1m, folder):
    data = file_data(c1m, folder)
    assert data.name == "clothing1m" and data.num_classes == 14
    assert data.class_names == clothing1m.CLASS_NAMES
    assert data.train is c1m.noisy and len(data.train) == 9
    assert data.test_size == 3 and data.input_shape == (SIZE, SIZE, 3)
    assert data.table_size == 9
    assert file_data(c1m, folder, mix_clean=True).table_size == 9 + 4
    np.testing.assert_array_equal(data.pixel_statistics()[0], views.IMAGENET_MEAN)
    np.testing.assert_array_equal(data.pixel_statistics()[1], views.IMAGENET_STD)


def test_file_data_tables_give_the_clean_rows_psi_one_and_eta_zero(c1m, folder):
    mixed = file_data(c1m, folder, mix_clean=True)
    psi = np.linspace(0.1, 0.9, 9)
    np.testing.assert_array_equal(mixed.table_psi(psi),
                                  np.concatenate([psi, np.ones(4)]).astype(np.float32))
    np.testing.assert_array_equal(mixed.initial_eta(0.3),
                                  np.float32([0.3] * 9 + [0.0] * 4))
    plain = file_data(c1m, folder)
    np.testing.assert_array_equal(plain.table_psi(psi), psi.astype(np.float32))
    np.testing.assert_array_equal(plain.initial_eta(0.3), np.float32([0.3] * 9))


def _fingerprint_by_hand(folder):
    """sha256 of "<key>\\t<noisy label>\\n" for the noisy list's keys, in list order."""
    keys = (folder / "noisy_train_key_list.txt").read_text().split()
    labels = dict(line.split() for line in (folder / "noisy_label_kv.txt").read_text().splitlines())
    text = "".join(f"{key}\t{labels[key]}\n" for key in keys)
    return hashlib.sha256(text.encode()).hexdigest()


def test_file_data_fingerprint_is_the_rows_keys_and_labels(c1m, folder, tmp_path):
    assert file_data(c1m, folder).fingerprint() == _fingerprint_by_hand(folder)
    # The same folder elsewhere: the same rows.
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    again = clothing1m.load_clothing1m(str(moved), verbose=False)
    assert file_data(again, moved).fingerprint() == _fingerprint_by_hand(folder)
    # Without a root the absolute paths count: other folders, other fingerprints.
    assert (views.FileData(c1m).fingerprint() != views.FileData(again).fingerprint())
    # Another label: another fingerprint.
    relabelled = clothing1m.Clothing1M(
        clothing1m.FileSplit(c1m.noisy.paths, (c1m.noisy.labels + 1) % 14,
                             c1m.noisy.clean_labels, c1m.noisy.index),
        c1m.clean_train, c1m.clean_val, c1m.clean_test)
    assert file_data(relabelled, folder).fingerprint() != _fingerprint_by_hand(folder)


def test_relative_paths_are_the_noisy_list_keys_in_index_order(arrays, c1m, folder):
    keys = (folder / "noisy_train_key_list.txt").read_text().split()
    relative = file_data(c1m, folder).relative_paths()
    assert relative.tolist() == keys
    assert all(os.path.isfile(folder / key) for key in relative)
    # Without a data folder: the paths as the source gave them.
    assert views.FileData(c1m).relative_paths().tolist() == list(c1m.noisy.paths)
    assert views.ArrayData(arrays).relative_paths() is None  # arrays have no files


def test_file_data_steps_per_epoch(c1m, folder):
    labels = c1m.noisy.labels
    counts = np.bincount(labels)
    balanced = int((counts > 0).sum() * counts.max())  # "auto": every class up to the largest
    assert balanced > 9
    assert file_data(c1m, folder).steps_per_epoch(labels, 4) == 3  # ceil(9 / 4)
    assert file_data(c1m, folder, oversample="auto").steps_per_epoch(labels, 4) == -(-balanced // 4)
    assert file_data(c1m, folder, mix_clean=True).steps_per_epoch(labels, 4) == 5  # 2 noisy each
    assert file_data(c1m, folder).clean_steps_per_epoch(3) == 2  # ceil(4 / 3)


@pytest.mark.e2e
def test_file_data_training_batches(c1m, folder):
    data = file_data(c1m, folder)
    given = (c1m.noisy.labels + 3) % 14
    batches = list(data.train_dataset(given, batch_size=4, seed=1, epochs=1))
    assert len(batches) == data.steps_per_epoch(given, 4)
    index = np.concatenate([b["index"].numpy() for b in batches])
    assert sorted(index) == list(range(9))
    for b in batches:
        assert b["image"].shape[1:] == (SIZE, SIZE, 3) and b["image"].dtype == "uint8"
        np.testing.assert_array_equal(b["label"].numpy(), given[b["index"].numpy()])
    mixed = file_data(c1m, folder, mix_clean=True)
    batches = list(mixed.train_dataset(given, batch_size=4, seed=1, epochs=1))
    index = np.concatenate([b["index"].numpy() for b in batches])
    clean = np.concatenate([b["is_clean"].numpy() for b in batches])
    assert sorted(index[~clean]) == list(range(9))
    assert set(index[clean]) <= set(range(9, 13))  # the clean rows after the noisy ones
    clean_batches = list(mixed.clean_train_dataset(batch_size=3, seed=0, epochs=1))
    assert sorted(np.concatenate([b["label"].numpy() for b in clean_batches])) == sorted(
        c1m.clean_train.labels)


def test_file_data_images_are_the_evaluation_crops_of_the_rows(c1m, folder):
    data = file_data(c1m, folder)
    every = data.images(np.arange(9))
    assert every.shape == (9, SIZE, SIZE, 3) and every.dtype == np.uint8
    np.testing.assert_array_equal(data.images([5, 0, 5]), every[[5, 0, 5]])
    empty = data.images([])
    assert empty.shape == (0, SIZE, SIZE, 3) and empty.dtype == np.uint8
    # The grayscale image (noisy row 0) has three equal channels.
    assert np.array_equal(every[0, ..., 0], every[0, ..., 1])
    net, numpy_log_probs = linear_classifier((SIZE, SIZE, 3))
    np.testing.assert_allclose(example_log_probs(net, data, batch_size=4), numpy_log_probs(every),
                               atol=1e-5)
    test = list(data.test_dataset(batch_size=2))
    assert sum(len(b["label"]) for b in test) == 3
    np.testing.assert_array_equal(np.concatenate([b["label"].numpy() for b in test]),
                                  c1m.clean_test.labels)
    # Its own clean validation and test lists: nothing to audit besides the training rows.
    assert data.audited_splits() == ()


def test_a_class_folder_audits_its_validation_rows_and_its_test_images(tmp_path):
    import image_folders
    from idn_tf.data import folder as folder_lib, streaming
    image_folders.make_image_folder(str(tmp_path), per_class=6)
    loaded = folder_lib.load_folder(str(tmp_path), verbose=False)
    data, _ = views.FileData(loaded, image_size=SIZE, resize=10, root=str(tmp_path)).hold_out(
        [4, 1], loaded.noisy.labels)
    val, test = data.audited_splits()
    assert (val.split, test.split) == ("validation", "test")
    np.testing.assert_array_equal(val.rows, [4, 1])
    np.testing.assert_array_equal(val.labels, loaded.noisy.labels[[4, 1]])
    assert list(val.paths) == [os.path.relpath(p, tmp_path) for p in loaded.noisy.paths[[4, 1]]]
    np.testing.assert_array_equal(test.rows, np.arange(len(loaded.clean_test)))
    np.testing.assert_array_equal(test.labels, loaded.clean_test.labels)
    assert (test.clean_labels == -1).all()  # the user's own labels: nobody checked them
    assert list(test.paths) == [os.path.relpath(p, tmp_path) for p in loaded.clean_test.paths]
    crops = np.concatenate([b["image"].numpy() for b in streaming.eval_dataset(
        loaded.clean_test.paths, loaded.clean_test.labels, 4, image_size=SIZE, resize=10)])
    np.testing.assert_array_equal(test.examples.images([2, 0]), crops[[2, 0]])


# ---------------------------------------------------------------------------------------
# from_config


def test_from_config_picks_the_view_and_passes_its_settings(arrays, c1m, folder):
    config = types.SimpleNamespace(
        augment="pad_crop_flip", crop_padding=3, image_size=SIZE, resize=12,
        resize_mode="shorter_side", clean_train="mix", data_dir=os.path.relpath(folder),
        oversample_mode=lambda: "auto")
    array_view = views.from_config(config, arrays)
    assert isinstance(array_view, views.ArrayData)
    assert (array_view.augment, array_view.padding) == ("pad_crop_flip", 3)
    file_view = views.from_config(config, c1m)
    assert isinstance(file_view, views.FileData)
    assert file_view.input_shape == (SIZE, SIZE, 3) and file_view.mix_clean
    assert file_view.oversample == "auto" and file_view.root == str(folder)
    assert file_view.fingerprint() == _fingerprint_by_hand(folder)
    config.clean_train = "none"
    assert not views.from_config(config, c1m).mix_clean
