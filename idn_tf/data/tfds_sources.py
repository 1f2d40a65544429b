"""CIFAR-10/100 and their human-noise relabellings CIFAR-10N/100N, read through tensorflow-datasets.

`load_tfds` returns the same in-memory `Dataset` as the other sources (sources.py).

Row order. tfds writes examples in a hashed order, spread over shards, so the order it reads
them back in depends on the tfds version and the shard layout. Each split is therefore sorted
by the dataset's ``id`` feature ("train_00000", "train_00001", …, a stable argsort): row i of
the training split is the i-th image of the original CIFAR binary files, on every machine and
in every run. The CIFAR-N human labels are aligned to that same order by the tfds builders.

Labels. cifar10/cifar100: ``labels`` = ``clean_labels`` = the ``label`` feature (the fine
label for CIFAR-100). cifar10_n/cifar100_n: the training ``labels`` are one set of human labels
(`NOISY_LABEL_KEYS`) and ``clean_labels`` the original CIFAR label; the test split is clean.

Missing data. A dataset that is not prepared in the data_dir is downloaded and prepared (unless
``download=False``); when that fails, e.g. offline or without the CIFAR-N files that must be
put in by hand, a `DataError` says what is missing and how to provide it. Before a download,
`host_reachable` asks the download host for a page (as tfds downloads, with requests: the same
proxy and certificates; within `PROBE_TIMEOUT` seconds): offline, the run stops there, in
seconds, instead of after tfds's ten retries with backoff (about 3.5 minutes). An archive that
tfds will take from disk (downloads/manual/ or its download cache) needs no probe.

tensorflow_datasets (and with it TensorFlow) is imported inside the functions, so that the
constants here cost nothing to import (flags use them).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading

import numpy as np

from idn_tf.data.dataset import DataError, Dataset, Split

# Human label sets of the CIFAR-N datasets: our name -> tfds feature. The tfds feature names
# are accepted as well.
NOISY_LABEL_KEYS = {
    "cifar10_n": {"aggregate": "aggre_label", "random1": "random_label1",
                  "random2": "random_label2", "random3": "random_label3",
                  "worst": "worse_label"},
    "cifar100_n": {"noisy": "noise_label"},
}
DEFAULT_NOISY_LABEL_KEYS = {"cifar10_n": "worst", "cifar100_n": "noisy"}

# What the tfds builders read from <data_dir>/downloads/manual/ (their
# MANUAL_DOWNLOAD_INSTRUCTIONS): the CIFAR-N label files, which tfds cannot download; the
# first is a CSV the user converts from the .npy file in `_CONVERTED_FROM`. The CIFAR archive
# (`ARCHIVES`) is downloaded, or taken from the same folder when it is there under that name.
MANUAL_FILES = {
    "cifar10_n": ("CIFAR-10_human_annotations.csv", "side_info_cifar10N.csv",
                  "image_order_c10.npy"),
    "cifar100_n": ("CIFAR-100_human_annotations.csv", "side_info_cifar100N.csv",
                   "image_order_c100.npy"),
}
_CONVERTED_FROM = {"cifar10_n": "CIFAR-10_human_ordered.npy",
                   "cifar100_n": "CIFAR-100_human_ordered.npy"}
ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz",
            "cifar10_n": "cifar-10-binary.tar.gz", "cifar100_n": "cifar-100-binary.tar.gz"}
_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/"
_CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n"

_READ_BATCH = 10_000  # examples per tf.data batch while reading a split into numpy
# Seconds the download host has to answer `host_reachable` (the name lookup included).
PROBE_TIMEOUT = 5.0


def noisy_label_feature(name: str, noisy_label_key: str | None) -> str:
    """The tfds feature that holds the training labels of dataset `name`.

    `noisy_label_key` (None = the dataset's default) picks a CIFAR-N human label set, by our
    name or by its tfds feature name; the clean datasets only have ``label``.

    Raises
    ------
    DataError
        For a key the dataset does not have; the message lists the valid ones.
    """
    if name not in NOISY_LABEL_KEYS:
        if noisy_label_key is not None:
            raise DataError(f"dataset {name!r} has no human noisy labels (noisy_label_key="
                            f"{noisy_label_key!r}); they come with "
                            f"{', '.join(NOISY_LABEL_KEYS)}")
        return "label"
    keys = NOISY_LABEL_KEYS[name]
    key = DEFAULT_NOISY_LABEL_KEYS[name] if noisy_label_key is None else noisy_label_key
    if key in keys:
        return keys[key]
    if key in keys.values():
        return key
    valid = ", ".join(f"{ours} ({feature})" for ours, feature in keys.items())
    raise DataError(f"unknown noisy_label_key {key!r} for {name}; expected one of {valid}")


def load_tfds(name: str, data_dir: str | None = None, noisy_label_key: str | None = None,
              download: bool = True) -> Dataset:
    """Reads the train and test splits of the tfds dataset `name` fully into memory.

    Parameters
    ----------
    name : "cifar10", "cifar100", "cifar10_n" or "cifar100_n".
    data_dir : tfds data directory; None = tfds's default (~/tensorflow_datasets or
        $TFDS_DATA_DIR).
    noisy_label_key : CIFAR-N only: which human labels become the training labels
        (`NOISY_LABEL_KEYS`); None = `DEFAULT_NOISY_LABEL_KEYS`.
    download : whether to download and prepare a dataset that is not prepared in data_dir.

    Returns
    -------
    Dataset with uint8 [N, 32, 32, 3] images, each split sorted by the ``id`` feature.

    Raises
    ------
    DataError
        For a bad `noisy_label_key`, or data that is not prepared and cannot be prepared.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    train_feature = noisy_label_feature(name, noisy_label_key)
    builder = tfds.builder(name, data_dir=data_dir)
    _prepare(builder, name, download)
    train = _read_split(builder, "train", ("label", train_feature))
    test = _read_split(builder, "test", ("label",))
    if np.any(train[train_feature] < 0):  # tfds's ClassLabel stores "no label" as -1
        missing = int(np.sum(train[train_feature] < 0))
        raise DataError(f"{name}: {missing} training images have no {train_feature!r} label")
    label = builder.info.features["label"]
    return Dataset(
        name=name,
        train=Split(images=train["image"], labels=train[train_feature],
                    clean_labels=train["label"]),
        test=Split(images=test["image"], labels=test["label"], clean_labels=test["label"]),
        num_classes=label.num_classes, class_names=tuple(label.names))


