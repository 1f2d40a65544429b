"""Tests for idn_tf.data.tfds_sources: CIFAR-10/100 and CIFAR-10N/100N through tensorflow-datasets.

Nothing is downloaded. `tfds.testing.mock_data` stands in for prepared data. It is given
`MockPolicy.USE_CODE` explicitly: the tensorflow-datasets wheel ships no metadata files, so
the default AUTO looks for them and falls back to USE_CODE anyway, for all four datasets.
Under USE_CODE the features come from the builders' code, so the class names are "0".."K-1"
(the real names are written when the data is prepared), the records are random but the same
on every read, and the train and test splits yield the same records.

The offline tests run tfds's real download code against a proxy that refuses connections, with
tfds's retries turned off (`downloader.MAX_RETRIES`; with its 10 retries and backoff the error
takes about 3.5 minutes). The "prepared by tfds" tests let tfds really prepare cifar10 and
cifar10_n from a miniature fake archive (`DownloadManager.download_and_extract` patched to
return its folder), so that tfds's own writer (which stores examples in a hashed order) and
reader are exercised too. Both need the tfds download code to work, which in tfds 4.9.10
means importlib_resources installed (tensorflow/datasets#11212).
"""

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import time
from unittest import mock

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums, downloader, resource

from idn_tf.data import sources, tfds_sources
from idn_tf.data.sources import DataError

NUM_EXAMPLES = 12
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "cifar10_n": 10, "cifar100_n": 100}
CIFAR_N_BUILDERS = {"cifar10_n": "Cifar10N", "cifar100_n": "Cifar100N"}


@contextlib.contextmanager
def mock_data(**kwargs):
    """tfds's mock data, which stands in for the download too: the download host's probe
    is not asked."""
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, **kwargs), \
            mock.patch.object(tfds_sources, "host_reachable", return_value=None):
        yield


def raw_records(name, split):
    """The mock's records of `split`, read one by one, as {feature: array} sorted by id."""
    builder = tfds.builder(name)
    records = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    records.sort(key=lambda record: record["id"])
    return {key: np.stack([record[key] for record in records]) for key in records[0]}


# ---------------------------------------------------------------------------------------
# loading


