"""Tests for idn_tf.data.clothing1m: the Clothing1M folder reader and its checks.

Expected values come from reading the fake folder's list files here, with a parser of
the tests' own, not from the module under test.
"""

import hashlib
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from idn_tf.data import clothing1m
from idn_tf.data.sources import DataError

LISTS = {"noisy": "noisy_train_key_list.txt", "clean_train": "clean_train_key_list.txt",
         "clean_val": "clean_val_key_list.txt", "clean_test": "clean_test_key_list.txt"}
SMALL = {"noisy": 8, "clean_train": 3, "clean_val": 2, "clean_test": 2}


def _keys(root, name):
    with open(os.path.join(root, name), encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]


def _kv(root, name):
    pairs = (line.split() for line in _keys(root, name))
    return {key: int(label) for key, label in pairs}


def _line_of(root, name, key):
    """Line number of `key` (the first field) in a list or kv file without blank lines."""
    return [line.split()[0] for line in _keys(root, name)].index(key) + 1


def _set_line(root, name, number, text):
    lines = _keys(root, name)
    lines[number - 1] = text
    with open(os.path.join(root, name), "w", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in lines)


def _load(root, **kwargs):
    return clothing1m.load_clothing1m(str(root), verbose=False, **kwargs)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return clothing1m.make_fake_clothing1m(str(tmp_path_factory.mktemp("clothing1m")), seed=3)


@pytest.fixture(scope="module")
def data(fake):
    return _load(fake.root)


@pytest.fixture
def small(tmp_path):
    """A fresh tiny folder (15 images, overlap 1) for tests that damage it."""
    return clothing1m.make_fake_clothing1m(str(tmp_path / "c1m"), counts=SMALL, overlap=1,
                                           seed=5)


# ---------------------------------------------------------------------------------------
# reading


def test_counts_labels_and_paths(fake, data):
    noisy_kv, clean_kv = _kv(fake.root, "noisy_label_kv.txt"), _kv(fake.root,
                                                                   "clean_label_kv.txt")
    assert data.class_names == ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie",
                                "Windbreaker", "Jacket", "Downcoat", "Suit", "Shawl", "Dress",
                                "Vest", "Underwear")
    assert data.num_classes == 14 and data.excluded == ()
    for split, name in LISTS.items():
        keys = _keys(fake.root, name)
        loaded = getattr(data, split)
        assert len(loaded) == len(keys) == {"noisy": 24, "clean_train": 6, "clean_val": 4,
                                            "clean_test": 4}[split]
        assert list(loaded.paths) == [os.path.join(fake.root, key) for key in keys]
        assert all(os.path.isabs(path) and os.path.isfile(path) for path in loaded.paths)
        kv = noisy_kv if split == "noisy" else clean_kv
        np.testing.assert_array_equal(loaded.labels, [kv[key] for key in keys])
        for name_, array in (("labels", loaded.labels), ("clean_labels", loaded.clean_labels),
                             ("index", loaded.index)):
            assert array.dtype == np.int64, name_
        if split != "noisy":
            np.testing.assert_array_equal(loaded.clean_labels, loaded.labels)
    # The fake flips ~40% of labels: the noisy labels are not simply the clean ones.
    assert any(noisy_kv[key] != clean_kv[key] for key in clean_kv)


def test_noisy_clean_labels_come_from_the_overlap(fake, data):
    clean_kv = _kv(fake.root, "clean_label_kv.txt")
    keys = _keys(fake.root, LISTS["noisy"])
    np.testing.assert_array_equal(data.noisy.clean_labels, [clean_kv.get(k, -1) for k in keys])
    # The overlap: the last 3 noisy images, which head the clean training list.
    overlap = [k for k in keys if k in clean_kv]
    assert overlap == keys[-3:] == _keys(fake.root, LISTS["clean_train"])[:3]
    assert (data.noisy.clean_labels[:-3] == -1).all() and (data.noisy.clean_labels[-3:] >= 0).all()


def test_grayscale_and_cmyk_jpegs_are_accepted(fake, data):
    with Image.open(os.path.join(fake.root, fake.grayscale_key)) as image:
        assert image.mode == "L"
    with Image.open(os.path.join(fake.root, fake.cmyk_key)) as image:
        assert image.mode == "CMYK"
    assert os.path.join(fake.root, fake.cmyk_key) in data.noisy.paths
    assert len(_load(fake.root, check="decode").noisy) == 24


