"""Clothing1M (the paper's real-noise experiment): reads the standard folder into file lists.

The data (~1M JPEGs) does not fit in memory, so this source returns paths and labels, not
pixels; a streaming tf.data pipeline reads the images. Layout of `data_dir` (docs/method.md §4):

    images/…                    image files; list entries are paths relative to data_dir
    noisy_label_kv.txt          "images/0/12/123.jpg 5" lines: noisy (web) labels
    clean_label_kv.txt          the same for human-checked labels
    noisy_train_key_list.txt    "images/0/12/123.jpg" lines: the noisy training set
    clean_{train,val,test}_key_list.txt   the clean splits

`index` of a noisy example (its row in the η and ψ tables) is its position in
noisy_train_key_list.txt, counting only the lines kept: the optional subset
(`subset_fraction`) and the images left out by `skip_bad_images` are dropped first, then
the remaining lines are numbered 0..N-1 in file order. It never depends on file-system
order or on the order of the kv files. A clean split's `index` is its row (0..n-1) too.

Everything is checked before training starts; bad input raises a one-line `DataError`
naming the file and line: a missing file, a malformed line, a label outside 0..13 or not an
integer, a listed path with no label, a listed image that is missing or not a readable JPEG
or PNG (truncated files included). See `load_clothing1m` for the image check.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys

import numpy as np
from PIL import Image

from idn_tf.data.dataset import (UNKNOWN_LABEL, DataError, ExcludedImage,  # noqa: F401
                                 FileDataset, FileSplit)
from idn_tf.data.imagefiles import CHECKS, JPEG_PNG, key_scores, scan  # noqa: F401 (CHECKS: config)

CLASS_NAMES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
               "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
NUM_CLASSES = len(CLASS_NAMES)

NOISY_KV = "noisy_label_kv.txt"
CLEAN_KV = "clean_label_kv.txt"
NOISY_LIST = "noisy_train_key_list.txt"
CLEAN_LISTS = {"clean_train": "clean_train_key_list.txt",
               "clean_val": "clean_val_key_list.txt",
               "clean_test": "clean_test_key_list.txt"}
LISTS = {"noisy": NOISY_LIST, **CLEAN_LISTS}  # split -> its key list, in scan order

@dataclasses.dataclass(frozen=True, eq=False)
class Clothing1M(FileDataset):
    """The loaded folder: the noisy training set and the three clean splits."""
    class_names: tuple[str, ...] = CLASS_NAMES
    name: str = "clothing1m"


def load_clothing1m(data_dir: str, subset_fraction: float = 1.0, subset_seed: int = 0,
                    skip_bad_images: bool = False, check: str = "header",
                    num_threads: int | None = None, verbose: bool = True) -> Clothing1M:
    """Reads and checks a Clothing1M folder (layout in the module docstring).

    Parameters
    ----------
    subset_fraction : float in (0, 1]
        Keep round(fraction * N) lines of noisy_train_key_list.txt (at least 1), chosen by
        `subset_seed` alone (`subset_rows`); the clean splits are always whole. The subset
        is drawn before the image check, so only its images are checked, and the same seed
        gives the same subset whatever the bad images are.
    skip_bad_images : bool
        False: the first bad image (in list order) raises a DataError. True: bad images are
        left out of their split, listed in `Clothing1M.excluded` and summarised on stderr;
        they get no index (rows are numbered after the exclusion).
    check : one of CHECKS
        How each listed image is checked (each distinct path once):
        "header" (default): PIL parses the header (format must be JPEG or PNG), PNG chunk
        CRCs are verified, and a JPEG must end with its end-of-image marker; when it does
        not (truncated, or trailing bytes after the marker) the image is decoded to decide.
        Reads a few KB per JPEG; misses damage inside the compressed data.
        "decode": decodes every image (JPEGs at 1/8 scale, which libjpeg does cheaply); reads
        every byte, so it is bound by disk throughput (Clothing1M is ~30 GB).
        "exists": only that each path is a non-empty file.
    num_threads : int or None
        Threads for the image check; None = min(32, 4 * CPUs). The check waits on the disk
        (PIL decodes outside the GIL), so more threads than CPUs help, most on network disks.
    verbose : bool
        Print progress lines and a summary to stderr.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    if not 0.0 < subset_fraction <= 1.0:
        raise ValueError(f"subset_fraction must be in (0, 1], got {subset_fraction}")
    root = os.path.abspath(data_dir)
    if not os.path.isdir(root):
        raise DataError(f"Clothing1M folder not found: {root}")
    files = {name: os.path.join(root, name) for name in (NOISY_KV, CLEAN_KV, *LISTS.values())}
    for path in files.values():
        if not os.path.isfile(path):
            raise DataError(f"Clothing1M file not found: {path} (a Clothing1M folder holds "
                            f"{', '.join(files)})")

    kv = {name: _read_labels(files[name]) for name in (NOISY_KV, CLEAN_KV)}
    rows = {}  # split -> (paths, line numbers, labels, clean labels)
    for split, name in LISTS.items():
        keys = _read_keys(files[name])
        if split == "noisy" and subset_fraction != 1.0:
            ordered = list(keys)
            keys = {ordered[row]: keys[ordered[row]]
                    for row in subset_rows(ordered, subset_fraction, subset_seed)}
        kv_name = NOISY_KV if split == "noisy" else CLEAN_KV
        rows[split] = _labelled(files[name], keys, kv[kv_name], kv_name, root, kv[CLEAN_KV])
    bad = scan([(path, files[LISTS[split]], line) for split, (paths, lines, _, _) in rows.items()
                 for path, line in zip(paths, lines)],
               check, num_threads, skip_bad_images, verbose, source="clothing1m",
               formats=JPEG_PNG)

    excluded = []
    splits = {}
    for split, (paths, lines, labels, clean_labels) in rows.items():
        keep = np.array([path not in bad for path in paths], dtype=bool)
        excluded.extend(ExcludedImage(str(path), f"{files[LISTS[split]]}, line {line}", bad[path])
                        for path, line in zip(paths[~keep], lines[~keep]))
        splits[split] = FileSplit(paths=paths[keep], labels=labels[keep],
                                  clean_labels=clean_labels[keep],
                                  index=np.arange(int(keep.sum()), dtype=np.int64))
    result = Clothing1M(**splits, excluded=tuple(excluded))
    if verbose:
        _print_summary(result)
    return result