@contextlib.contextmanager
def _no_tfds_warnings():
    """absl logging at ERROR inside: `is_prepared` warns that a dataset not yet prepared
    has an empty version folder (one tfds made itself), a second stderr line beside the
    run's own message, which says what is missing."""
    from absl import logging  # pylint: disable=import-outside-toplevel
    verbosity = logging.get_verbosity()
    logging.set_verbosity(min(verbosity, logging.ERROR))  # absl: lower is quieter
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _prepare(builder, name: str, download: bool) -> None:
    """Downloads and prepares `builder`'s data unless it is there; DataError if that fails.

    `is_prepared` is checked first, so that prepared data never touches the network.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    with _no_tfds_warnings():
        if builder.is_prepared():
            return
    root = os.fspath(builder.data_dir_root)
    manual_dir = os.path.join(root, "downloads", "manual")
    if not download:
        raise DataError(_missing_message(name, root, manual_dir, "downloading is turned off"))
    if not _archive_at_hand(name, root, manual_dir):
        unreachable = host_reachable(_ARCHIVE_URL)
        if unreachable is not None:
            raise DataError(_missing_message(name, root, manual_dir,
                                             f"{_ARCHIVE_URL} cannot be reached: {unreachable}"))
    try:
        # manual_dir is tfds's default, given explicitly so that the message names the folder used.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except ImportError:
        # A broken installation, not missing data (e.g. tfds 4.9.10 needs importlib_resources
        # without declaring it, tensorflow/datasets#11212): keep the traceback.
        raise
    except Exception as error:  # pylint: disable=broad-except
        # The single boundary to tfds's download and generation code, which fails in many
        # ways: requests.ConnectionError when the download fails although the probe passed
        # (or was skipped for a cached copy that tfds rejected), AssertionError for an empty
        # manual folder, tf.errors.NotFoundError for one missing manual file,
        # NonMatchingChecksumError for a bad archive. All mean "the data is not here"; the original stays as __cause__.
        raise DataError(_missing_message(name, root, manual_dir, _reason(error))) from error


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if `url`'s host answers a GET within `timeout` seconds, else the reason.

    The request is made as tfds's downloads are, with `requests` (stream=True, the body is
    not read): so the same proxy (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) and the same
    certificates (requests' bundle, or REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, as behind a proxy
    that inspects TLS) decide. Any HTTP answer, an error status included, means the host is
    reachable; a refused or failed connection, a failed name lookup, a proxy that refuses
    the tunnel, a certificate tfds would reject too, or no answer in time means it is not,
    and the reason is that requests error as one line, "ErrorType: message". The request
    runs in a thread so that a name lookup that hangs counts against the timeout too.
    """
    import requests  # pylint: disable=import-outside-toplevel

    outcome = []

    def probe():
        try:
            requests.get(url, timeout=timeout, stream=True, allow_redirects=False).close()
            outcome.append(None)
        except requests.RequestException as error:
            outcome.append(_reason(error))
        except Exception as error:  # pylint: disable=broad-except
            outcome.append(error)  # not the network's answer (a bug): raised below

    thread = threading.Thread(target=probe, name="tfds-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"no answer within {timeout:g} s"
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def _reason(error: BaseException) -> str:
    """`error` as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _archive_at_hand(name: str, root: str, manual_dir: str) -> bool:
    """Whether tfds will take dataset `name`'s CIFAR archive from disk instead of downloading it.

    tfds's download manager looks for <manual_dir>/<archive> (the name tfds registers for
    the URL, `ARCHIVES`), then in its download cache, <root>/downloads/<name>/ and (where
    older tfds versions put it) <root>/downloads/: a file there counts as downloaded when a
    "<file>.INFO" JSON file beside it lists the URL under "urls". A cached copy that tfds then
    rejects (a checksum that does not match) makes tfds download after all, unprobed: the
    slow failure the probe avoids, not a wrong result.
    """
    if os.path.isfile(os.path.join(manual_dir, ARCHIVES[name])):
        return True
    url = _ARCHIVE_URL + ARCHIVES[name]
    for folder in (os.path.join(root, "downloads", name), os.path.join(root, "downloads")):
        if not os.path.isdir(folder):
            continue
        for file in os.listdir(folder):
            if not file.endswith(".INFO"):
                continue
            try:
                with open(os.path.join(folder, file), encoding="utf-8") as f:
                    urls = json.load(f).get("urls", [])
            except (OSError, ValueError, AttributeError):
                continue  # unreadable, or not tfds's: no cached copy
            if url in urls and os.path.isfile(os.path.join(folder, file[:-len(".INFO")])):
                return True
    return False


def _missing_message(name: str, root: str, manual_dir: str, reason: str) -> str:
    """One paragraph (one line): what is missing, where it was looked for, how to provide it."""
    archive = ARCHIVES[name]
    build = (f"run `tfds build {name} --data_dir=DIR` on a machine with network access"
             + (" (label files in DIR/downloads/manual/)" if name in MANUAL_FILES else "")
             + f" and copy DIR/{name} to {os.path.join(root, name)}")
    head = f"dataset {name} is not prepared in {root} and could not be prepared here ({reason})."
    if name not in MANUAL_FILES:
        return (f"{head} To provide it, {build}; or put {archive} ({_ARCHIVE_URL}{archive}) "
                f"into {manual_dir}/.")
    files = MANUAL_FILES[name]
    missing = [f for f in files if not os.path.exists(os.path.join(manual_dir, f))]
    return (f"{head} To provide it, put the CIFAR-N label files {files[0]} (converted from "
            f"{_CONVERTED_FROM[name]} as the tfds {name} page shows), {files[1]} and {files[2]} "
            f"from {_CIFAR_N_URL}"
            + (f" (missing now: {', '.join(missing)})" if missing else "")
            + f" and, offline, the CIFAR archive {archive} into {manual_dir}/; or {build}.")


def _read_split(builder, split: str, label_features: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split `split` as numpy arrays {"image", *label_features}, rows sorted by ``id``.

    A plain batched read rather than ``batch_size=-1``: that batches by the example count in
    the dataset info, which `tfds.testing.mock_data` leaves at 0, so tfds then asks for a
    batch of sys.maxsize and TensorFlow aborts.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    keys = ("id", "image") + tuple(dict.fromkeys(label_features))
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda example: {key: example[key] for key in keys}).batch(_READ_BATCH)
    batches = list(tfds.as_numpy(ds))
    arrays = {key: np.concatenate([batch[key] for batch in batches]) for key in keys}
    order = np.argsort(arrays.pop("id"), kind="stable")
    arrays = {key: value[order] for key, value in arrays.items()}
    for key in label_features:
        arrays[key] = arrays[key].astype(np.int64)
    return arrays