def test_index_is_key_list_order_whatever_the_kv_order(fake, data, tmp_path):
    for split in LISTS:
        loaded = getattr(data, split)
        np.testing.assert_array_equal(loaded.index, np.arange(len(loaded)))
    # A copy with the kv files reversed, blank lines and CRLF endings reads the same.
    copy = shutil.copytree(fake.root, tmp_path / "copy")
    for name in ("noisy_label_kv.txt", "clean_label_kv.txt"):
        lines = _keys(copy, name)[::-1]
        (copy / name).write_bytes(b"\r\n".join(line.encode() for line in lines) + b"\r\n\n\n")
    again = _load(copy)
    for split in LISTS:
        before, after = getattr(data, split), getattr(again, split)
        assert [os.path.relpath(p, fake.root) for p in before.paths] == \
               [os.path.relpath(p, copy) for p in after.paths]
        for name in ("labels", "clean_labels", "index"):
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name))


def test_png_is_accepted(small):
    key = _keys(small.root, LISTS["noisy"])[3]
    Image.new("RGB", (9, 7), (1, 2, 3)).save(os.path.join(small.root, key), "PNG")
    for check in ("header", "decode"):
        assert len(_load(small.root, check=check).noisy) == 8


# ---------------------------------------------------------------------------------------
# subset


def test_subset_is_seeded_sized_and_in_list_order(fake, data):
    half = _load(fake.root, subset_fraction=0.5, subset_seed=1)
    again = _load(fake.root, subset_fraction=0.5, subset_seed=1)
    other = _load(fake.root, subset_fraction=0.5, subset_seed=2)
    quarter = _load(fake.root, subset_fraction=0.25, subset_seed=1)
    assert len(half.noisy) == 12 and len(quarter.noisy) == 6
    np.testing.assert_array_equal(half.noisy.paths, again.noisy.paths)
    assert list(half.noisy.paths) != list(other.noisy.paths)
    rows = np.array([list(data.noisy.paths).index(p) for p in half.noisy.paths])
    assert (np.diff(rows) > 0).all()  # list order kept
    np.testing.assert_array_equal(half.noisy.index, np.arange(12))  # renumbered
    np.testing.assert_array_equal(half.noisy.labels, data.noisy.labels[rows])
    np.testing.assert_array_equal(half.noisy.clean_labels, data.noisy.clean_labels[rows])
    assert set(quarter.noisy.paths) <= set(half.noisy.paths)  # nested for one seed
    for split in ("clean_train", "clean_val", "clean_test"):  # the clean splits stay whole
        np.testing.assert_array_equal(getattr(half, split).paths, getattr(data, split).paths)


def test_subset_rows_matches_its_definition():
    keys = [f"images/{i}.jpg" for i in range(10)]
    scores = [hashlib.blake2b(f"7:{key}".encode(), digest_size=8).digest() for key in keys]
    expected = sorted(sorted(range(10), key=lambda row: scores[row])[:3])
    np.testing.assert_array_equal(clothing1m.subset_rows(keys, 0.3, 7), expected)
    assert len(clothing1m.subset_rows(keys, 0.01, 7)) == 1  # at least one row


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_subset_fraction_outside_0_1_is_refused(fake, fraction):
    with pytest.raises(ValueError, match="subset_fraction"):
        _load(fake.root, subset_fraction=fraction)


def test_subset_is_drawn_before_bad_images_are_left_out(small):
    keys = _keys(small.root, LISTS["noisy"])
    rows = clothing1m.subset_rows(keys, 0.5, 4)
    os.remove(os.path.join(small.root, keys[rows[1]]))
    loaded = _load(small.root, subset_fraction=0.5, subset_seed=4, skip_bad_images=True)
    assert list(loaded.noisy.paths) == [os.path.join(small.root, keys[r]) for r in rows
                                        if r != rows[1]]
    np.testing.assert_array_equal(loaded.noisy.index, np.arange(len(rows) - 1))


# ---------------------------------------------------------------------------------------
# bad input: one DataError naming the file and line


def _noisy_key(root, line):
    return _keys(root, LISTS["noisy"])[line - 1]


def _image(root, list_name, line):
    return os.path.join(root, _keys(root, list_name)[line - 1])


def _truncate(path):
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[:len(data) * 2 // 3])


def _write(path, data):
    with open(path, "wb") as file:
        file.write(data)


def _gif():
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, "GIF")
    return buffer.getvalue()


