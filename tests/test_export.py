"""Checks of the SavedModel export against the serving contract (idn_tf/export.py)."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from idn_tf import export, models
from idn_tf.data import streaming

BATCH_SIZES = (1, 7)
# Class names with a space and a non-ASCII letter: the names file is UTF-8.
NAMES = ("cat", "dog", "sea lion", "żubr", "emu", "fox", "gnu", "hare", "ibis", "jay")

# The serving scripts run in a fresh interpreter that imports only numpy and
# tensorflow: idn_tf cannot be imported at all, and no Keras module beyond
# those `import tensorflow` itself pulls in may be loaded, so the SavedModel
# must stand on its traced graphs (no ZeroPadShortcut or other custom
# classes). Each fills `outputs` (strings as str arrays: np.savez must not
# pickle) and ends with SERVE_ONLY_END.
SERVE_ONLY_START = r"""
import sys


class ForbidIdnTf:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "idn_tf":
            raise ImportError(f"serving must not need {name}")


sys.meta_path.insert(0, ForbidIdnTf())

import numpy as np
import tensorflow as tf


def keras_modules():
    return {m for m in sys.modules if m.split(".")[0] == "keras"}


def as_numpy(tensor):
    array = tensor.numpy()
    return np.char.decode(array.astype(bytes), "utf-8") if tensor.dtype == tf.string else array


def try_bad_inputs(serve, outputs, **cases):
    for case, bad in cases.items():
        try:
            serve(images=tf.constant(bad))
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            outputs[f"rejected_{case}"] = np.array(f"{type(error).__name__}: {error}")


keras_with_tf = keras_modules()
outputs = {}
"""
SERVE_ONLY_END = r"""
assert not [m for m in sys.modules if m.split(".")[0] == "idn_tf"]
assert keras_modules() == keras_with_tf, sorted(keras_modules() - keras_with_tf)
np.savez(outputs_path, **outputs)
"""

# argv: saved_model_dir, images.npz, outputs.npz to write, batch sizes. The first
# n of "images" are served for each batch size n ("<key>_<n>"), and every other
# array of images.npz, e.g. "gray", whole ("<key>_gray").
LOAD_AND_SERVE = SERVE_ONLY_START + r"""
saved_dir, images_path, outputs_path, *batch_sizes = sys.argv[1:]
serve = tf.saved_model.load(saved_dir).signatures["serving_default"]
arrays = dict(np.load(images_path))
images = arrays.pop("images")
requests = {str(n): images[:int(n)] for n in batch_sizes} | arrays
for request, batch in requests.items():
    for key, value in serve(images=tf.constant(batch)).items():
        outputs[f"{key}_{request}"] = as_numpy(value)
try_bad_inputs(serve, outputs, float32=images.astype(np.float32), single_image=images[0],
               wrong_size=images[:, 1:], two_channels=np.repeat(images[..., :1], 2, axis=-1))
""" + SERVE_ONLY_END

# A client of an export with EvalResize: decodes image files as
# streaming.decode does and sends them at their own size.
# argv: saved_model_dir, outputs.npz to write, then one request batch per
# argument: image paths joined by ",". Outputs of batch i are "<key>_<i>".
SERVE_PHOTOS = SERVE_ONLY_START + r"""
saved_dir, outputs_path, *batches = sys.argv[1:]
serve = tf.saved_model.load(saved_dir).signatures["serving_default"]


def decoded(path, channels):
    return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                              expand_animations=False).numpy()


for i, batch in enumerate(batches):
    for channels, suffix in ((3, ""), (1, "_gray")):
        images = np.stack([decoded(path, channels) for path in batch.split(",")])
        for key, value in serve(images=tf.constant(images)).items():
            outputs[f"{key}_{i}{suffix}"] = as_numpy(value)
image = decoded(batches[0].split(",")[0], 3)
try_bad_inputs(serve, outputs, float32=image[None].astype(np.float32), single_image=image,
               two_channels=image[None, :, :, :2])
