"""Checks of the Tanaka method's settings (`idn_tf.methods.tanaka`): the class prior that
reaches its loss, its first phase's learning rate, and a 28x28 run with the digits recipe
that diverged before (docs/baselines.md, "Tanaka's first phase at half the rate").

Expected values are computed here in numpy from the authors' numbers and the loss's
formula, never from the method's own output.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from idn_tf import config as config_lib, methods, stages, train
from idn_tf.data import sources, views
from idn_tf.errors import ConfigError
from idn_tf.methods import base, tanaka

TANAKA = methods.get("tanaka")
K = 3
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])      # observed: p = (0.6, 0.3, 0.1)


def tiny_data(labels=LABELS, size=8):
    rng = np.random.default_rng(0)
    n = len(labels)
    split = sources.Split(images=rng.integers(0, 256, (n, size, size, 1)).astype(np.uint8),
                          labels=labels, clean_labels=labels)
    return views.ArrayData(sources.Dataset(name="npz", train=split, test=split,
                                           num_classes=K, class_names=("0", "1", "2")))


def resolve(**flags):
    return config_lib.resolve({"method": "tanaka", **flags})


def loss_numpy(z, labels, prior, alpha=1.2, beta=0.8):
    """mean_i[KL(onehot(label_i) ‖ s_i) + β H(s_i)] + α KL(p ‖ mean_i s_i), s = softmax(z)."""
    z = z - z.max(axis=1, keepdims=True)
    log_s = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    s = np.exp(log_s)
    classification = -log_s[np.arange(len(z)), labels]
    entropy = -(s * log_s).sum(axis=1)
    mean_s = s.mean(axis=0)
    kl = sum(p * np.log(p / m) for p, m in zip(prior, mean_s) if p > 0)
    return np.mean(classification + beta * entropy) + alpha * kl


@pytest.mark.parametrize("flag", ["observed", "file"])
def test_the_prior_reaches_the_loss(flag, tmp_path):
    if flag == "file":
        expected_prior = np.array([0.2, 0.5, 0.3])
        path = tmp_path / "prior.txt"
        path.write_text("0.2\n0.5\n0.3\n")
        flag = str(path)
    else:
        expected_prior = np.bincount(LABELS) / len(LABELS)
    config, data = resolve(tanaka_prior=flag), tiny_data()
    run = base.Run(config=config, data=data, labels=LABELS, rate=0.0, folder=None,
                   given=TANAKA.preflight(config, data))
    model = TANAKA.labels_model(run)
    np.testing.assert_allclose(model.prior, expected_prior, rtol=1e-6)
    batch = {"image": data.train.images, "label": LABELS, "index": np.arange(len(LABELS))}
    logits = model(batch["image"]).numpy().astype(np.float64)
    log_probs = tf.nn.log_softmax(tf.constant(logits, tf.float32))
    loss, _, _ = model.batch_loss(batch, log_probs, model.targets(batch, log_probs))
    np.testing.assert_allclose(float(loss), loss_numpy(logits, LABELS, expected_prior),
                               rtol=1e-5)
    # The uniform prior's loss differs by more than the tolerance: the prior is seen.
    assert abs(loss_numpy(logits, LABELS, np.full(K, 1 / K)) - float(loss)) > 1e-3


def test_the_observed_prior_counts_oversampled_copies():
    data = tiny_data()
    data.oversample = "auto"       # as Clothing1M's view: every class up to the largest
    prior = TANAKA.class_prior(resolve(tanaka_prior="observed"), data, LABELS)
    np.testing.assert_allclose(prior, np.full(K, 1 / K), rtol=1e-6)


@pytest.mark.parametrize("text, message", [
    ("0.5 0.5", "needs 3 class probabilities, got 2"),
    ("0.5,0.3,0.3", "sum to 1, got sum 1.1"),
    ("1.2 -0.1 -0.1", "non-negative"),
    ("a b c", "--tanaka_prior="),
])
def test_a_bad_prior_file_is_refused(text, message, tmp_path):
    path = tmp_path / "prior.txt"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        tanaka.load_prior(str(path), K)


def test_a_missing_prior_file_is_refused():
    with pytest.raises(ConfigError, match="--tanaka_prior"):
        resolve(tanaka_prior="no/such/prior.npy")


def test_first_phase_runs_at_half_the_rate_constant():
    """The authors' code: first step at 0.1 constant, second step at 0.2 (÷10 twice)."""
    config = resolve(lr=0.05, lr_decay_epochs=(10, 20, 30), epochs=40)
    phase1 = TANAKA.phase1_config(config)
    rate = stages.learning_rate(phase1, steps_per_epoch=23)
    assert rate == pytest.approx(0.05 * 0.1 / 0.2)                 # a float: no decay
    np.testing.assert_allclose(float(stages.learning_rate(config, 23)(23 * 35)), 0.05 * 1e-3,
                               rtol=1e-6)                          # the recipe's decays
    assert TANAKA.phase1_config(resolve(tanaka_lr=0.05)).lr == 0.05  # the behaviour before


def digits_28x28(path):
    """scikit-learn's digits as MNIST-like 28x28 images: each 8x8 digit resized to 20x20
    and centred in a black frame."""
    data = sources.load_digits()

    def frame(images):
        small = tf.image.resize(images.astype(np.float32), (20, 20)).numpy()[..., 0]
        out = np.zeros((len(images), 28, 28), np.float32)
        out[:, 4:24, 4:24] = small
        return np.round(out).clip(0, 255).astype(np.uint8)

    np.savez(path, x_train=frame(data.train.images), y_train=data.train.labels,
             clean_train=data.train.labels, x_test=frame(data.test.images),
             y_test=data.test.labels)


@pytest.mark.e2e
def test_first_phase_trains_on_28x28_images_with_the_digits_recipe(tmp_path):
    """Before the first phase ran at the recipe's full rate (--tanaka_lr=--lr), this run's
    loss reached ~1e34 in epoch 2 and then NaN; cross-entropy trains on the same data."""
    digits_28x28(tmp_path / "digits28.npz")
    config = config_lib.resolve({
        "dataset": "npz", "npz_path": str(tmp_path / "digits28.npz"), "noise": "kmeans",
        "method": "tanaka", "epochs": 2, "verbose": 0, "export_dir": "",
        "run_dir": str(tmp_path / "run")})
    assert (config.arch, config.lr, config.batch_size, config.momentum) == (
        "small_cnn", 0.05, 64, 0.9)                                 # the digits recipe
    results = train.run(config)
    history = results["method_history"]
    phase1 = json.loads((tmp_path / "run" / "tanaka_labels.json").read_text())["history"]
    assert np.isfinite(phase1["loss"]).all() and max(phase1["loss"]) < 10, phase1["loss"]
    assert phase1["val_accuracy"][-1] > 0.3                          # well above chance
    soft = np.load(tmp_path / "run" / "soft_labels.npy")
    assert np.isfinite(soft).all()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-4)
    # Phase 2 learns from labels averaged over 2 early epochs: finite, not yet accurate.
    assert np.isfinite(history["loss"]).all() and np.isfinite(results["method_test_accuracy"])