def _replace_image_by_folder(path):
    os.remove(path)
    os.mkdir(path)


def _label_line(label):
    """Sets the noisy label of noisy line 4's key in noisy_label_kv.txt to `label`."""
    def damage(root):
        key = _noisy_key(root, 4)
        line = _line_of(root, "noisy_label_kv.txt", key)
        _set_line(root, "noisy_label_kv.txt", line, f"{key} {label}")
        return "noisy_label_kv.txt", line
    return damage


def _drop_label(kv_name, list_name, line):
    def damage(root):
        key = _keys(root, list_name)[line - 1]
        kv_line = _line_of(root, kv_name, key)
        _set_line(root, kv_name, kv_line, "")  # a blank line: skipped, numbers unchanged
        return list_name, line
    return damage


def _damage_image(list_name, line, action):
    def damage(root):
        action(_image(root, list_name, line))
        return list_name, line
    return damage


def _set_list_line(name, line, text):
    def damage(root):
        _set_line(root, name, line, text(root) if callable(text) else text)
        return name, line
    return damage


def _other_label_of_line_1(root):
    """noisy_label_kv.txt's first key with a different label."""
    key, label = _keys(root, "noisy_label_kv.txt")[0].split()
    return f"{key} {(int(label) + 1) % 14}"


def _non_utf8_line_2(root):
    path = os.path.join(root, LISTS["clean_train"])
    first = _keys(root, LISTS["clean_train"])[0]
    _write(path, first.encode() + b"\nimages/\xff.jpg\n")
    return LISTS["clean_train"], 2


