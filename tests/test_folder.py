"""The class-folder source (idn_tf/data/folder.py) on folders of real image files.

The folders (tests/image_folders.py) mix PNG and JPEG, RGB and grayscale, several sizes,
hidden files and folders, and images in sub-subfolders. Class names and order are
checked against Keras's own reader of the layout, the split against a hash computed here.
"""

import hashlib
import os
import re

import numpy as np
import pytest

from idn_tf.data import dataset, folder, holdout, sources

import image_folders


def _load(root, **options):
    return folder.load_folder(str(root), verbose=False, **options)


def test_classes_and_labels_are_those_keras_reads(tmp_path):
    import keras
    # Keras reads hidden files too (a hidden "x.jpg" would fail it): none here; their
    # leaving out is checked below.
    written = image_folders.make_image_folder(str(tmp_path), classes=("b", "A", "a", "c d"),
                                              per_class=5, nested=True, hidden=False)
    data = _load(tmp_path)
    keras_data = keras.utils.image_dataset_from_directory(
        str(tmp_path), labels="inferred", shuffle=False, image_size=(8, 8), batch_size=64,
        verbose=False)
    assert data.class_names == tuple(keras_data.class_names) == ("A", "a", "b", "c d")
    # Every image Keras lists is in one of the two splits, with Keras's label.
    keras_labels = {os.path.relpath(p, tmp_path): int(np.argmax(y)) if np.ndim(y) else int(y)
                    for p, y in zip(keras_data.file_paths,
                                    np.concatenate([y.numpy() for _, y in keras_data]))}
    ours = {}
    for split in (data.noisy, data.clean_test):
        for path, label in zip(split.paths, split.labels):
            ours[os.path.relpath(path, tmp_path)] = int(label)
    assert ours == keras_labels
    assert all(data.class_names[ours[key]] == name for key, name in written.items())


def test_hidden_files_and_folders_and_other_files_are_left_out(tmp_path):
    written = image_folders.make_image_folder(str(tmp_path), per_class=4, nested=True)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("top-level files are not classes")
    (tmp_path / ".cache").mkdir()
    data = _load(tmp_path)
    listed = {os.path.relpath(p, tmp_path) for p in [*data.noisy.paths, *data.clean_test.paths]}
    assert listed == set(written) and data.class_names == ("cat", "dog", "fox")


def test_index_is_the_sorted_relative_path_and_clean_labels_are_unknown(tmp_path):
    image_folders.make_image_folder(str(tmp_path), per_class=6, nested=True)
    data = _load(tmp_path)
    keys = [os.path.relpath(p, tmp_path).replace(os.sep, "/") for p in data.noisy.paths]
    assert keys == sorted(keys)
    np.testing.assert_array_equal(data.noisy.index, np.arange(len(keys)))
    assert np.all(data.noisy.clean_labels == dataset.UNKNOWN_LABEL)
    np.testing.assert_array_equal(data.clean_test.clean_labels, data.clean_test.labels)
    clean = _load(tmp_path, labels_are_clean=True)
    np.testing.assert_array_equal(clean.noisy.clean_labels, clean.noisy.labels)
    assert len(data.clean_train) == len(data.clean_val) == 0 and data.name == "folder"


def test_the_test_split_is_each_class_share_by_a_hash_of_the_path(tmp_path):
    counts = {"cat": 11, "dog": 7, "fox": 2}
    for name, n in counts.items():
        image_folders.make_image_folder(str(tmp_path), classes=(name,), per_class=n,
                                        hidden=False)
    data = _load(tmp_path, test_fraction=0.25)
    test = {os.path.relpath(p, tmp_path) for p in data.clean_test.paths}
    train = {os.path.relpath(p, tmp_path) for p in data.noisy.paths}
    assert not test & train and len(test | train) == sum(counts.values())
    for name, n in counts.items():
        keys = sorted(k for k in test | train if k.startswith(name + "/"))
        # Independently: the round(0.25 n) keys of lowest blake2b("0:<key>"), >= 1.
        score = {k: int.from_bytes(hashlib.blake2b(f"0:{k}".encode(), digest_size=8).digest(),
                                   "big") for k in keys}
        expected = set(sorted(keys, key=score.get)[:max(1, round(0.25 * n))])
        assert {k for k in test if k.startswith(name + "/")} == expected
    # The same split on every load, and whatever the other classes hold.
    again = _load(tmp_path, test_fraction=0.25)
    np.testing.assert_array_equal(again.clean_test.paths, data.clean_test.paths)