@pytest.mark.e2e
@pytest.mark.parametrize("name", sources.TFDS_SOURCES)
def test_load_under_mock_data(name, tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_sources, "_READ_BATCH", 5)  # several batches to concatenate
    with mock_data(num_examples=NUM_EXAMPLES):
        dataset = sources.load(name, data_dir=str(tmp_path))
        again = sources.load(name, data_dir=str(tmp_path))
        raw = {split: raw_records(name, split) for split in ("train", "test")}

    k = NUM_CLASSES[name]
    assert dataset.name == name and dataset.num_classes == k
    assert dataset.class_names == tuple(str(c) for c in range(k))  # mock: names from code
    noisy_feature = tfds_sources.noisy_label_feature(name, None)
    for split, observed in ((dataset.train, noisy_feature), (dataset.test, "label")):
        assert split.images.shape == (NUM_EXAMPLES, 32, 32, 3)
        assert split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64 and split.clean_labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < k
        expected = raw["train" if split is dataset.train else "test"]
        np.testing.assert_array_equal(split.images, expected["image"])  # rows sorted by id
        np.testing.assert_array_equal(split.labels, expected[observed])
        np.testing.assert_array_equal(split.clean_labels, expected["label"])
    for a, b in ((dataset.train, again.train), (dataset.test, again.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.clean_labels, b.clean_labels)
    if name.endswith("_n"):  # the mock's random human labels differ from the clean ones
        assert np.any(dataset.train.labels != dataset.train.clean_labels)


@pytest.mark.e2e
def test_cifar10_n_label_keys():
    """Each key, ours or tfds's, picks its human label set; clean labels stay `label`."""
    keys = tfds_sources.NOISY_LABEL_KEYS["cifar10_n"]
    assert tfds_sources.DEFAULT_NOISY_LABEL_KEYS == {"cifar10_n": "worst", "cifar100_n": "noisy"}
    assert keys == {"aggregate": "aggre_label", "random1": "random_label1",
                    "random2": "random_label2", "random3": "random_label3",
                    "worst": "worse_label"}
    with mock_data(num_examples=NUM_EXAMPLES):
        raw = raw_records("cifar10_n", "train")
        for key in list(keys) + list(keys.values()):
            dataset = tfds_sources.load_tfds("cifar10_n", noisy_label_key=key)
            feature = keys.get(key, key)
            np.testing.assert_array_equal(dataset.train.labels, raw[feature], err_msg=key)
            np.testing.assert_array_equal(dataset.train.clean_labels, raw["label"])
        assert len({raw[feature].tobytes() for feature in keys.values()}) > 1


@pytest.mark.e2e  # tfds's mock data of CIFAR-100 (~5 s)
def test_cifar100_n_label_key():
    assert tfds_sources.NOISY_LABEL_KEYS["cifar100_n"] == {"noisy": "noise_label"}
    with mock_data(num_examples=NUM_EXAMPLES):
        raw = raw_records("cifar100_n", "train")
        for key in ("noisy", "noise_label"):
            labels = tfds_sources.load_tfds("cifar100_n", noisy_label_key=key).train.labels
            np.testing.assert_array_equal(labels, raw["noise_label"])


def test_rows_follow_id_not_read_order():
    """Two read orders of the same records give the same rows: row i is id "train_0000i"."""
    n = 12

    def fake_records(permutation):
        def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            i = np.asarray(permutation)
            return tf.data.Dataset.from_tensor_slices({
                "id": [f"{split}_{j:05d}" for j in i],
                "image": np.broadcast_to(i[:, None, None, None], (n, 32, 32, 3)).astype(np.uint8),
                "label": (i % 10).astype(np.int64),
                "worse_label": ((3 * i + 1) % 10).astype(np.int64)})
        return as_dataset

    loaded = []
    rng = np.random.default_rng(0)
    for permutation in (np.arange(n)[::-1], rng.permutation(n)):
        with mock_data(as_dataset_fn=fake_records(permutation)):
            loaded.append(tfds_sources.load_tfds("cifar10_n"))
    row = np.arange(n)
    for dataset in loaded:
        np.testing.assert_array_equal(dataset.train.images[:, 0, 0, 0], row)
        np.testing.assert_array_equal(dataset.train.labels, (3 * row + 1) % 10)
        np.testing.assert_array_equal(dataset.train.clean_labels, row % 10)
        np.testing.assert_array_equal(dataset.test.labels, row % 10)


def test_prepared_data_is_not_downloaded_again():
    with mock_data(num_examples=3), \
            mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True), \
            mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                              side_effect=AssertionError("download_and_prepare called")):
        assert len(tfds_sources.load_tfds("cifar10").train) == 3


# ---------------------------------------------------------------------------------------
# bad keys


@pytest.mark.parametrize("name, key, words", [
    ("cifar10_n", "noisy", ["aggregate (aggre_label)", "worst (worse_label)"]),
    ("cifar100_n", "worst", ["noisy (noise_label)"]),
    ("cifar10", "worst", ["cifar10_n", "cifar100_n"]),
])
def test_unknown_noisy_label_key(name, key, words):
    with pytest.raises(DataError) as error:
        sources.load(name, noisy_label_key=key)
    for word in [repr(key)] + words:
        assert word in str(error.value)


def test_noisy_label_key_with_digits():
    with pytest.raises(DataError, match="no human noisy labels"):
        sources.load("digits", noisy_label_key="worst")


# ---------------------------------------------------------------------------------------
# data that is not there


@pytest.fixture
def offline(monkeypatch):
    """Connections are refused at once (any proxy), and tfds does not retry."""
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)


def assert_one_paragraph(message, name, data_dir):
    assert "\n" not in message
    for word in (f"dataset {name} is not prepared in {data_dir}", f"tfds build {name}",
                 os.path.join(str(data_dir), "downloads", "manual")):
        assert word in message, word


