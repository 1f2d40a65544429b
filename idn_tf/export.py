"""Export a trained classifier as a TensorFlow SavedModel for TF Serving.

The exported model follows the serving contract: signature
`serving_default` takes `images`, uint8 [batch, H, W, C] raw pixels (the
classifier's preprocessing is part of its graph), and returns
`probabilities`, float32 [batch, K], `classes`, int64 [batch], and
`class_names`, string [batch], the predicted class's name. The K names are
the asset `assets/class_names.txt`, one per line in class order; the
signature reads them from that file (a lookup table initialised when the
SavedModel loads), so the file and the answers cannot disagree. It loads
with `tf.saved_model.load` in a process that never imported idn_tf: the
SavedModel holds traced TensorFlow graphs, not Keras layer classes.

A classifier of RGB images (C = 3) also takes grayscale ones (C = 1),
repeated into the three channels in the graph, as
`tf.io.decode_image(contents, channels=3)` turns a grayscale file into RGB.
A request of any other shape (a single image without its batch axis, another
size, other channels) stops with an InvalidArgumentError stating the shape
expected; other dtypes, floats among them, are refused by the signature
itself (scale and round them to uint8 first, docs/run_folder.md).

H and W are the classifier's input size, except for runs on a file dataset
(Clothing1M, a class folder): exported with an `EvalResize`, the signature takes decoded
photos of any H x W (one size per request batch) and applies the evaluation
transform of `data.streaming.eval_dataset` itself (resize, central crop,
rounding to uint8) before the classifier, so a client sends what
`tf.io.decode_image(contents, channels=3)` gives and gets what evaluation
would have computed.

Exports go to `<export_dir>/<model_name>/<version>/`, the layout TF Serving
watches, with `version` the next free positive integer.
"""

import dataclasses
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from idn_tf import artifacts
from idn_tf.data import dataset, streaming

# TF Serving treats only all-digit folder names as versions and skips the rest,
# so a half-written export under a `.tmp-` name is never served.
_VERSION = re.compile(r"[0-9]+")
_TEMP_PREFIX = ".tmp-"
NAMES_ASSET = "class_names.txt"  # under the SavedModel's assets/


@dataclasses.dataclass(frozen=True)
class EvalResize:
    """The evaluation transform of `streaming.eval_dataset`, for the serving graph.

    Resize to `resize` (bilinear; `mode` "square" or "shorter_side", `antialias`
    as in data/streaming.py), then the central `image_size`² crop, rounded to uint8.
    Pass the run's own values: the served crop must be the one evaluated.
    """
    resize: int = 256
    image_size: int = 224
    mode: str = "square"
    antialias: bool = False

    def __post_init__(self):
        streaming.check_sizes(self.image_size, self.resize, self.mode)


def export_saved_model(classifier, export_dir, model_name, eval_resize=None, class_names=None):
    """Writes `classifier` as version N+1 of `model_name`; returns its folder.

    Parameters
    ----------
    classifier : keras.Model
        Maps uint8 images [B, H, W, C] to logits [B, K].
    export_dir : str or os.PathLike
        The TF Serving model base path; created if missing.
    model_name : str
        A plain folder name under `export_dir`.
    eval_resize : EvalResize, optional
        None: the signature takes images of the classifier's H x W. Otherwise
        it takes images of any size, uint8 [B, None, None, C], and transforms
        them as `streaming.eval_dataset` does before the classifier, whose
        input must then be image_size x image_size.
    class_names : sequence of str, optional
        The K classes' names in class order (`dataset.class_names_problem`
        says which are allowed); default "0" … "K-1".

    Returns
    -------
    str
        `<export_dir>/<model_name>/<version>`.
    """
    _check_model_name(model_name)
    if eval_resize is not None:
        _check_eval_resize(classifier, eval_resize)
    class_names = _checked_class_names(classifier, class_names)
    model_dir = os.path.join(os.fspath(export_dir), model_name)
    os.makedirs(model_dir, exist_ok=True)
    # Built beside its final place (same file system, so the rename is atomic)
    # and under a non-integer name, so no reader ever sees a partial version.
    temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=model_dir)
    try:
        # The names file is written apart: saving copies it into assets/.
        with tempfile.TemporaryDirectory() as names_dir:
            names_path = os.path.join(names_dir, NAMES_ASSET)
            with open(names_path, "w", encoding="utf-8", newline="\n") as f:
                f.write(names_text(class_names))
            archive = _serving_archive(classifier, eval_resize, names_path, len(class_names))
            archive.write_out(temp_dir, verbose=False)
        artifacts.default_mode(temp_dir)
        return _publish(temp_dir, model_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def names_text(class_names):
    """The names asset's content: one name per line, class k on line k + 1."""
    return "".join(f"{name}\n" for name in class_names)


def has_class_names(saved_dir, class_names):
    """Whether the SavedModel in `saved_dir` serves `class_names` (its names asset holds them)."""
    try:
        with open(os.path.join(saved_dir, "assets", NAMES_ASSET), encoding="utf-8",
                  newline="") as f:
            return f.read() == names_text(class_names)
    except (OSError, UnicodeDecodeError):
        return False


def next_version(model_dir):
    """The smallest integer above every integer-named entry of `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if _VERSION.fullmatch(name)]
    return max(versions, default=0) + 1


def _classifier_shape(classifier):
    """The classifier's input shape (None, H, W, C); ValueError unless of rank 4."""
    shape = tuple(classifier.input_shape)
    if len(shape) != 4:
        raise ValueError(f"expected a classifier of images [B, H, W, C], got input shape {shape}")
    return shape


def _checked_class_names(classifier, class_names):
    """`class_names` as a tuple ("0" … "K-1" if None); ValueError unless K fitting names."""
    num_classes = classifier.output_shape[-1]
    if class_names is None:
        return tuple(str(k) for k in range(num_classes))
    class_names = tuple(class_names)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a classifier of {num_classes} "
                         "classes")
    problem = dataset.class_names_problem(class_names)
    if problem:
        raise ValueError(f"class_names: {problem}")
    return class_names