BAD = {  # case -> (damage(root) -> (file name, line), words in the message)
    "image missing": (_damage_image(LISTS["noisy"], 4, os.remove), "image file not found"),
    "clean image missing": (_damage_image(LISTS["clean_val"], 2, os.remove),
                            "image file not found"),
    "truncated jpeg": (_damage_image(LISTS["noisy"], 5, _truncate), "damaged image file"),
    "truncated cmyk jpeg": (_damage_image(LISTS["noisy"], 2, _truncate), "damaged image file"),
    "garbage bytes": (_damage_image(LISTS["noisy"], 3, lambda p: _write(p, b"not an image")),
                      "not a JPEG or PNG image"),
    "gif": (_damage_image(LISTS["noisy"], 3, lambda p: _write(p, _gif())),
            "not a JPEG or PNG image"),
    "empty file": (_damage_image(LISTS["clean_test"], 1, lambda p: _write(p, b"")),
                   "empty image file"),
    "folder, not a file": (_damage_image(LISTS["noisy"], 6, _replace_image_by_folder),
                           "not a regular file"),
    "label 14": (_label_line("14"), "label 14 is outside 0..13"),
    "label -1": (_label_line("-1"), "label -1 is outside 0..13"),
    "label word": (_label_line("shirt"), "label 'shirt' is not an integer"),
    "label float": (_label_line("3.0"), "label '3.0' is not an integer"),
    "label 1_0": (_label_line("1_0"), "label '1_0' is not an integer"),
    "kv line without label": (_set_list_line("clean_label_kv.txt", 2, "images/x.jpg"),
                              "expected 'path label'"),
    "kv line with 3 fields": (_set_list_line("noisy_label_kv.txt", 3, "images/x.jpg 1 2"),
                              "expected 'path label'"),
    "conflicting kv duplicate": (_set_list_line("noisy_label_kv.txt", 2, _other_label_of_line_1),
                                 "on an earlier line"),
    "noisy key without noisy label": (_drop_label("noisy_label_kv.txt", LISTS["noisy"], 6),
                                      "has no label in noisy_label_kv.txt"),
    "clean key without clean label": (_drop_label("clean_label_kv.txt", LISTS["clean_test"], 2),
                                      "has no label in clean_label_kv.txt"),
    "key listed twice": (_set_list_line(LISTS["noisy"], 7, lambda root: _noisy_key(root, 2)),
                         "already listed on line 2"),
    "key list line with a label": (_set_list_line(LISTS["clean_val"], 1, "images/a.jpg 3"),
                                   "expected one image path"),
    "not utf-8": (_non_utf8_line_2, "not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file_and_line(small, case):
    damage, words = BAD[case]
    name, line = damage(small.root)
    with pytest.raises(DataError) as error:
        _load(small.root)
    message = str(error.value)
    assert f"{os.path.join(small.root, name)}, line {line}: " in message, message
    assert words in message and "\n" not in message


@pytest.mark.parametrize("name", ["noisy_label_kv.txt", "clean_label_kv.txt", *LISTS.values()])
def test_missing_list_file_is_named(small, name):
    os.remove(os.path.join(small.root, name))
    with pytest.raises(DataError, match=f"Clothing1M file not found: .*{name}"):
        _load(small.root)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=f"Clothing1M folder not found: {tmp_path / 'none'}"):
        _load(tmp_path / "none")


def test_decode_check_finds_the_damage_too_and_exists_check_does_not(small):
    _truncate(_image(small.root, LISTS["noisy"], 5))
    with pytest.raises(DataError, match=r"noisy_train_key_list.txt, line 5: damaged"):
        _load(small.root, check="decode")
    assert len(_load(small.root, check="exists").noisy) == 8


def test_the_first_bad_image_in_list_order_is_reported(small):
    for line in (6, 3):
        os.remove(_image(small.root, LISTS["noisy"], line))
    with pytest.raises(DataError, match=r"noisy_train_key_list.txt, line 3: "):
        _load(small.root, num_threads=4)


def test_trailing_bytes_after_the_jpeg_end_marker_are_accepted(small):
    path = _image(small.root, LISTS["noisy"], 4)
    with open(path, "ab") as file:
        file.write(b"trailing data")
    assert len(_load(small.root).noisy) == 8


# ---------------------------------------------------------------------------------------
# skip_bad_images


def test_skip_bad_images_leaves_them_out_and_renumbers(tmp_path, capsys):
    fake = clothing1m.make_fake_clothing1m(str(tmp_path), counts=SMALL, overlap=1, seed=5,
                                           corrupt=True)
    root = fake.root
    noisy_keys = _keys(root, LISTS["noisy"])
    corrupt_line = noisy_keys.index(fake.corrupt_key) + 1
    os.remove(_image(root, LISTS["noisy"], 3))
    os.remove(_image(root, LISTS["noisy"], 8))  # the overlap image: also clean_train line 1
    os.remove(_image(root, LISTS["clean_val"], 2))
    loaded = clothing1m.load_clothing1m(root, skip_bad_images=True)

    def at(name, line):
        return f"{os.path.join(root, name)}, line {line}"

    expected = [(at(LISTS["noisy"], 3), "image file not found"),
                (at(LISTS["noisy"], corrupt_line), "damaged image file"),
                (at(LISTS["noisy"], 8), "image file not found"),
                (at(LISTS["clean_train"], 1), "image file not found"),
                (at(LISTS["clean_val"], 2), "image file not found")]
    assert [(e.listed_at, e.reason.split(" (")[0]) for e in loaded.excluded] == expected
    assert loaded.excluded[0].path == os.path.join(root, noisy_keys[2])
    kept = [k for line, k in enumerate(noisy_keys, 1) if line not in (3, corrupt_line, 8)]
    assert list(loaded.noisy.paths) == [os.path.join(root, k) for k in kept]
    np.testing.assert_array_equal(loaded.noisy.index, np.arange(5))
    noisy_kv = _kv(root, "noisy_label_kv.txt")
    np.testing.assert_array_equal(loaded.noisy.labels, [noisy_kv[k] for k in kept])
    assert (loaded.noisy.clean_labels == -1).all()  # the one overlap image was left out
    assert (len(loaded.clean_train), len(loaded.clean_val), len(loaded.clean_test)) == (2, 1, 2)
    err = capsys.readouterr().err
    assert "checked 14/14 images (100%), 4 bad" in err
    assert "left out 5 bad image listing(s)" in err


def test_file_split_checks_its_arrays():
    good = dict(paths=np.array(["/a.jpg"]), labels=np.zeros(1, np.int64),
                clean_labels=np.zeros(1, np.int64), index=np.zeros(1, np.int64))
    assert len(clothing1m.FileSplit(**good)) == 1
    with pytest.raises(ValueError, match="labels must be int64"):
        clothing1m.FileSplit(**{**good, "labels": np.zeros(1, np.int32)})
    with pytest.raises(ValueError, match="paths must be a str array"):
        clothing1m.FileSplit(**{**good, "paths": np.array([b"/a.jpg"])})