@pytest.fixture
def download_faked(monkeypatch):
    """The download host counts as reachable: for tests that fake tfds's download itself."""
    monkeypatch.setattr(tfds_sources, "host_reachable", lambda url, timeout=None: None)


@pytest.mark.parametrize("name", sources.TFDS_SOURCES)
def test_offline_download_fails_with_data_error(name, tmp_path, offline):
    with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                           side_effect=AssertionError("download_and_prepare called")):
        with pytest.raises(DataError) as error:
            sources.load(name, data_dir=str(tmp_path))
    message = str(error.value)
    assert_one_paragraph(message, name, tmp_path)
    assert f"{tfds_sources._ARCHIVE_URL} cannot be reached" in message  # the probe's verdict
    assert tfds_sources.ARCHIVES[name] in message
    for file in tfds_sources.MANUAL_FILES.get(name, ()):
        assert message.count(file) == 2, file  # in the list of files, and as missing


@pytest.mark.parametrize("name", ["cifar10", "cifar100_n"])
def test_a_failed_tfds_download_is_the_same_data_error(name, tmp_path, offline, download_faked):
    """The probe passes (say the host answered) but tfds's download then fails."""
    with pytest.raises(DataError) as error:
        sources.load(name, data_dir=str(tmp_path))
    message = str(error.value)
    assert_one_paragraph(message, name, tmp_path)
    assert isinstance(error.value.__cause__, requests.exceptions.ConnectionError)
    assert "ProxyError: " in message


def test_no_download_fails_at_once(tmp_path):
    with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                           side_effect=AssertionError("download_and_prepare called")), \
            mock.patch.object(tfds_sources, "host_reachable",
                              side_effect=AssertionError("host_reachable called")):
        with pytest.raises(DataError) as error:
            sources.load("cifar100", data_dir=str(tmp_path), download=False)
    assert_one_paragraph(str(error.value), "cifar100", tmp_path)
    assert "downloading is turned off" in str(error.value)
    assert error.value.__cause__ is None


@pytest.mark.parametrize("present, missing", [
    ((), tfds_sources.MANUAL_FILES["cifar10_n"]),
    (("side_info_cifar10N.csv",), ("CIFAR-10_human_annotations.csv", "image_order_c10.npy")),
])
def test_cifar10_n_without_label_files(present, missing, tmp_path, offline,
                                       download_faked):
    """The CIFAR archive is there (a fake one); tfds's own check of the manual files fails."""
    extracted = write_fake_cifar10(tmp_path / "extracted", num_train=10)
    manual = tmp_path / "data" / "downloads" / "manual"
    for file in present:
        manual.mkdir(parents=True, exist_ok=True)
        (manual / file).write_text("")
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           return_value=str(extracted)):
        with pytest.raises(DataError) as error:
            sources.load("cifar10_n", data_dir=str(tmp_path / "data"))
    message = str(error.value)
    assert_one_paragraph(message, "cifar10_n", tmp_path / "data")
    assert f"(missing now: {', '.join(missing)})" in message
    assert "CIFAR-10_human_ordered.npy" in message