""" + SERVE_ONLY_END


def classifier(arch, input_shape, seed=0):
    """`arch` with random weights and BatchNormalization statistics far from (0, 1).

    Such statistics make inference-mode and training-mode batch
    normalisation give different answers, so serving must use the former.
    """
    channels = input_shape[-1]
    model = models.build_classifier(
        arch, input_shape, 10, np.full(channels, 0.4), np.full(channels, 0.25), seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0.0, 0.2, beta.shape),
                rng.normal(0.0, 0.5, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
    return model


def spread_logits(model, images):
    """Resets the dense "logits" layer so the logits on `images` have mean 0 and std 2.

    A random network gives nearly the same logits, and so the same class,
    for every image; centred and scaled they pick various classes with
    probabilities far from uniform.
    """
    layer = model.get_layer("logits")
    kernel, _ = layer.get_weights()
    features = keras.Model(model.input, layer.input).predict(images, verbose=0)
    centred = (features - features.mean(axis=0)) @ kernel
    kernel = kernel * (2.0 / centred.std())
    layer.set_weights([kernel, -features.mean(axis=0) @ kernel])


def exported(arch, input_shape, tmp_path_factory):
    """(classifier, SavedModel folder, uint8 test images) of a fresh `arch`."""
    model = classifier(arch, input_shape)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(max(BATCH_SIZES),) + input_shape).astype(np.uint8)
    spread_logits(model, images)
    return model, export.export_saved_model(model, tmp_path_factory.mktemp("export"), arch), images


@pytest.fixture(scope="module")
def small_cnn_export(tmp_path_factory):
    return exported("small_cnn", (8, 8, 1), tmp_path_factory)


@pytest.fixture(scope="module")
def resnet20_export(tmp_path_factory):  # has the custom layer ZeroPadShortcut
    return exported("resnet20", (16, 16, 3), tmp_path_factory)


@pytest.fixture(scope="module")
def resnet34_export(tmp_path_factory):  # ELR's backbone: projection shortcuts
    return exported("resnet34", (32, 32, 3), tmp_path_factory)


@pytest.fixture(scope="module")
def preact_resnet18_export(tmp_path_factory):  # DivideMix's backbone
    return exported("preact_resnet18", (32, 32, 3), tmp_path_factory)


@pytest.fixture(scope="module")
def named_export(tmp_path_factory):
    """(classifier, SavedModel folder, grayscale uint8 images [7, 8, 8, 1]) of an RGB
    small_cnn exported with the class names NAMES."""
    model = classifier("small_cnn", (8, 8, 3))
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, size=(max(BATCH_SIZES), 8, 8, 1)).astype(np.uint8)
    spread_logits(model, np.repeat(gray, 3, axis=-1))
    path = export.export_saved_model(model, tmp_path_factory.mktemp("export"), "named",
                                     class_names=NAMES)
    return model, path, gray


@pytest.fixture(scope="module")
def dividemix_export(tmp_path_factory):  # DivideMix's mean of two networks' softmax
    from idn_tf import dividemix
    nets = [classifier("small_cnn", (8, 8, 1), seed=s) for s in (0, 1)]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(max(BATCH_SIZES), 8, 8, 1)).astype(np.uint8)
    for net in nets:
        spread_logits(net, images)
    model = dividemix.ensemble(*nets)
    return model, export.export_saved_model(model, tmp_path_factory.mktemp("export"),
                                            "dividemix"), images


def serve_without_idn_tf(path, requests, tmp_path):
    """LOAD_AND_SERVE's outputs for the SavedModel `path`: `requests` are the arrays of
    its images.npz ("images", served for each of BATCH_SIZES, and others served whole)."""
    np.savez(tmp_path / "images.npz", **requests)
    args = [path, tmp_path / "images.npz", tmp_path / "outputs.npz", *BATCH_SIZES]
    subprocess.run([sys.executable, "-c", LOAD_AND_SERVE, *map(str, args)], cwd=tmp_path,
                   check=True)
    return np.load(tmp_path / "outputs.npz")


def expected_shape(height, width, channels):
    """The start of the signature's message for an image batch of another shape."""
    return f"images must be uint8 [batch, {height}, {width}, {channels}]; got shape"