def test_split_rows_leave_a_single_image_in_training():
    keys = np.array(["a/1.png", "b/1.png", "b/2.png", "b/3.png"])
    rows = folder.split_rows(keys, np.array([0, 1, 1, 1]), 0.9)
    assert len(rows) == 2 and set(rows) <= {1, 2, 3}  # at most n - 1 of b, none of a


def test_train_and_test_folders_are_used_when_both_exist(tmp_path):
    written = image_folders.make_image_folder(str(tmp_path), per_class=6, split=True)
    data = _load(tmp_path)
    train = {os.path.relpath(p, tmp_path) for p in data.noisy.paths}
    test = {os.path.relpath(p, tmp_path) for p in data.clean_test.paths}
    assert train == {k for k in written if k.startswith("train/")}
    assert test == {k for k in written if k.startswith("test/")}
    assert data.class_names == ("cat", "dog", "fox")


def test_class_names_file_sets_the_labels_and_may_name_absent_classes(tmp_path):
    image_folders.make_image_folder(str(tmp_path / "photos"), classes=("dog", "cat"),
                                    per_class=4)
    names = tmp_path / "names.txt"
    names.write_text("emu\ndog\ncat\n\n")
    data = _load(tmp_path / "photos", class_names=dataset.read_class_names(str(names)))
    assert data.class_names == ("emu", "dog", "cat") and data.num_classes == 3
    for split in (data.noisy, data.clean_test):
        for path, label in zip(split.paths, split.labels):
            assert os.path.basename(os.path.dirname(path)) == data.class_names[label]


@pytest.mark.parametrize("text, message", [
    ("a\n\nb\n", "line 2: blank"), ("a\nb\na\n", "'a' is already class 0"),
    ("only\n", "1 class name(s); need at least 2")])
def test_bad_class_names_files(tmp_path, text, message):
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(dataset.DataError, match=re.escape(message)):
        dataset.read_class_names(str(path))


def test_a_corrupt_image_stops_or_is_left_out_and_rows_are_renumbered(tmp_path):
    image_folders.make_image_folder(str(tmp_path), per_class=6, corrupt=("dog", 3))
    bad = str(tmp_path / "dog" / "img003.jpg")
    with pytest.raises(dataset.DataError, match="damaged image file") as refused:
        _load(tmp_path)
    assert bad in str(refused.value) and "\n" not in str(refused.value)
    data = _load(tmp_path, skip_bad_images=True)
    assert [e.path for e in data.excluded] == [bad]
    everything = set(data.noisy.paths) | set(data.clean_test.paths)
    assert bad not in everything and len(everything) == 17
    np.testing.assert_array_equal(data.noisy.index, np.arange(len(data.noisy)))