def write_cached(folder, file, urls=None, info=None):
    """A file and its tfds INFO file (JSON {"urls": urls}, or the text `info`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file).write_bytes(b"archive")
    (folder / f"{file}.INFO").write_text(json.dumps({"urls": urls}) if info is None else info)


CIFAR100_URL = tfds_sources._ARCHIVE_URL + "cifar-100-binary.tar.gz"


@pytest.mark.parametrize("layout, at_hand", [
    ("nothing", False),
    ("manual", True),
    ("cached", True),  # tfds 4.9: downloads/<dataset>/<url and checksum>.tar.gz + .INFO
    ("cached-legacy", True),  # older tfds: downloads/<file> + .INFO
    ("cached-for-another-dataset", False),  # cifar100's download: tfds looks elsewhere
    ("cached-without-info", False),  # tfds: no INFO file, not cached
    ("info-without-the-file", False),
    ("info-of-another-url", False),
    ("info-not-json", False),
    ("info-a-list", False),
    ("temporary-download-folder", False),  # what a failed download leaves
    ("extracted-only", False),  # tfds downloads the archive before it extracts
])
def test_an_archive_at_hand_needs_no_probe(layout, at_hand, tmp_path):
    downloads = tmp_path / "downloads"
    manual = downloads / "manual"
    file = "cs.toronto.edu_kriz_cifar-100-binaryABC.tar.gz"
    if layout == "manual":
        manual.mkdir(parents=True)
        (manual / "cifar-100-binary.tar.gz").write_bytes(b"archive")
    elif layout == "cached":
        write_cached(downloads / "cifar100_n", file, [CIFAR100_URL])
    elif layout == "cached-legacy":
        write_cached(downloads, file, ["https://elsewhere.example/a", CIFAR100_URL])
    elif layout == "cached-for-another-dataset":
        write_cached(downloads / "cifar100", file, [CIFAR100_URL])
    elif layout == "cached-without-info":
        write_cached(downloads / "cifar100_n", file, [CIFAR100_URL])
        (downloads / "cifar100_n" / f"{file}.INFO").unlink()
    elif layout == "info-without-the-file":
        write_cached(downloads / "cifar100_n", file, [CIFAR100_URL])
        (downloads / "cifar100_n" / file).unlink()
    elif layout == "info-of-another-url":
        write_cached(downloads, file, [tfds_sources._ARCHIVE_URL + "cifar-10-binary.tar.gz"])
    elif layout == "info-not-json":
        write_cached(downloads, file, info="{not json")
    elif layout == "info-a-list":
        write_cached(downloads, file, info=json.dumps([CIFAR100_URL]))
    elif layout == "temporary-download-folder":
        (downloads / "cifar100_n" / f"{file}.tmp.0123abcd").mkdir(parents=True)
    elif layout == "extracted-only":
        (downloads / "extracted" / "TAR_GZ.cs.toronto.edu_kriz_cifar-100-binary").mkdir(
            parents=True)
    assert tfds_sources._archive_at_hand("cifar100_n", str(tmp_path), str(manual)) is at_hand


TLS_PEM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "localhost_tls.pem")


class _Server:
    """A local HTTP server answering every GET with `status`, in a thread; with `tls`, HTTPS
    with the self-signed certificate of TLS_PEM."""

    def __init__(self, status, tls=False):
        import http.server
        import ssl
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_PEM)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}/~kriz/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _closed_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the socket is


@pytest.mark.parametrize("status", [200, 404, 503])
def test_a_host_that_answers_is_reachable_whatever_its_status(status, monkeypatch):
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(variable, raising=False)
    server = _Server(status)
    try:
        assert tfds_sources.host_reachable(server.url, timeout=5) is None
    finally:
        server.close()


def test_a_closed_port_or_a_dead_proxy_is_unreachable(monkeypatch):
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy",
                     "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    reason = tfds_sources.host_reachable(f"http://127.0.0.1:{_closed_port()}/", timeout=5)
    assert reason and "refused" in reason.lower()
    server = _Server(200)  # reachable directly, not through a proxy that is down
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_closed_port()}")
        assert tfds_sources.host_reachable(server.url.replace("127.0.0.1", "localhost"),
                                           timeout=5) is not None
    finally:
        server.close()


def test_the_certificates_are_the_ones_tfds_trusts(monkeypatch):
    """As tfds's download (requests): a certificate trusted through REQUESTS_CA_BUNDLE (as
    set up behind a proxy that inspects TLS) is fine, an untrusted one is not."""
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy",
                     "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = _Server(200, tls=True)
    try:
        untrusted = tfds_sources.host_reachable(server.url, timeout=5)
        assert untrusted.startswith("SSLError: ") and "CERTIFICATE_VERIFY_FAILED" in untrusted
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", TLS_PEM)
        assert tfds_sources.host_reachable(server.url, timeout=5) is None
        assert requests.get(server.url, timeout=5).status_code == 200  # and so would tfds
    finally:
        server.close()


def test_a_bug_in_the_probe_is_not_taken_for_offline(monkeypatch):
    monkeypatch.setattr(requests, "get", mock.Mock(side_effect=TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        tfds_sources.host_reachable("https://www.cs.toronto.edu/~kriz/", timeout=5)


def test_a_host_that_does_not_answer_in_time_is_unreachable():
    import socket
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        reason = tfds_sources.host_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/",
                                             timeout=1)
        assert time.monotonic() - start < 5
    assert reason and ("timed out" in reason or "no answer" in reason)


# ---------------------------------------------------------------------------------------
# data really prepared by tfds, from a fake archive


def write_fake_cifar10(folder, num_train, num_test=3):
    """The extracted CIFAR-10 binary archive in miniature; returns `folder`.

    Training image i (in file order) has every pixel = i and label i % 10; test image i has
    pixels 100 + i and label (i + 5) % 10. Class names are "class0" … "class9".
    """
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    (batches / "batches.meta.txt").write_text("\n".join(f"class{c}" for c in range(10)) + "\n")

    def records(values, labels):
        return b"".join(bytes([label]) + bytes([value]) * (32 * 32 * 3)
                        for value, label in zip(values, labels))

    train = np.arange(num_train)
    for b, rows in enumerate(np.array_split(train, 5), start=1):
        (batches / f"data_batch_{b}.bin").write_bytes(records(rows, rows % 10))
    test = np.arange(num_test)
    (batches / "test_batch.bin").write_bytes(records(100 + test, (test + 5) % 10))
    return folder


def write_fake_cifar10_n_labels(manual, num_train):
    """CIFAR-10N label files for `write_fake_cifar10`: training image i gets the human labels
    aggre (i + 1) % 10, worse (i + 3) % 10, random1..3 (i + 4..6) % 10.

    The files list images in another order (image_order_c10.npy, here reversed), which the
    tfds builder undoes.
    """
    manual.mkdir(parents=True)
    order = np.arange(num_train)[::-1]  # row r of the annotations is image order[r]
    # The builder reads columns 1-5 by position (and of the side info, 1-6); column 0 is unused.
    rows = ["unused,aggre_label,worse_label,random_label1,random_label2,random_label3"]
    rows += [",".join(str(v) for v in [r] + [(i + k) % 10 for k in (1, 3, 4, 5, 6)])
             for r, i in enumerate(order)]
    (manual / "CIFAR-10_human_annotations.csv").write_text("\n".join(rows) + "\n")
    side = ["unused,worker1_id,worker1_time,worker2_id,worker2_time,worker3_id,worker3_time"]
    side += [f"{r},1,1.0,2,2.0,3,3.0" for r in range((num_train + 9) // 10)]
    (manual / "side_info_cifar10N.csv").write_text("\n".join(side) + "\n")
    np.save(manual / "image_order_c10.npy", order)


@pytest.mark.e2e  # tfds builds the fake archive (~5 s each)
@pytest.mark.parametrize("name, key, offset", [("cifar10", None, 0), ("cifar10_n", None, 3),
                                               ("cifar10_n", "aggregate", 1),
                                               ("cifar10_n", "random3", 6)])
def test_load_data_prepared_by_tfds(name, key, offset, tmp_path, offline, download_faked):
    """tfds prepares (and shuffles into its own order) a fake archive; rows come back in
    the archive's order, with the human labels of the right images."""
    n = 17
    extracted = write_fake_cifar10(tmp_path / "extracted", num_train=n)
    data_dir = tmp_path / "data"
    if name == "cifar10_n":
        write_fake_cifar10_n_labels(data_dir / "downloads" / "manual", num_train=n)
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           return_value=str(extracted)):
        dataset = sources.load(name, data_dir=str(data_dir), noisy_label_key=key)
    # Now prepared: read again without downloading.
    again = sources.load(name, data_dir=str(data_dir), noisy_label_key=key, download=False)

    row = np.arange(n)
    assert dataset.class_names == tuple(f"class{c}" for c in range(10))
    for loaded in (dataset, again):
        assert loaded.train.images.shape == (n, 32, 32, 3)
        assert loaded.train.images.dtype == np.uint8
        np.testing.assert_array_equal(loaded.train.images[:, 5, 7, 1], row)
        assert np.all(loaded.train.images == row[:, None, None, None])
        np.testing.assert_array_equal(loaded.train.labels, (row + offset) % 10)
        np.testing.assert_array_equal(loaded.train.clean_labels, row % 10)
        np.testing.assert_array_equal(loaded.test.images[:, 0, 0, 0], [100, 101, 102])
        np.testing.assert_array_equal(loaded.test.labels, [5, 6, 7])
        np.testing.assert_array_equal(loaded.test.clean_labels, [5, 6, 7])