def softmax(logits):
    """Row-wise softmax in float64, the reference for the served probabilities."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.mark.e2e
@pytest.mark.parametrize("export_fixture", ["small_cnn_export", "resnet20_export",
                                            "resnet34_export", "preact_resnet18_export",
                                            "dividemix_export"])
def test_saved_model_serves_like_keras_without_idn_tf(export_fixture, request, tmp_path):
    model, path, images = request.getfixturevalue(export_fixture)
    # The 18- and 34-layer nets' float32 logits differ between batch sizes (oneDNN picks
    # other kernels) by a few 1e-5 relative; the shallow nets' by less than 1e-5.
    deep = export_fixture in ("resnet34_export", "preact_resnet18_export")
    tolerance = dict(rtol=1e-4, atol=1e-5) if deep else dict(rtol=1e-5, atol=1e-6)
    outputs = serve_without_idn_tf(path, {"images": images}, tmp_path)

    logits = model.predict(images, verbose=0).astype(np.float64)
    assert len(set(logits.argmax(-1))) > 1  # else comparing classes proves little
    for n in BATCH_SIZES:
        probabilities, classes = outputs[f"probabilities_{n}"], outputs[f"classes_{n}"]
        assert probabilities.dtype == np.float32 and probabilities.shape == (n, 10)
        assert classes.dtype == np.int64 and classes.shape == (n,)
        np.testing.assert_allclose(probabilities, softmax(logits[:n]), **tolerance)
        np.testing.assert_array_equal(classes, logits[:n].argmax(-1))
        # Exported without names: each class is named by its number.
        np.testing.assert_array_equal(outputs[f"class_names_{n}"],
                                      [str(k) for k in logits[:n].argmax(-1)])
    assert "uint8" in str(outputs["rejected_float32"])
    height, width, channels = images.shape[1:]
    shape = expected_shape(height, width, "1 or 3" if channels == 3 else channels)
    for case in ("single_image", "wrong_size", "two_channels"):
        assert shape in str(outputs[f"rejected_{case}"]), case


@pytest.mark.e2e
def test_saved_model_names_the_class_and_takes_grayscale_without_idn_tf(named_export, tmp_path):
    model, path, gray = named_export
    rgb = np.repeat(gray, 3, axis=-1)
    outputs = serve_without_idn_tf(path, {"images": rgb, "gray": gray}, tmp_path)

    logits = model.predict(rgb, verbose=0).astype(np.float64)
    assert len(set(logits.argmax(-1))) > 1  # else comparing names proves little
    for n in BATCH_SIZES:
        names = outputs[f"class_names_{n}"]
        assert names.shape == (n,)
        served_argmax = outputs[f"probabilities_{n}"].argmax(-1)
        np.testing.assert_array_equal(names, np.array(NAMES)[served_argmax])
        np.testing.assert_array_equal(names, np.array(NAMES)[logits[:n].argmax(-1)])
        np.testing.assert_allclose(outputs[f"probabilities_{n}"], softmax(logits[:n]),
                                   rtol=1e-5, atol=1e-6)
    # The grayscale images get the answer of the same images repeated into RGB.
    n = max(BATCH_SIZES)
    for key in ("probabilities", "classes", "class_names"):
        np.testing.assert_array_equal(outputs[f"{key}_gray"], outputs[f"{key}_{n}"], err_msg=key)
    # The names file: one UTF-8 line per class, in class order, and nothing else in assets/.
    assert os.listdir(os.path.join(path, "assets")) == ["class_names.txt"]
    with open(os.path.join(path, "assets", "class_names.txt"), "rb") as f:
        assert f.read() == "cat\ndog\nsea lion\nżubr\nemu\nfox\ngnu\nhare\nibis\njay\n".encode()
    assert expected_shape(8, 8, "1 or 3") in str(outputs["rejected_two_channels"])


def saved_model_cli_signatures(path):
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}}} from `saved_model_cli show --all`."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    text = subprocess.run([cli, "show", "--dir", path, "--all"],
                          check=True, capture_output=True, text=True).stdout
    signatures, tensor = {}, None
    for line in text.splitlines():
        line = line.strip()
        if match := re.fullmatch(r"signature_def\['(.+)'\]:", line):
            signature = signatures.setdefault(match[1], {"inputs": {}, "outputs": {}})
        elif match := re.fullmatch(r"(inputs|outputs)\['(.+)'\] tensor_info:", line):
            tensor = signature[match[1]].setdefault(match[2], {})
        elif match := re.fullmatch(r"(dtype|shape): (.+)", line):
            tensor[match[1]] = match[2]
    return {name: {side: {k: (v["dtype"], v["shape"]) for k, v in tensors.items()}
                   for side, tensors in signature.items()}
            for name, signature in signatures.items()}


@pytest.mark.e2e
def test_saved_model_cli_lists_the_serving_signature(small_cnn_export):
    _, path, _ = small_cnn_export
    assert saved_model_cli_signatures(path)["serving_default"] == {
        "inputs": {"images": ("DT_UINT8", "(-1, 8, 8, 1)")},
        "outputs": {"probabilities": ("DT_FLOAT", "(-1, 10)"), "classes": ("DT_INT64", "(-1)"),
                    "class_names": ("DT_STRING", "(-1)")},
    }


def test_next_version_is_one_above_the_largest_integer_entry(tmp_path):
    assert export.next_version(tmp_path / "missing") == 1
    assert export.next_version(tmp_path) == 1
    for name in ("2", "10", "9", "latest", ".tmp-3x", "7b"):
        (tmp_path / name).mkdir()
    assert export.next_version(tmp_path) == 11  # numeric, not lexicographic, maximum


@pytest.mark.e2e
def test_exports_take_consecutive_versions_and_skip_other_folders(tmp_path):
    model = classifier("small_cnn", (8, 8, 1))
    (tmp_path / "digits" / "notes").mkdir(parents=True)
    (tmp_path / "digits" / ".tmp-stale").mkdir()
    first = export.export_saved_model(model, tmp_path, "digits")
    second = export.export_saved_model(model, str(tmp_path), "digits")
    assert (first, second) == (str(tmp_path / "digits" / "1"), str(tmp_path / "digits" / "2"))
    assert sorted(os.listdir(tmp_path / "digits")) == [".tmp-stale", "1", "2", "notes"]
    for path in (first, second):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))


def test_failed_export_leaves_no_folder(tmp_path, monkeypatch):
    def write_half_and_fail(self, filepath, **kwargs):
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    # keras.export.ExportArchive() returns a backend subclass; patch the class
    # export_saved_model will actually get.
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", write_half_and_fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(classifier("small_cnn", (8, 8, 1)), tmp_path, "digits")
    assert os.listdir(tmp_path / "digits") == []


@pytest.mark.parametrize("model_name", ["", "a/b", "../digits", "/digits", ".", ".."])
def test_model_name_must_be_a_plain_folder_name(tmp_path, model_name):
    with pytest.raises(ValueError, match="plain folder name"):
        export.export_saved_model(None, tmp_path / "exports", model_name)
    assert not (tmp_path / "exports").exists()


def test_export_is_readable_like_any_new_folder(tmp_path):
    classifier = models.build_classifier("small_cnn", (8, 8, 1), 10, np.zeros(1), np.ones(1), seed=0)
    old = os.umask(0o022)
    try:
        path = export.export_saved_model(classifier, tmp_path, "m")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o755  # mkdtemp alone would give 0700


# ---------------------------------------------------------------------------------------
# Exports with EvalResize: photos of any size, transformed as streaming.eval_dataset does.

EVAL_RESIZE = {"square": export.EvalResize(resize=20, image_size=16),
               "shorter_side": export.EvalResize(resize=20, image_size=16, mode="shorter_side")}
# name: (height, width, PIL mode). "a" and "d" share a size to make a batch of two;
# with shorter_side at 20, "e" (width 20·37 // 25 = 29) and "f" (height 20·41 // 18 = 45)
# have odd margins around the 16² crop, where (H − crop) // 2 rounds down.
PHOTOS = {"a.jpg": (30, 40, "RGB"), "b.png": (25, 25, "L"), "c.jpg": (40, 18, "RGB"),
          "d.png": (30, 40, "RGB"), "e.jpg": (25, 37, "RGB"), "f.png": (41, 18, "RGB")}
# Request batches (file names joined by ",") served per resize mode.
PHOTO_BATCHES = {"square": ["a.jpg", "b.png", "c.jpg", "d.png", "a.jpg,d.png"],
                 "shorter_side": ["e.jpg", "f.png", "a.jpg,d.png"]}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """A folder of random-pixel JPEG and PNG files of the sizes in PHOTOS."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2)
    for name, (height, width, mode) in PHOTOS.items():
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / name)
    return folder