def _check_eval_resize(classifier, eval_resize):
    if not isinstance(eval_resize, EvalResize):
        raise TypeError(f"eval_resize must be None or an EvalResize, got {eval_resize!r}")
    size = eval_resize.image_size
    if _classifier_shape(classifier)[1:3] != (size, size):
        raise ValueError(f"eval_resize crops {size} x {size} images but the classifier takes "
                         f"input shape {classifier.input_shape}")


def _request_shape(classifier, eval_resize=None):
    """(H, W, the channel counts taken) of the images a request sends.

    H and W are None (any size) with an `eval_resize`; a classifier of RGB
    images takes grayscale ones too.
    """
    _, height, width, channels = _classifier_shape(classifier)
    if eval_resize is not None:
        height = width = None
    return height, width, (1, 3) if channels == 3 else (channels,)


def _input_spec(classifier, eval_resize=None):
    """The input spec of `serving_default`: uint8 `images` [None, H, W, C], C None
    where the classifier takes grayscale as well as RGB (`_request_shape`)."""
    height, width, channels = _request_shape(classifier, eval_resize)
    return tf.TensorSpec((None, height, width, channels[0] if len(channels) == 1 else None),
                         tf.uint8, name="images")


def _checked_images(images, height, width, channels):
    """`images` if of shape [B, height, width, c] with c in `channels` (height, width
    None: any), else an InvalidArgumentError stating the shape expected.

    A signature restored by tf.saved_model.load checks only the dtype of what it is
    fed: without this a single [H, W, C] image, another size or other channels fail
    in some later op, with that op's message, or return nonsense.
    """
    shape = tf.shape(images)
    # Padded to four entries, so that a tensor of any rank can be compared.
    dims = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    fits = tf.equal(tf.size(shape), 4) & tf.reduce_any(tf.equal(dims[3], channels))
    for axis, size in ((1, height), (2, width)):
        if size is not None:
            fits &= tf.equal(dims[axis], size)
    sizes = [name if size is None else str(size)
             for size, name in ((height, "height"), (width, "width"))]
    expected = ", ".join(["batch", *sizes, " or ".join(map(str, channels))])

    def refuse():
        message = f"images must be uint8 [{expected}]; got shape"
        with tf.control_dependencies([tf.debugging.Assert(False, [message, shape],
                                                          summarize=8)]):
            return tf.identity(images)

    # A condition, not a bare assertion: every later op depends on its output, so the
    # assertion fails before any of them can.
    return tf.cond(fits, lambda: images, refuse)


def _to_channels(images, channels):
    """uint8 [B, H, W, 1 or `channels`] -> [B, H, W, `channels`]: grayscale repeated."""
    if channels == 1:
        return images
    return tf.cond(tf.equal(tf.shape(images)[3], 1),
                   lambda: tf.tile(images, [1, 1, 1, channels]), lambda: images)


def _names_table(names_path, num_classes):
    """A class (int64) -> name (string) table read from the names file `names_path`."""
    return tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        names_path, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
        tf.lookup.TextFileIndex.WHOLE_LINE, vocab_size=num_classes), default_value="")


def _eval_transform(images, eval_resize):
    """uint8 [B, H, W, C] -> uint8 [B, image_size, image_size, C], as eval_dataset.

    Maps streaming's own per-image functions over the batch (rather than a
    batched copy of them), so the crops equal eval_dataset's bit for bit and
    stay equal if those functions change.
    """
    size, channels = eval_resize.image_size, images.shape[-1]

    def transform(image):
        resized = streaming.resize_image(image, eval_resize.resize, eval_resize.mode,
                                         eval_resize.antialias)
        return streaming.center_crop(resized, size)

    return tf.map_fn(transform, images,
                     fn_output_signature=tf.TensorSpec((size, size, channels), tf.uint8))


def _serving_archive(classifier, eval_resize, names_path, num_classes):
    """A Keras ExportArchive whose `serving_default` maps images to probabilities,
    classes and class names (read from `names_path`, which saving copies to assets/)."""
    spec = _input_spec(classifier, eval_resize)
    height, width, taken = _request_shape(classifier, eval_resize)
    channels = _classifier_shape(classifier)[3]
    names = _names_table(names_path, num_classes)
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.track(names)

    def serve(images):
        images = _checked_images(images, height, width, taken)
        images = tf.ensure_shape(_to_channels(images, channels), (None, height, width, channels))
        if eval_resize is not None:
            images = _eval_transform(images, eval_resize)
        # float32 before the softmax: a mixed-precision classifier's float16
        # logits would otherwise round the probabilities.
        logits = tf.cast(classifier(images, training=False), tf.float32)
        classes = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": classes,
            "class_names": names.lookup(classes),
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
