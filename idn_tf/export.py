"""Export a trained classifier as a TensorFlow SavedModel for TF Serving.

The exported model follows the serving contract: signature
`serving_default` takes `images`, uint8 [batch, H, W, C] raw pixels (the
classifier's preprocessing is part of its graph), and returns
`probabilities`, float32 [batch, K], and `classes`, int64 [batch]. It loads
with `tf.saved_model.load` in a process that never imported idn_tf: the
SavedModel holds traced TensorFlow graphs, not Keras layer classes.

Exports go to `<export_dir>/<model_name>/<version>/`, the layout TF Serving
watches, with `version` the next free positive integer.
"""

import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from idn_tf import artifacts

# TF Serving treats only all-digit folder names as versions and skips the rest,
# so a half-written export under a `.tmp-` name is never served.
_VERSION = re.compile(r"[0-9]+")
_TEMP_PREFIX = ".tmp-"


def export_saved_model(classifier, export_dir, model_name):
    """Writes `classifier` as version N+1 of `model_name`; returns its folder.

    Parameters
    ----------
    classifier : keras.Model
        Maps uint8 images [B, H, W, C] to logits [B, K].
    export_dir : str or os.PathLike
        The TF Serving model base path; created if missing.
    model_name : str
        A plain folder name under `export_dir`.

    Returns
    -------
    str
        `<export_dir>/<model_name>/<version>`.
    """
    _check_model_name(model_name)
    model_dir = os.path.join(os.fspath(export_dir), model_name)
    os.makedirs(model_dir, exist_ok=True)
    # Built beside its final place (same file system, so the rename is atomic)
    # and under a non-integer name, so no reader ever sees a partial version.
    temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=model_dir)
    try:
        _serving_archive(classifier).write_out(temp_dir, verbose=False)
        artifacts.default_mode(temp_dir)
        return _publish(temp_dir, model_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def next_version(model_dir):
    """The smallest integer above every integer-named entry of `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if _VERSION.fullmatch(name)]
    return max(versions, default=0) + 1


def _input_spec(classifier):
    """The input spec of `serving_default`: uint8 `images` [None, H, W, C]."""
    shape = tuple(classifier.input_shape)
    if len(shape) != 4:
        raise ValueError(f"expected a classifier of images [B, H, W, C], got input shape {shape}")
    return tf.TensorSpec((None,) + shape[1:], tf.uint8, name="images")


def _serving_archive(classifier):
    """A Keras ExportArchive whose `serving_default` maps images to probabilities and classes."""
    spec = _input_spec(classifier)
    archive = keras.export.ExportArchive()
    archive.track(classifier)

    def serve(images):
        # A signature restored by tf.saved_model.load checks only the dtype
        # of what it is fed, not the shape: without this a single [H, W, C]
        # image runs and returns one row of nonsense instead of an error.
        images = tf.ensure_shape(images, spec.shape)
        # float32 before the softmax: a mixed-precision classifier's float16
        # logits would otherwise round the probabilities.
        logits = tf.cast(classifier(images, training=False), tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    # The signature's input takes the TensorSpec's name (else the argument's)
    # and its outputs the dict's keys; ExportArchive keeps both as given.
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    return archive


def _publish(temp_dir, model_dir):
    """Renames `temp_dir` to the next free version folder of `model_dir`; returns it."""
    # The version is chosen only now, after the slow write, and the rename
    # refuses a non-empty target, so a concurrent export costs a retry, not a
    # clobbered version.
    for _ in range(100):
        final_dir = os.path.join(model_dir, str(next_version(model_dir)))
        try:
            os.rename(temp_dir, final_dir)
            return final_dir
        except OSError:
            if not os.path.exists(final_dir):
                raise
    raise RuntimeError(f"could not claim a version folder in {model_dir}")


def _check_model_name(model_name):
    """Raises ValueError unless `model_name` is one plain folder name."""
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if (not isinstance(model_name, str) or model_name in ("", ".", "..")
            or any(s in model_name for s in separators)):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
