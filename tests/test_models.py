"""Checks of the classifier builders."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import config, models
from idn_tf.data import views
from idn_tf.models import resnet_basic
from idn_tf.models.resnet50 import CaffePreprocessing
from idn_tf.models.resnet_cifar import DEPTHS, ZeroPadShortcut


def test_config_lists_the_same_architectures():
    assert config.ARCHITECTURES == models.ARCHITECTURES
    assert set(DEPTHS) | {"small_cnn", "resnet50"} | set(resnet_basic.BUILDERS) == set(models.ARCHITECTURES)


def test_config_knows_resnet50s_smallest_input():
    from idn_tf.models.resnet50 import MIN_SIZE
    assert config.MIN_IMAGE_SIZE["resnet50"] == MIN_SIZE


def test_pretrained_fetches_the_file_keras_applications_loads():
    # idn_tf.pretrained downloads before TensorFlow starts; keras.applications must then
    # find that very file (name, URL, md5) in its cache and download nothing.
    from keras.src.applications import resnet

    from idn_tf import pretrained
    assert pretrained.IMAGENET_URL == resnet.BASE_WEIGHTS_PATH
    assert pretrained.IMAGENET_NOTOP_MD5 == resnet.WEIGHTS_HASHES["resnet50"][1]
    assert pretrained.IMAGENET_NOTOP_FILE == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_preprocessing_standardises_raw_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 8, 8, 3)).astype(np.uint8)
    mean, std = views.pixel_statistics(images)
    x = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-12)
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    out = keras.Model(inputs, models.preprocessing(inputs, mean, std))(images).numpy()
    np.testing.assert_allclose(out, (images / 255.0 - mean) / std, rtol=1e-4, atol=1e-4)


def test_small_cnn_shapes_and_seeded_init():
    a = models.build_classifier("small_cnn", (8, 8, 1), 10, [0.5], [0.2], seed=3)
    b = models.build_classifier("small_cnn", (8, 8, 1), 10, [0.5], [0.2], seed=3)
    assert a.input.dtype == "uint8"
    assert a(np.zeros((2, 8, 8, 1), np.uint8)).shape == (2, 10)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


# --- CIFAR ResNets (option A) -------------------------------------------------

def resnet_cifar_weight_counts(depth, num_classes, channels=3):
    """(trainable, total) weights of ResNet-`depth` by hand, independent of the model code.

    Conv 3·3·cin·cout (no bias), BatchNormalization 2·c trainable (gamma,
    beta) + 2·c moving mean/variance, dense 64·K + K, option-A shortcuts 0.
    The preprocessing Normalization holds its mean/variance as constants and
    adds nothing to `count_params()`.
    """
    n = (depth - 2) // 6
    convs, cin = [(channels, 16)], 16
    for cout in (16, 32, 64):
        for _ in range(n):
            convs += [(cin, cout), (cout, cout)]
            cin = cout
    conv = sum(9 * a * b for a, b in convs)
    bn = sum(2 * b for _, b in convs)
    dense = 64 * num_classes + num_classes
    return conv + bn + dense, conv + 2 * bn + dense


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def uint8_images(batch, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, *shape), dtype=np.uint8)


def test_resnet32_has_the_papers_0_46_million_parameters():
    model = models.resnet32(10)
    trainable, total = resnet_cifar_weight_counts(32, 10)
    # count_params() counts every weight, BN moving statistics included; the
    # literature's 0.464 M counts trainable weights only. Compare each to its own.
    assert model.count_params() == total == 466_426
    assert trainable_count(model) == trainable == 464_154
    np.testing.assert_allclose(model.count_params(), 0.46e6, rtol=0.02)
    np.testing.assert_allclose(trainable_count(model), 0.464e6, rtol=0.002)


def test_resnet32_convenience_takes_uint8_cifar_images():
    from idn_tf.models import resnet32
    model = resnet32(100)
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, 32, 32, 3)
    assert model(uint8_images(2)).shape == (2, 100)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.e2e) if DEPTHS[a] > 50 else a
                                  for a in sorted(DEPTHS, key=DEPTHS.get)])  # e2e: > 1.5 s
def test_resnet_depth_family(arch):
    depth, num_classes = DEPTHS[arch], 7
    model = models.build_classifier(arch, (32, 32, 3), num_classes, [0.5] * 3, [0.25] * 3, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    # 6n+1 3×3 convs (+ the dense layer = depth weighted layers), no 1×1 projections.
    assert len(convs) == depth - 1
    assert all(conv.kernel_size == (3, 3) and not conv.use_bias for conv in convs)
    assert model.count_params() == resnet_cifar_weight_counts(depth, num_classes)[1]
    assert model(uint8_images(3)).shape == (3, num_classes)


@pytest.fixture(scope="module")
def resnet20():
    return models.build_classifier("resnet20", (32, 32, 3), 10, [0.5, 0.4, 0.3], [0.25] * 3, seed=1)


@pytest.mark.e2e
def test_resnet_forward_eager_and_compiled(resnet20):
    images = uint8_images(4)
    eager = resnet20(images, training=False).numpy()
    compiled = tf.function(lambda x: resnet20(x, training=False))(tf.constant(images)).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-4)
    trained = tf.function(lambda x: resnet20(x, training=True))(tf.constant(images))
    assert trained.shape == (4, 10) and np.isfinite(trained.numpy()).all()


@pytest.mark.parametrize("strides, channels", [(2, 12), (2, 8), (1, 10)])
def test_option_a_shortcut_matches_numpy(strides, channels):
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 5)).astype(np.float32)
    extra = channels - x.shape[-1]
    desired = np.concatenate([
        np.zeros((2, *x[:, ::strides, ::strides].shape[1:3], extra // 2), np.float32),
        x[:, ::strides, ::strides, :],
        np.zeros((2, *x[:, ::strides, ::strides].shape[1:3], extra - extra // 2), np.float32),
    ], axis=-1)
    actual = ZeroPadShortcut(channels, strides)(x)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=0)


def test_strided_convs_are_centred_on_the_pixels_the_shortcut_keeps():
    model = models.build_classifier("resnet20", (32, 32, 3), 10, [0.5] * 3, [0.25] * 3, seed=1)
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)]
    assert len(convs) == 2
    for conv in convs:
        # A kernel that copies the centre tap of each input channel: the
        # output must then be the input at the subsampled pixels x[::2, ::2].
        kernel = np.zeros(conv.kernel.shape, np.float32)
        cin = kernel.shape[2]
        kernel[1, 1, np.arange(cin), np.arange(cin)] = 1.0
        conv.kernel.assign(kernel)
        x = np.random.default_rng(0).normal(size=(2, 32, 32, cin)).astype(np.float32)
        pad = conv.input._keras_history.operation  # the layer feeding the conv in the model
        assert isinstance(pad, keras.layers.ZeroPadding2D)
        probe = keras.Sequential([pad, conv])
        np.testing.assert_allclose(probe(x)[..., :cin], x[:, ::2, ::2, :], atol=1e-6)


def test_resnet_keras_file_round_trip(resnet20, tmp_path):
    path = tmp_path / "resnet20.keras"
    resnet20.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no Lambda layers to refuse
    assert any(isinstance(layer, ZeroPadShortcut) for layer in loaded.layers)
    images = uint8_images(5, seed=1)
    np.testing.assert_allclose(loaded(images, training=False), resnet20(images, training=False),
                               rtol=1e-5, atol=1e-5)


# --- ResNet-50 ---------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet50():
    # ~1 s to build on 2 CPU cores: once for the module.
    return models.build_classifier("resnet50", (32, 32, 3), 14, [0.5] * 3, [0.25] * 3, seed=0)


@pytest.mark.e2e
def test_resnet50_random_init_builds_at_32x32(resnet50):
    assert resnet50.input.dtype == "uint8"
    assert resnet50(uint8_images(2)).shape == (2, 14)
    assert resnet50.get_layer("standardize") is not None  # random init: the dataset's statistics


def save_legacy_h5(model, path):
    # The layout of Keras's own resnet50_..._notop.h5 download (Keras 2 HDF5);
    # Keras 3 only writes it through this internal function.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.e2e
@pytest.mark.parametrize("filename", ["notop.weights.h5", "notop.h5"])
def test_resnet50_loads_a_local_weights_file(resnet50, tmp_path, filename):
    backbone = resnet50.get_layer("resnet50_backbone")
    path = tmp_path / filename
    if filename.endswith(".weights.h5"):
        backbone.save_weights(path)
    else:
        save_legacy_h5(backbone, path)
    model = models.build_classifier("resnet50", (32, 32, 3), 14, None, None, backbone_weights=str(path))
    for actual, desired in zip(model.get_layer("resnet50_backbone").get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(actual, desired)
    # Pretrained weights get the caffe preprocessing they were trained with.
    images = uint8_images(2)
    preprocessed = keras.Model(model.input, model.get_layer("caffe_preprocess").output)(images)
    np.testing.assert_allclose(
        preprocessed, keras.applications.resnet50.preprocess_input(images.astype(np.float32)),
        rtol=1e-6, atol=1e-4)


def test_caffe_preprocessing_keras_file_round_trip(tmp_path):
    inputs = keras.Input((4, 4, 3), dtype="uint8")
    model = keras.Model(inputs, CaffePreprocessing()(inputs))
    model.save(tmp_path / "caffe.keras")
    images = uint8_images(2, shape=(4, 4, 3))
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "caffe.keras")(images), model(images))


@pytest.mark.parametrize("weights, match", [
    ("missing.h5", "not found"), ("weights.npz", r"\.h5"),
    pytest.param("junk.h5", "not a weights file", marks=pytest.mark.e2e),  # builds ResNet-50
])
def test_resnet50_bad_weights_path_is_a_clear_error(tmp_path, weights, match):
    (tmp_path / "weights.npz").write_bytes(b"")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=match):
        models.build_classifier("resnet50", (32, 32, 3), 14, None, None,
                                backbone_weights=str(tmp_path / weights))


def test_resnet50_offline_imagenet_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):  # what keras.utils.get_file raises without network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")
    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(ValueError, match="local path"):
        models.build_classifier("resnet50", (32, 32, 3), 14, None, None, backbone_weights="imagenet")


def test_resnet50_rejects_small_images_and_weights_for_other_archs():
    with pytest.raises(ValueError, match="at least 32"):
        models.build_classifier("resnet50", (16, 16, 3), 14, [0.5] * 3, [0.25] * 3)
    with pytest.raises(ValueError, match="resnet50 only"):
        models.build_classifier("resnet32", (32, 32, 3), 14, None, None, backbone_weights="imagenet")


def test_cifar_resnet_batch_norm_is_synchronized_across_replicas():
    """Unsynchronized BN lets each replica's moving statistics drift on its share of the batch."""
    net = models.build_classifier("resnet20", (8, 8, 3), 10, np.zeros(3), np.ones(3), seed=0)
    norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 19 and all(layer.synchronized for layer in norms)


def test_resnet50_batch_norm_is_synchronized_across_replicas():
    net = models.build_classifier("resnet50", (32, 32, 3), 10, np.zeros(3), np.ones(3), seed=0)
    norms = [layer for layer in net.get_layer("resnet50_backbone").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 53 and all(layer.synchronized for layer in norms)