def eval_crops(paths, eval_resize):
    """uint8 [N, s, s, 3] crops of `paths` from streaming.eval_dataset, the reference."""
    data = streaming.eval_dataset(paths, np.zeros(len(paths)), batch_size=4,
                                  image_size=eval_resize.image_size, resize=eval_resize.resize,
                                  resize_mode=eval_resize.mode, antialias=eval_resize.antialias)
    return np.concatenate([batch["image"].numpy() for batch in data])


@pytest.fixture(scope="module")
def photo_classifier(photo_dir):
    """A 16 x 16 x 3 small_cnn whose logits on the square-mode crops are spread out."""
    model = classifier("small_cnn", (16, 16, 3))
    spread_logits(model, eval_crops([photo_dir / name for name in PHOTOS], EVAL_RESIZE["square"]))
    return model


@pytest.fixture(scope="module")
def photo_exports(photo_classifier, tmp_path_factory):
    """{resize mode: SavedModel folder} of `photo_classifier` exported with EVAL_RESIZE."""
    base = tmp_path_factory.mktemp("photo_export")
    return {mode: export.export_saved_model(photo_classifier, base, mode, eval_resize=eval_resize)
            for mode, eval_resize in EVAL_RESIZE.items()}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["square", "shorter_side"])
def test_saved_model_serves_photos_of_any_size_like_eval_dataset(
        mode, photo_classifier, photo_exports, photo_dir, tmp_path):
    batches = [[photo_dir / name for name in batch.split(",")] for batch in PHOTO_BATCHES[mode]]
    args = [photo_exports[mode], tmp_path / "outputs.npz",
            *(",".join(map(str, batch)) for batch in batches)]
    subprocess.run([sys.executable, "-c", SERVE_PHOTOS, *map(str, args)], cwd=tmp_path, check=True)
    outputs = np.load(tmp_path / "outputs.npz")

    expected_classes, gray_batches = [], 0
    for i, batch in enumerate(batches):
        crops = eval_crops(batch, EVAL_RESIZE[mode])
        logits = photo_classifier.predict(crops, verbose=0).astype(np.float64)
        probabilities, classes = outputs[f"probabilities_{i}"], outputs[f"classes_{i}"]
        assert probabilities.dtype == np.float32 and probabilities.shape == (len(batch), 10)
        assert classes.dtype == np.int64 and classes.shape == (len(batch),)
        np.testing.assert_allclose(probabilities, softmax(logits), rtol=1e-5, atol=1e-6,
                                   err_msg=f"request batch {PHOTO_BATCHES[mode][i]}")
        np.testing.assert_array_equal(classes, logits.argmax(-1))
        expected_classes += list(classes)
        # A grayscale file decoded to one channel gets its answer decoded to three.
        if all(PHOTOS[name][2] == "L" for name in PHOTO_BATCHES[mode][i].split(",")):
            gray_batches += 1
            for key in ("probabilities", "classes", "class_names"):
                np.testing.assert_array_equal(outputs[f"{key}_{i}_gray"], outputs[f"{key}_{i}"])
    assert gray_batches or mode != "square"  # "b.png"
    assert len(set(expected_classes)) > 1  # else comparing classes proves little
    assert "uint8" in str(outputs["rejected_float32"])
    # Turned away by the signature's shape check, not by some later op that
    # happens to fail on them.
    for case in ("single_image", "two_channels"):
        assert expected_shape("height", "width", "1 or 3") in str(outputs[f"rejected_{case}"])