def subset_rows(keys: list[str], fraction: float, seed: int) -> np.ndarray:
    """Rows (sorted, int64) of a fixed pseudo-random subset of `keys`.

    Each key gets a score, blake2b(f"{seed}:{key}"), and the round(fraction * N) keys with
    the lowest scores are kept (at least 1). So the subset depends only on the seed and the
    keys (not on the numpy version), and for one seed a smaller fraction's subset lies
    inside a larger one's.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"subset_fraction must be in (0, 1], got {fraction}")
    scores = key_scores(keys, seed)
    count = max(1, int(round(fraction * len(keys))))
    return np.sort(np.argsort(scores, kind="stable")[:count]).astype(np.int64)


# ---------------------------------------------------------------------------------------
# list files


def _read_lines(path: str):
    """Yields (line number, whitespace-separated fields) of the non-blank lines of `path`."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise DataError(f"{path}, line {number}: not UTF-8 text") from None
            if fields:
                yield number, fields


def _read_labels(path: str) -> dict[str, int]:
    """A kv file ("relative/path.jpg label" lines) -> {path: label}."""
    labels = {}
    for number, fields in _read_lines(path):
        if len(fields) != 2:
            raise DataError(f"{path}, line {number}: expected 'path label', got "
                            f"{' '.join(fields)!r}")
        key, text = fields
        if not (text.isascii() and text.lstrip("+-").isdigit()):
            raise DataError(f"{path}, line {number}: label {text!r} is not an integer")
        label = int(text)
        if not 0 <= label < NUM_CLASSES:
            raise DataError(f"{path}, line {number}: label {label} is outside 0..{NUM_CLASSES - 1}")
        if labels.setdefault(key, label) != label:
            raise DataError(f"{path}, line {number}: {key} has label {label} here but "
                            f"{labels[key]} on an earlier line")
    return labels


def _read_keys(path: str) -> dict[str, int]:
    """A key list ("relative/path.jpg" lines) -> {path: line number}, in file order."""
    keys = {}
    for number, fields in _read_lines(path):
        if len(fields) != 1:
            raise DataError(f"{path}, line {number}: expected one image path, got "
                            f"{' '.join(fields)!r}")
        if fields[0] in keys:
            raise DataError(f"{path}, line {number}: {fields[0]} is already listed on line "
                            f"{keys[fields[0]]}")
        keys[fields[0]] = number
    return keys


def _labelled(list_path, keys, kv, kv_name, root, clean_kv):
    """A key list {key: line} -> (absolute paths, line numbers, labels, clean labels or -1).

    `labels` come from `kv` (a key missing there is a DataError), clean labels from `clean_kv`.
    """
    labels = np.empty(len(keys), dtype=np.int64)
    for row, (key, line) in enumerate(keys.items()):
        label = kv.get(key)
        if label is None:
            raise DataError(f"{list_path}, line {line}: {key} has no label in {kv_name}")
        labels[row] = label
    paths = np.array([os.path.join(root, key) for key in keys], dtype=str)
    lines = np.fromiter(keys.values(), dtype=np.int64, count=len(keys))
    clean_labels = np.array([clean_kv.get(key, UNKNOWN_LABEL) for key in keys], dtype=np.int64)
    return paths, lines, labels, clean_labels


