"""Checks of the classifier builders."""

import numpy as np

from idn_tf import config, models


def test_config_lists_the_same_architectures():
    assert config.ARCHITECTURES == models.ARCHITECTURES


def test_preprocessing_standardises_raw_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 8, 8, 3)).astype(np.uint8)
    mean, std = models.pixel_statistics(images)
    x = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-12)
    import keras
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