@pytest.mark.e2e
def test_saved_model_cli_lists_images_of_any_size(photo_exports):
    # Any size, and one or three channels.
    assert saved_model_cli_signatures(photo_exports["square"])["serving_default"] == {
        "inputs": {"images": ("DT_UINT8", "(-1, -1, -1, -1)")},
        "outputs": {"probabilities": ("DT_FLOAT", "(-1, 10)"), "classes": ("DT_INT64", "(-1)"),
                    "class_names": ("DT_STRING", "(-1)")},
    }


def test_eval_resize_must_crop_the_classifier_input_size(tmp_path):
    model = classifier("small_cnn", (8, 8, 1))
    with pytest.raises(ValueError, match="classifier takes"):
        export.export_saved_model(model, tmp_path, "m", eval_resize=export.EvalResize(20, 16))
    with pytest.raises(TypeError, match="EvalResize"):
        export.export_saved_model(model, tmp_path, "m", eval_resize=(10, 8))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("names, message", [
    (NAMES[:9], "9 class names for a classifier of 10 classes"),
    (NAMES[:9] + ("cat",), "'cat' is already class 0"),
    (NAMES[:9] + ("",), "class 9 has no name"),
    (NAMES[:9] + ("j\nay",), "holds a line break"),
])
def test_class_names_must_name_each_class_once_on_one_line(tmp_path, names, message):
    with pytest.raises(ValueError, match=message):
        export.export_saved_model(classifier("small_cnn", (8, 8, 1)), tmp_path, "m",
                                  class_names=names)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("fields, message", [
    ({"mode": "crop"}, "mode must be one of"),
    ({"resize": 20, "image_size": 24}, "image_size must be in"),
    ({"image_size": 0}, "image_size must be in"),
])
def test_eval_resize_rejects_invalid_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        export.EvalResize(**fields)