def _print_summary(data: Clothing1M) -> None:
    known = int((data.noisy.clean_labels != UNKNOWN_LABEL).sum())
    print(f"clothing1m: {len(data.noisy):,} noisy training images ({known:,} with a clean "
          f"label); clean train/val/test {len(data.clean_train):,}/{len(data.clean_val):,}/"
          f"{len(data.clean_test):,}", file=sys.stderr)
    if data.excluded:
        print(f"clothing1m: left out {len(data.excluded):,} bad image listing(s), e.g. "
              f"{data.excluded[0].listed_at}: {data.excluded[0].reason}: "
              f"{data.excluded[0].path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# a fake folder for tests and benchmarks


@dataclasses.dataclass(frozen=True)
class FakeClothing1M:
    """What `make_fake_clothing1m` wrote: the folder and its special images (keys)."""
    root: str
    grayscale_key: str
    cmyk_key: str
    corrupt_key: str | None


def make_fake_clothing1m(root: str, counts: dict[str, int] | None = None, overlap: int = 3,
                         seed: int = 0, corrupt: bool = False,
                         sizes=((48, 64), (64, 48), (72, 72), (40, 96))) -> FakeClothing1M:
    """Writes a small Clothing1M folder of real JPEG files with all six list files.

    `counts` gives the lengths of the key lists (keys "noisy", "clean_train", "clean_val",
    "clean_test"; default 24/6/4/4). The first `overlap` lines of clean_train_key_list.txt
    are the last `overlap` noisy images, so those noisy examples have clean labels. Every
    image has a clean label (its colour) and a noisy label (the clean one with probability
    0.6, else another class); noisy_label_kv.txt also labels the clean images, and both kv
    files are in shuffled order. Images are (H, W) `sizes` in turn; noisy row 0 is
    grayscale, row 1 a CMYK JPEG and, if `corrupt`, row N // 2 a truncated JPEG.
    """
    counts = {"noisy": 24, "clean_train": 6, "clean_val": 4, "clean_test": 4, **(counts or {})}
    # The overlap rows come after the special rows 0, 1 and N // 2.
    if not 0 <= overlap <= min(counts["noisy"] - counts["noisy"] // 2 - 1, counts["clean_train"]):
        raise ValueError(f"overlap {overlap} does not fit counts {counts}")
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(NUM_CLASSES).integers(0, 160, (NUM_CLASSES, 3))
    n_images = sum(counts.values()) - overlap
    ids = rng.choice(10 * n_images + 1000, size=n_images, replace=False)
    keys = [f"images/{i % 10}/{i // 10 % 100:02d}/{i}.jpg" for i in ids]
    clean = rng.integers(0, NUM_CLASSES, n_images)
    flip = rng.random(n_images) >= 0.6
    noisy = np.where(flip, (clean + rng.integers(1, NUM_CLASSES, n_images)) % NUM_CLASSES,
                     clean)

    n_noisy = counts["noisy"]
    lists = {"noisy": keys[:n_noisy]}
    start = n_noisy
    for split in CLEAN_LISTS:
        own = counts[split] - (overlap if split == "clean_train" else 0)
        lists[split] = (keys[n_noisy - overlap:n_noisy] if split == "clean_train" else []) \
            + keys[start:start + own]
        start += own
    corrupt_key = keys[n_noisy // 2] if corrupt else None

    for row, key in enumerate(keys):
        data = _fake_jpeg(rng, palette[clean[row]], sizes[row % len(sizes)],
                          {0: "L", 1: "CMYK"}.get(row, "RGB"))
        if key == corrupt_key:
            data = data[:len(data) // 2]
        os.makedirs(os.path.join(root, os.path.dirname(key)), exist_ok=True)
        with open(os.path.join(root, key), "wb") as file:
            file.write(data)

    def write(name, lines):
        with open(os.path.join(root, name), "w", encoding="utf-8") as file:
            file.writelines(line + "\n" for line in lines)

    clean_keys = set().union(*(lists[split] for split in CLEAN_LISTS))
    write(NOISY_KV, [f"{keys[r]} {noisy[r]}" for r in rng.permutation(n_images)])
    write(CLEAN_KV, [f"{keys[r]} {clean[r]}" for r in rng.permutation(n_images)
                     if keys[r] in clean_keys])
    write(NOISY_LIST, lists["noisy"])
    for split, name in CLEAN_LISTS.items():
        write(name, lists[split])
    return FakeClothing1M(root=os.path.abspath(root), grayscale_key=keys[0], cmyk_key=keys[1],
                          corrupt_key=corrupt_key)


def _fake_jpeg(rng, colour, size, mode) -> bytes:
    """A JPEG (quality 90) of `size` (H, W): `colour` plus a diagonal ramp and pixel noise."""
    height, width = size
    ramp = np.add.outer(np.arange(height), np.arange(width))[..., np.newaxis]
    pixels = colour + 80 * ramp / (height + width) + rng.integers(0, 16, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
