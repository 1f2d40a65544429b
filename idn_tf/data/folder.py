"""Your own images: a folder with one subfolder per class, streamed from disk.

The layout `keras.utils.image_dataset_from_directory` reads:

    DIR/<class name>/<image>            one subfolder per class (images may sit in
                                        deeper subfolders of it)
    DIR/train/<class name>/<image>      or a training and a test folder, used when both
    DIR/test/<class name>/<image>       DIR/train and DIR/test exist

Images are the files ending in .jpg, .jpeg, .png, .bmp or .gif (any case, as Keras
takes them); files and folders whose name starts with "." are ignored, and so are other
files. Class names are the subfolder names sorted as Python sorts strings (Keras's
order), or the lines of a `class_names` file, which fixes K and the label of each name
(a subfolder then must be one of its names; classes without a subfolder are allowed).

Without DIR/test, a fixed stratified `test_fraction` of each class becomes the test split
(`split_rows`: chosen by a hash of the file's relative path, not by the run seed, so every
run of every method tests on the same images).

A folder that cannot be learned from is refused before its images are checked: fewer
than two class folders with images, or a class folder too small to give each split an
image (`min_class_images`: the test split, the validation split the run will hold out
at `val_fraction`, and training).

`index` of a training image (its row in the η and ψ tables, and in label_audit.csv) is
its position among the training images sorted by relative path (after the images
`skip_bad_images` leaves out). Images of any size and mode are decoded, resized and
cropped by the streaming pipeline (streaming.py); the check before training is
imagefiles.scan's.

The folder's labels are the observed labels. With `labels_are_clean` (a run that adds
synthetic noise to them) they are also taken as the clean labels; otherwise the clean
training labels are unknown (-1). Test labels are taken as correct either way for the test
accuracy; being the user's own (`own_test_labels`), the label audit checks them too.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from idn_tf.data import holdout
from idn_tf.data.dataset import (UNKNOWN_LABEL, DataError, ExcludedImage, FileDataset,
                                 FileSplit, empty_file_split)
from idn_tf.data.imagefiles import CHECKS, FORMATS, key_scores, scan

# keras.utils.image_dataset_from_directory's ALLOWLIST_FORMATS.
EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the test split's hash seed: fixed, not the run's --seed


def load_folder(data_dir: str, class_names: tuple[str, ...] | None = None,
                test_fraction: float = TEST_FRACTION, labels_are_clean: bool = False,
                skip_bad_images: bool = False, check: str = "header",
                num_threads: int | None = None, verbose: bool = True,
                val_fraction: float = 0.0) -> FileDataset:
    """Reads and checks a class folder (layout in the module docstring).

    Parameters
    ----------
    class_names : tuple of str, optional
        The classes in label order (a --class_names file's lines); None = the subfolders.
    test_fraction : float in (0, 1)
        Share of each class held out as the test split when there is no DIR/test.
    labels_are_clean : bool
        Take the folder's training labels as clean (synthetic noise will be added).
    skip_bad_images, check, num_threads, verbose : as clothing1m.load_clothing1m.
    val_fraction : float in [0, 0.5]
        Share of each class's training images the run will hold out for validation
        (`holdout.validation_rows`); it sets, with `test_fraction`, how many images a
        class folder needs (`min_class_images`).

    Raises
    ------
    DataError
        One line: no such folder, no class subfolder, an empty class folder, a subfolder
        not in `class_names`, a test class the training folder lacks, fewer than two
        classes, a class with too few images to split, a bad image (without
        `skip_bad_images`), or no image left in a split.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    root = os.path.abspath(data_dir)
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    own_test = all(os.path.isdir(os.path.join(root, name)) for name in ("train", "test"))
    if own_test:
        train = _list_images(root, "train")
        test = _list_images(root, "test")
        names = class_names or tuple(sorted(train))
        strays = sorted(set(test) - set(train))
        if strays and class_names is None:
            raise DataError(f"{os.path.join(root, 'test', strays[0])}: class {strays[0]!r} "
                            f"has no folder in {os.path.join(root, 'train')}")
    else:
        train, test = _list_images(root, ""), None
        names = class_names or tuple(sorted(train))
    label_of = _labels_of(names, list(train) + list(test or ()), root, class_names is not None)
    _check_classes(train, os.path.join(root, "train") if own_test else root,
                   None if own_test else test_fraction, val_fraction)
    train_keys, train_labels = _keys_and_labels(train, label_of)
    if test is None:
        test_rows = split_rows(train_keys, train_labels, test_fraction)
        held = np.zeros(len(train_keys), bool)
        held[test_rows] = True
        test_keys, test_labels = train_keys[held], train_labels[held]
        train_keys, train_labels = train_keys[~held], train_labels[~held]
    else:
        test_keys, test_labels = _keys_and_labels(test, label_of)

    listings = [(os.path.join(root, key), os.path.dirname(os.path.join(root, key)), None)
                for key in list(train_keys) + list(test_keys)]
    bad = scan(listings, check, num_threads, skip_bad_images, verbose, source="folder",
               formats=FORMATS)
    excluded = tuple(ExcludedImage(path, where, bad[path]) for path, where, _ in listings
                     if path in bad)
    splits = {}
    for split, keys, labels in (("train", train_keys, train_labels),
                                ("test", test_keys, test_labels)):
        keep = np.array([os.path.join(root, key) not in bad for key in keys], bool)
        if not keep.any():
            raise DataError(f"{root}: no {split} images" + (" left after leaving out the bad "
                                                           "ones" if len(keys) else ""))
        keys, labels = keys[keep], labels[keep]
        clean = labels if (split == "test" or labels_are_clean) else \
            np.full(len(labels), UNKNOWN_LABEL, np.int64)
        splits[split] = FileSplit(
            paths=np.array([os.path.join(root, key) for key in keys], dtype=str),
            labels=labels, clean_labels=clean, index=np.arange(len(keys), dtype=np.int64))
    data = FileDataset(noisy=splits["train"], clean_train=empty_file_split(),
                       clean_val=empty_file_split(), clean_test=splits["test"],
                       class_names=tuple(names), excluded=excluded, name="folder",
                       own_test_labels=True)
    if verbose:
        _print_summary(data, root, own_test, test_fraction)
    return data


def file_identity(relative_path: str, class_name: str) -> str:
    """An image's name within its class: `relative_path` ("/"-separated, relative to the
    data folder) without its class folder ("cat/a.jpg" -> "a.jpg", "train/cat/x/a.jpg" ->
    "train/x/a.jpg"), so that moving a file to another class keeps its identity."""
    parts = relative_path.split("/")
    if class_name in parts[:-1]:
        parts.remove(class_name)
    return "/".join(parts)


def changes(before, after):
    """What changed between two listings of a folder, each a list of (identity, class
    name) pairs (`file_identity`; class folders often reuse file names, so an identity may
    appear under several classes): (changed class [(identity, old, new)], added
    [identity], removed [identity]), sorted. Per identity, a class it left and a class it
    joined pair up as a change of class; the rest are added or removed files."""
    import collections
    was, now = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
    for key, name in before:
        was[key][name] += 1
    for key, name in after:
        now[key][name] += 1
    moved, added, removed = [], [], []
    for key in sorted(was.keys() | now.keys()):
        left = sorted((was[key] - now[key]).elements())
        joined = sorted((now[key] - was[key]).elements())
        pairs = min(len(left), len(joined))
        moved += [(key, old, new) for old, new in zip(left[:pairs], joined[:pairs])]
        removed += [key] * (len(left) - pairs)
        added += [key] * (len(joined) - pairs)
    return moved, added, removed


def changes_text(moved, added, removed):
    """"N images changed class, M added, K removed (e.g. …)" of `changes`."""
    text = (f"{len(moved)} image{'s' if len(moved) != 1 else ''} changed class, "
            f"{len(added)} added, {len(removed)} removed")
    examples = ([f"{k}: {old} -> {new}" for k, old, new in moved[:2]]
                + [f"{k} added" for k in added[:1]] + [f"{k} removed" for k in removed[:1]])
    return text + (f" (e.g. {'; '.join(examples)})" if examples else "")


def split_rows(keys: np.ndarray, labels: np.ndarray, fraction: float) -> np.ndarray:
    """Rows (sorted, int64) of the stratified test split of images `keys` [N] with `labels`.

    Of each class's n images, the round(fraction * n) with the lowest `key_scores`
    (seed SPLIT_SEED) are taken, at least 1 and at most n - 1 when n >= 2, none when
    n = 1. The split depends on the relative paths alone: adding images to a class moves
    no other image between the splits unless it changes that class's count.
    """
    scores = key_scores(list(keys), SPLIT_SEED)
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = n_test(len(members), fraction)
        rows.extend(members[np.argsort(scores[members], kind="stable")[:count]])
    return np.sort(np.asarray(rows, np.int64))


def n_test(n: int, fraction: float) -> int:
    """How many of a class's `n` images `split_rows` takes for the test split."""
    return 0 if n < 2 else min(n - 1, max(1, int(round(fraction * n))))


def min_class_images(test_fraction: float | None, val_fraction: float) -> int:
    """The fewest images a class folder needs so that the test split (`split_rows` at
    `test_fraction`; None: the folder has a test/ of its own), the validation split
    (`holdout.validation_rows` at `val_fraction`, of the images left) and training each
    get one or more."""
    train = holdout.min_class_size(val_fraction)
    if test_fraction is None:
        return train
    n = train + 1  # n - n_test(n) grows with n
    while n - n_test(n, test_fraction) < train:
        n += 1
    return n


def _list_images(root: str, split: str) -> dict[str, list[str]]:
    """{class folder name: sorted relative paths (to `root`, "/"-separated) of its images}
    for the class folders of root/split."""
    top = os.path.join(root, split)
    folders = sorted(name for name in os.listdir(top)
                     if not name.startswith(".") and os.path.isdir(os.path.join(top, name)))
    if not folders:
        raise DataError(f"{top}: no class folders (expected {top}{os.sep}<class name>"
                        f"{os.sep}<image>, one folder per class)")
    images = {}
    for name in folders:
        keys = []
        for directory, subfolders, files in os.walk(os.path.join(top, name)):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            relative = os.path.relpath(directory, root).replace(os.sep, "/")
            keys.extend(f"{relative}/{file}" for file in files
                        if not file.startswith(".") and file.lower().endswith(EXTENSIONS))
        if not keys:
            raise DataError(f"{os.path.join(top, name)}: class folder {name!r} has no images "
                            f"({', '.join(EXTENSIONS)}); add images or remove the folder")
        images[name] = sorted(keys)
    return images


def _check_classes(images, top, test_fraction, val_fraction) -> None:
    """DataError unless the {class folder: images} listing of `top` holds two or more
    classes, each with `min_class_images` or more images."""
    if len(images) < 2:
        raise DataError(f"{top}: images of one class only ({next(iter(images))!r}); a "
                        "classifier needs two or more classes, one subfolder of images each")
    minimum = min_class_images(test_fraction, val_fraction)
    name, keys = min(images.items(), key=lambda item: len(item[1]))
    if len(keys) < minimum:
        splits = ["training"]
        if val_fraction:
            splits.append(f"validation (--val_fraction={val_fraction:g})")
        if test_fraction is not None:
            splits.append(f"test (--test_fraction={test_fraction:g})")
        raise DataError(f"{os.path.join(top, name)}: class folder {name!r} has {len(keys)} "
                        f"image(s); a class needs at least {minimum} so that the "
                        f"{', '.join(splits[:-1])} and {splits[-1]} splits each get one; add "
                        "images, or remove the folder")


def _labels_of(names, folders, root, given) -> dict[str, int]:
    """{class folder name: label}; with `given` class names, every folder must be one."""
    label_of = {name: label for label, name in enumerate(names)}
    for folder in folders:
        if folder not in label_of:
            raise DataError(f"{root}: class folder {folder!r} is not in --class_names "
                            f"({len(names)} names: {', '.join(names[:5])}"
                            f"{', …' if len(names) > 5 else ''})")
    return label_of


def _keys_and_labels(images, label_of):
    """(relative paths sorted, their labels) of a {class folder: keys} listing."""
    pairs = sorted((key, label_of[name]) for name, keys in images.items() for key in keys)
    keys = np.array([key for key, _ in pairs], dtype=str)
    return keys, np.array([label for _, label in pairs], dtype=np.int64)


def _print_summary(data: FileDataset, root: str, own_test: bool, fraction: float) -> None:
    counts = np.bincount(data.noisy.labels, minlength=data.num_classes)
    where = (os.path.join(root, "test") if own_test
             else f"a fixed stratified {fraction:.0%} of each class")
    print(f"folder: {len(data.noisy):,} training images in {data.num_classes} classes "
          f"({counts.min():,}-{counts.max():,} per class); {len(data.clean_test):,} test "
          f"images ({where})", file=sys.stderr)
    if data.excluded:
        print(f"folder: left out {len(data.excluded):,} bad image(s), e.g. "
              f"{data.excluded[0].reason}: {data.excluded[0].path}", file=sys.stderr)