def test_empty_class_folder_and_missing_folder_are_one_line_errors(tmp_path):
    image_folders.make_image_folder(str(tmp_path / "photos"), per_class=3)
    (tmp_path / "photos" / "emu").mkdir()
    (tmp_path / "photos" / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(dataset.DataError, match="class folder 'emu' has no images"):
        _load(tmp_path / "photos")
    with pytest.raises(dataset.DataError, match="image folder not found"):
        _load(tmp_path / "nowhere")


def test_a_folder_of_one_class_is_refused(tmp_path):
    image_folders.make_image_folder(str(tmp_path / "photos"), classes=("cat",), per_class=26)
    with pytest.raises(dataset.DataError, match="images of one class only \\('cat'\\)"):
        _load(tmp_path / "photos")
    # A class names file naming more classes does not add images of them.
    with pytest.raises(dataset.DataError, match="images of one class only"):
        _load(tmp_path / "photos", class_names=("cat", "dog"))


@pytest.mark.parametrize("test_fraction, val_fraction, expected", [
    (0.2, 0.1, 6),    # test 1, then 5 of which 0.1 rounds to 1 held out
    (0.2, 0.0, 2),    # test 1, training 1
    (None, 0.1, 5),   # a test/ folder of its own: 5 training images, 1 validates
    (None, 0.0, 1),
    (0.5, 0.5, 4),    # 3: test round(1.5) = 2, 1 left; 4: test 2, then 1 validates, 1 trains
    (0.5, 0.05, 20),  # training needs 10 (0.05 · 10 rounds to 1); test takes 10 of 20
])
def test_min_class_images_is_the_fewest_the_splits_divide(test_fraction, val_fraction,
                                                          expected):
    assert folder.min_class_images(test_fraction, val_fraction) == expected
    for n in range(1, 60):  # whether n images split: what the splits themselves do
        train = n - (folder.n_test(n, test_fraction) if test_fraction else 0)
        splits = (not test_fraction or folder.n_test(n, test_fraction) >= 1) and train >= 1
        if splits and val_fraction:
            try:
                holdout.validation_rows(np.zeros(train, np.int64), val_fraction, seed=0)
            except dataset.DataError:
                splits = False
        assert splits == (n >= folder.min_class_images(test_fraction, val_fraction)), n


def test_a_class_too_small_to_split_names_the_minimum(tmp_path):
    image_folders.make_image_folder(str(tmp_path / "photos"), per_class=6)
    for name in ("img003.jpg", "img004.png", "img005.jpg"):
        (tmp_path / "photos" / "fox" / name).unlink()
    _load(tmp_path / "photos")  # 3 images: test 1, training 2 without validation
    message = (r"fox: class folder 'fox' has 3 image\(s\); a class needs at least 6 so that "
               r"the training, validation \(--val_fraction=0.1\) and test "
               r"\(--test_fraction=0.2\) splits each get one")
    with pytest.raises(dataset.DataError, match=message):
        _load(tmp_path / "photos", val_fraction=0.1)


def test_npz_stray_label_names_the_odd_labels():
    labels = np.array([0, 1, 2, 3, 99, 1, 0])
    with pytest.raises(dataset.DataError, match=r"use only 5 of the 100 classes 0\.\.99 "
                                                r".*odd labels: 99\)"):
        sources.check_label_range(labels, "x.npz")
    sources.check_label_range(np.array([0, 2, 3, -1]), "x.npz")  # 3 of 4 used: fine


def test_bmp_and_gif_are_images_and_a_truncated_gif_is_bad(tmp_path):
    import tensorflow as tf
    image_folders.make_image_folder(str(tmp_path), per_class=3, hidden=False)
    rng = np.random.default_rng(0)
    for name, fmt in (("a.BMP", "BMP"), ("b.gif", "GIF")):
        (tmp_path / "cat" / name).write_bytes(
            image_folders.image_bytes(rng, (90, 90, 90), (20, 30), "RGB", fmt))
    data = _load(tmp_path)
    listed = {os.path.basename(p) for p in [*data.noisy.paths, *data.clean_test.paths]}
    assert {"a.BMP", "b.gif"} <= listed
    for name in ("a.BMP", "b.gif"):  # what training will decode them to
        image = tf.io.decode_image((tmp_path / "cat" / name).read_bytes(), channels=3,
                                   expand_animations=False)
        assert image.shape == (20, 30, 3)
    gif = (tmp_path / "cat" / "b.gif").read_bytes()
    (tmp_path / "cat" / "b.gif").write_bytes(gif[:len(gif) // 3])
    with pytest.raises(dataset.DataError, match="b.gif"):
        _load(tmp_path)
