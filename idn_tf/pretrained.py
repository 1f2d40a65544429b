"""Pretrained ResNet-50 weights, fetched before TensorFlow is imported.

A run with `--backbone_weights=imagenet` needs Keras's ImageNet file. Fetching it first,
before the data are read or checked (Clothing1M: minutes) and before TensorFlow starts,
lets a machine without network access stop in one line at once. The file goes where
keras.applications looks for it (`$KERAS_HOME/models`, default ~/.keras/models) under
its name, checked against the same md5, so Keras then finds it and downloads nothing.
"""

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Where keras.applications.ResNet50 downloads it from, and its md5 (Keras 3.15; a test
# checks both against keras.src.applications.resnet).
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
_CHUNK = 1 << 20


class WeightsError(ValueError):
    """The weights cannot be had (no network, bad path); one line saying what to do."""


def keras_cache_dir():
    """The folder keras.utils.get_file caches models in: $KERAS_HOME/models or ~/.keras/models."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    return os.path.join(home, "models")


def check_path(weights):
    """`weights` as a path of an existing .h5 file; WeightsError otherwise."""
    path = os.fspath(weights)
    if not path.endswith(".h5"):
        raise WeightsError(
            f"weights must be 'none', 'imagenet' or the path of a .h5 / .weights.h5 "
            f"file of the notop ResNet-50; got {path!r}")
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path!r} (expected a local copy of "
                           f"{IMAGENET_NOTOP_FILE} or a .weights.h5 of the notop ResNet-50)")
    return path


def download_failed(cause):
    """The message for ImageNet weights that could not be downloaded."""
    return ("could not load the ImageNet ResNet-50 weights (Keras downloads "
            f"{IMAGENET_NOTOP_FILE} into ~/.keras/models on first use, which needs network "
            "access): download that file elsewhere and pass its local path instead of "
            f"'imagenet'. Cause: {cause}")


def fetch(weights):
    """The local file of `weights` ("imagenet" or a path), downloading ImageNet's if needed.

    Raises WeightsError when the file cannot be had.
    """
    if weights != "imagenet":
        return check_path(weights)
    path = os.path.join(keras_cache_dir(), IMAGENET_NOTOP_FILE)
    if os.path.isfile(path) and _md5(path) == IMAGENET_NOTOP_MD5:
        return path
    url = IMAGENET_URL + IMAGENET_NOTOP_FILE
    print(f"downloading {url} into {os.path.dirname(path)}", flush=True)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
            if _md5(temp) != IMAGENET_NOTOP_MD5:
                raise WeightsError(download_failed(f"{url} did not match its md5"))
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
        raise WeightsError(download_failed(f"{url}: {reason}")) from None
    return path


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