# ---------------------------------------------------------------------------------------
# an archive tfds downloaded before, in its download cache


def write_archive(path, extracted):
    """The folder `extracted` (see write_fake_cifar10) as a .tar.gz at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(extracted / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return path


def cache_like_tfds(name, data_dir, archive_path):
    """Puts `archive_path`'s bytes where tfds's download manager caches the CIFAR archive
    for dataset `name` (with its INFO file), as a finished download leaves it."""
    url = tfds_sources._ARCHIVE_URL + tfds_sources.ARCHIVES[name]
    builder = tfds.builder(name, data_dir=str(data_dir))
    manager = builder._make_download_manager(download_dir=None,
                                             download_config=tfds.download.DownloadConfig())
    url_info = checksums.get_all_url_infos()[url]
    path = manager._get_dl_path(resource.Resource(url=url), url_info.checksum)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive_path.read_bytes())
    resource.write_info_file(url=url, path=path, dataset_name=name,
                             original_fname=tfds_sources.ARCHIVES[name], url_info=url_info)
    return path


@pytest.mark.e2e  # tfds prepares the fake archive (~5 s)
def test_an_archive_in_the_download_cache_is_used_offline(tmp_path, offline):
    """An earlier download (e.g. of a cifar10_n whose label files were missing then): no
    probe, no network; tfds prepares the data from its cache."""
    data_dir = tmp_path / "tfds"
    archive = write_archive(tmp_path / "cifar-10-binary.tar.gz",
                            write_fake_cifar10(tmp_path / "extracted", num_train=10))
    cached = cache_like_tfds("cifar10", data_dir, archive)
    assert os.path.dirname(cached) != str(data_dir / "downloads")  # tfds 4.9: a subfolder
    with mock.patch.object(tfds_sources, "host_reachable",
                           side_effect=AssertionError("host_reachable called")):
        dataset = sources.load("cifar10", data_dir=str(data_dir))
    np.testing.assert_array_equal(dataset.train.images[:, 0, 0, 0], np.arange(10))


# ---------------------------------------------------------------------------------------
# constants against the installed tfds


@pytest.mark.parametrize("name", ["cifar10_n", "cifar100_n"])
def test_constants_match_the_tfds_builders(name, tmp_path):
    builder = tfds.builder(name, data_dir=str(tmp_path))  # info comes from code: no data needed
    assert type(builder).__name__ == CIFAR_N_BUILDERS[name]
    instructions = builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    for file in tfds_sources.MANUAL_FILES[name] + (tfds_sources._CONVERTED_FROM[name],):
        assert file in instructions, file
    features = builder.info.features
    for feature in tfds_sources.NOISY_LABEL_KEYS[name].values():
        assert features[feature].num_classes == NUM_CLASSES[name]


@pytest.mark.parametrize("name", sources.TFDS_SOURCES)
def test_archive_name_is_the_one_tfds_takes_from_the_manual_folder(name):
    # DownloadManager uses <manual_dir>/<filename> when the URL's registered info names it.
    archive = tfds_sources.ARCHIVES[name]
    url_info = checksums.get_all_url_infos()[tfds_sources._ARCHIVE_URL + archive]
    assert url_info.filename == archive


@pytest.mark.e2e
def test_importing_the_sources_does_not_import_tensorflow():
    code = ("import sys, idn_tf.data.sources, idn_tf.data.tfds_sources; "
            "print(sorted({'tensorflow', 'tensorflow_datasets'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
