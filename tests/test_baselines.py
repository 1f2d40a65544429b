"""Checks of the loss-correction baselines (forward, bootstrapping, L_DMI) against numpy.

`baselines` holds the losses and Keras models (the estimator and the check of forward
correction's T, in `transition`, are tested in test_transition.py).

Every expected value is computed here, in float64 numpy, from the papers' formulas:
never from `baselines`' own output.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import baselines

import mirrored

K = 3          # classes of the tiny classifier
LR = 0.1


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_transition(rng, k, diagonal=None):
    """A random row-stochastic [k, k]; with `diagonal`, T_ii = diagonal[i] and the rest spread."""
    t = rng.dirichlet(np.ones(k), size=k)
    if diagonal is not None:
        off = t * (1 - np.eye(k))
        off /= off.sum(axis=1, keepdims=True)
        t = np.diag(diagonal) + (1 - np.asarray(diagonal))[:, None] * off
    return t


def log_softmax_tf(z, dtype):
    return tf.nn.log_softmax(tf.constant(z, dtype))


# --- forward correction (Patrini et al. 2017) ---------------------------------------------

@pytest.mark.parametrize("dtype, rtol", [(tf.float64, 1e-12), (tf.float32, 2e-5)])
def test_forward_loss_matches_numpy(dtype, rtol):
    rng = np.random.default_rng(0)
    b, k = 6, 4
    z = rng.normal(size=(b, k)) * 2
    labels = rng.integers(0, k, size=b)
    t = random_transition(rng, k)
    noisy = softmax(z) @ t                       # p(ỹ = j | x) = Σ_i p(y = i | x) T_ij
    expected = -np.log(noisy[np.arange(b), labels])
    actual = baselines.forward_loss(log_softmax_tf(z, dtype), labels, t).numpy()
    assert actual.shape == (b,) and actual.dtype == dtype.as_numpy_dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol)
    # T is not the identity: the corrected loss is not plain cross-entropy.
    assert np.abs(expected + np.log(softmax(z)[np.arange(b), labels])).max() > 0.1


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_forward_loss_floor(dtype):
    rng = np.random.default_rng(1)
    b, k = 6, 4
    z = rng.normal(size=(b, k))
    t = random_transition(rng, k)
    # No class is ever observed as class 0 (column 0 exactly 0) and class 1 almost never.
    t[:, 0] = 0.0
    t[:, 1] = 1e-9
    t /= t.sum(axis=1, keepdims=True)
    labels = np.array([0, 1, 2, 3, 0, 1])
    picked = (softmax(z) @ t)[np.arange(b), labels]
    assert (picked[labels < 2] < 1e-7).all() and (picked[labels >= 2] > 1e-3).all()
    expected = -np.log(np.where(labels < 2, 1e-7, picked))
    actual = baselines.forward_loss(log_softmax_tf(z, dtype), labels, t).numpy()
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


# --- bootstrapping (Reed et al. 2015) ------------------------------------------------

@pytest.mark.parametrize("beta, hard", [(0.95, False), (0.8, True)])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_bootstrap_targets_match_numpy(beta, hard, dtype):
    rng = np.random.default_rng(9)
    b, k = 7, 4
    z = rng.normal(size=(b, k)) * 2
    labels = rng.integers(0, k, size=b)
    p = softmax(z)
    observed = np.eye(k)[labels]
    own = np.eye(k)[np.argmax(z, axis=1)] if hard else p
    expected = beta * observed + (1 - beta) * own
    assert (np.argmax(z, axis=1) != labels).any()  # the model's own guess differs somewhere
    actual = baselines.bootstrap_targets(log_softmax_tf(z, dtype), labels, beta, hard).numpy()
    assert actual.dtype == dtype.as_numpy_dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-6 if dtype == tf.float32 else 1e-12,
                               atol=1e-7)
    np.testing.assert_allclose(actual.sum(axis=1), 1, atol=1e-6)


# --- L_DMI (Xu et al. 2019) ----------------------------------------------------------

def numpy_dmi(z, labels, eps):
    """−log(|det(PᵀỸ / B)| + ε / B^K), P = softmax(z), Ỹ = onehot(labels)."""
    b, k = z.shape
    joint = softmax(z).T @ np.eye(k)[labels] / b
    return -np.log(abs(np.linalg.det(joint)) + eps / b ** k)


def numpy_dmi_grad(z, labels, eps):
    """d numpy_dmi / dz, by hand: dL/dM = −a/(a + c)·M⁻ᵀ for M = PᵀỸ/B, a = |det M|."""
    b, k = z.shape
    p, y = softmax(z), np.eye(k)[labels]
    m = p.T @ y / b
    a, c = abs(np.linalg.det(m)), eps / b ** k
    g_m = -a / (a + c) * np.linalg.inv(m).T      # [K, K]
    g_p = y @ g_m.T / b                          # M_kj = Σ_b P_bk Y_bj / B
    return p * (g_p - np.sum(g_p * p, axis=1, keepdims=True))  # back through softmax


def dmi_batch(seed=10, b=12, k=3, missing=None):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, k)) * 1.5
    labels = np.arange(b) % k
    if missing is not None:
        labels[labels == missing] = (missing + 1) % k
    return z, rng.permutation(labels)


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.e2e)])
def test_log_abs_det_matches_numpy_eagerly_and_under_xla(jit_compile):
    rng = np.random.default_rng(3)
    matrices = [rng.random((10, 10)) / 10,                    # det ~ e^-27, like PᵀỸ / B
                rng.normal(size=(4, 4)),                      # negative determinants too
                np.diag([2.0, 0.5, 1e-3]),
                np.array([[1.0, 0.0], [2.0, 0.0]])]           # singular: −inf, as numpy's
    fn = tf.function(baselines.log_abs_det, jit_compile=jit_compile)
    for m in matrices:
        expected = np.linalg.slogdet(m)[1]
        np.testing.assert_allclose(fn(tf.constant(m, tf.float64)).numpy(), expected, rtol=1e-10)
        if np.isfinite(expected):
            np.testing.assert_allclose(fn(tf.constant(m, tf.float32)).numpy(), expected,
                                       rtol=1e-5)


@pytest.mark.parametrize("eps", [1e-3, 5.0])
def test_dmi_loss_matches_numpy_and_authors_form(eps):
    z, labels = dmi_batch()
    b, k = z.shape
    expected = numpy_dmi(z, labels, eps)
    # The authors' code: −log(|det(Ỹᵀ P)| + ε) on the unnormalised matrix, which is the
    # same up to the constant K·log B.
    authors = -np.log(abs(np.linalg.det(np.eye(k)[labels].T @ softmax(z))) + eps) + k * np.log(b)
    np.testing.assert_allclose(expected, authors, rtol=1e-12)
    actual = baselines.dmi_loss(log_softmax_tf(z, tf.float64), labels, eps)
    assert actual.shape == () and actual.dtype == tf.float64
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10)
    actual32 = baselines.dmi_loss(log_softmax_tf(z, tf.float32), labels, eps)
    np.testing.assert_allclose(actual32.numpy(), expected, rtol=1e-5)
    if eps == 5.0:  # the floor is not negligible here: the test sees it
        assert abs(expected - numpy_dmi(z, labels, 0.0)) > 0.05


@pytest.mark.parametrize("eps", [1e-3, 5.0])
def test_dmi_gradient_matches_finite_differences(eps):
    z, labels = dmi_batch(seed=11)
    var = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = baselines.dmi_loss(tf.nn.log_softmax(var), labels, eps)
    grad = tape.gradient(loss, var).numpy()
    h = 1e-6
    numeric = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (numpy_dmi(up, labels, eps) - numpy_dmi(down, labels, eps)) / (2 * h)
    scale = np.abs(numeric).max()
    assert scale > 1e-2
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7 * scale)
    # The hand-derived gradient used by the training-step tests agrees as well.
    np.testing.assert_allclose(numpy_dmi_grad(z, labels, eps), numeric, rtol=1e-5,
                               atol=1e-7 * scale)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_dmi_batch_missing_a_class(dtype):
    eps = 1e-3
    z, labels = dmi_batch(seed=12, missing=1)
    b, k = z.shape
    assert 1 not in labels
    expected = -np.log(eps / b ** k)
    np.testing.assert_allclose(numpy_dmi(z, labels, eps), expected, rtol=1e-12)
    var = tf.Variable(tf.constant(z, dtype))
    with tf.GradientTape() as tape:
        loss = baselines.dmi_loss(tf.nn.log_softmax(var), labels, eps)
    grad = tape.gradient(loss, var).numpy()
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12 if dtype == "float64" else 1e-6)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


# --- the Keras models' training step -----------------------------------------------

tiny_classifier = mirrored.dense_classifier  # uint8 2x2x1 → Dense(K), given weights


def initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, K)) * 2, rng.normal(size=K) * 0.3]


def train_batch(seed=1, labels=(0, 1, 2, 0, 1, 2, 2, 1)):
    rng = np.random.default_rng(seed)
    b = len(labels)
    return {
        "image": rng.integers(0, 256, size=(b, 2, 2, 1)).astype(np.uint8),
        "label": np.asarray(labels, np.int64),
        "index": np.arange(b, dtype=np.int64),
    }


TRANSITION = random_transition(np.random.default_rng(13), K, diagonal=[0.7, 0.6, 0.8])


def numpy_loss_and_logit_grad(method, logits, labels):
    """(the logged loss, d(training loss)/d logits) of one batch, by hand, float64."""
    b = len(labels)
    p, y = softmax(logits), np.eye(K)[labels]
    if method == "forward":
        s = (p @ TRANSITION)[np.arange(b), labels]               # p(ỹ_i | x_i)
        col = TRANSITION[:, labels].T                            # [B, K]: T_{k, ỹ_i}
        per_example = -np.log(s)
        g = -(p * (col - s[:, None])) / s[:, None] / b           # d(−log s_i)/dz_ik, / B
        return per_example.mean(), g
    if method in ("bootstrap_soft", "bootstrap_hard"):
        beta, hard = (0.8, True) if method == "bootstrap_hard" else (0.95, False)
        own = np.eye(K)[np.argmax(logits, axis=1)] if hard else p
        target = beta * y + (1 - beta) * own
        per_example = -np.sum(target * np.log(p), axis=1)
        g = p - target                                           # Σ_k target_ik = 1
        if not hard:
            # The soft target's p is differentiated too: the loss is β·CE(y) + (1−β)·H(p)
            # (Reed et al.), H = −Σ_k p_k log p_k, dH/dz_j = −p_j (log p_j + H).
            entropy = -np.sum(p * np.log(p), axis=1, keepdims=True)
            g = beta * (p - y) - (1 - beta) * p * (np.log(p) + entropy)
        return per_example.mean(), g / b
    if method == "ldmi":
        return numpy_dmi(logits, labels, 1e-3), numpy_dmi_grad(logits, labels, 1e-3)
    raise ValueError(method)


def numpy_sgd_step(method, weights, batch, lr=LR):
    kernel, bias = weights
    x = batch["image"].reshape(len(batch["label"]), -1).astype(np.float64) / 255
    loss, g = numpy_loss_and_logit_grad(method, x @ kernel + bias, batch["label"])
    return [kernel - lr * (x.T @ g), bias - lr * g.sum(axis=0)], loss


def make_model(method, classifier):
    if method == "forward":
        return baselines.ForwardModel(classifier, TRANSITION, weight_decay=0.0)
    if method == "bootstrap_soft":
        return baselines.BootstrapModel(classifier, beta=0.95, hard=False, weight_decay=0.0)
    if method == "bootstrap_hard":
        return baselines.BootstrapModel(classifier, beta=0.8, hard=True, weight_decay=0.0)
    return baselines.DMIModel(classifier, weight_decay=0.0)


@pytest.mark.parametrize("mode", ["graph", "eager", pytest.param("xla", marks=pytest.mark.e2e)])
@pytest.mark.parametrize("method", ["forward", "bootstrap_soft", "bootstrap_hard", "ldmi"])
def test_train_step_matches_numpy(method, mode):
    weights = initial_weights()
    batch = train_batch()
    m = make_model(method, tiny_classifier(weights))
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), run_eagerly=mode == "eager",
              jit_compile=mode == "xla")
    assert m.jit_compile == (mode == "xla")  # Keras kept it (`model_supports_jit`)
    expected_w, expected_loss = numpy_sgd_step(method, weights, batch)
    # The batch is informative: the model's guesses differ from the labels somewhere, and
    # the step differs from plain cross-entropy's.
    x = batch["image"].reshape(len(batch["label"]), -1) / 255
    logits = x @ weights[0] + weights[1]
    assert (np.argmax(logits, axis=1) != batch["label"]).sum() >= 2
    ce_g = (softmax(logits) - np.eye(K)[batch["label"]]) / len(x)
    assert np.abs(numpy_loss_and_logit_grad(method, logits, batch["label"])[1] - ce_g).max() > 1e-3
    history = m.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    for actual, desired, before in zip(m.classifier.get_weights(), expected_w, weights):
        assert np.abs(desired - before).max() > 1e-3  # the step moves the weights
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"][0], expected_loss, rtol=1e-5)


def test_dmi_train_step_on_a_batch_missing_a_class_changes_nothing():
    weights = initial_weights()
    batch = train_batch(labels=(0, 2, 0, 2, 2, 0))
    m = make_model("ldmi", tiny_classifier(weights))
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    history = m.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    for actual, before in zip(m.classifier.get_weights(), weights):
        np.testing.assert_array_equal(actual, before.astype(np.float32))
    np.testing.assert_allclose(history["loss"][0], -np.log(1e-3 / 6 ** K), rtol=1e-6)


# --- L_DMI under MirroredStrategy ----------------------------------------------------

MIRRORED_DMI = r"""
from idn_tf import baselines


def train(strategy):
    with strategy.scope():
        classifier = dense_classifier(args["weights"])
        dmi = baselines.DMIModel(classifier, weight_decay=0.0)
        dmi.compile(optimizer=keras.optimizers.SGD(learning_rate=args["lr"]))
    history = dmi.fit(data(), epochs=1, verbose=0).history
    return [w.tolist() for w in classifier.get_weights()], history["loss"][0]


one_w, one_loss = train(tf.distribute.get_strategy())
mir_w, mir_loss = train(mirrored)
dump({"replicas": mirrored.num_replicas_in_sync, "shares": shares("label"),
      "one": one_w, "one_loss": one_loss, "mirrored": mir_w, "mirrored_loss": mir_loss})
"""


@pytest.mark.e2e
def test_dmi_under_mirrored_strategy_matches_one_device(tmp_path):
    # Each replica's half misses a class (0 or 2); the global batch holds them all.
    weights = initial_weights(seed=3)
    batch = train_batch(seed=4, labels=(0, 1, 0, 1, 2, 1, 2, 2))
    got = mirrored.run(MIRRORED_DMI, {"batch": {k: v.tolist() for k, v in batch.items()},
                                      "weights": [w.tolist() for w in weights], "lr": LR},
                       tmp_path)
    assert got["replicas"] == 2
    first, second = got["shares"]
    assert len(first) == len(second) == 4
    assert set(first) != set(range(K)) and set(second) != set(range(K))  # each misses a class
    assert set(first) | set(second) == set(range(K))
    expected_w, expected_loss = numpy_sgd_step("ldmi", weights, batch)
    for one, two, desired, before in zip(got["one"], got["mirrored"], expected_w, weights):
        assert np.abs(desired - before).max() > 1e-3
        np.testing.assert_allclose(one, desired, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["one_loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(got["mirrored_loss"], expected_loss, rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_dmi_rank_deficient_batch_gives_a_finite_gradient(dtype):
    """Every class present, but P's rows all equal (a constant classifier): PᵀỸ has rank 1.
    The loss is then at (or near) its floor and the step must not fail."""
    eps = 1e-3
    z = np.tile(np.random.default_rng(5).normal(size=3), (12, 1))
    labels = np.arange(12) % 3
    var = tf.Variable(tf.constant(z, dtype))
    with tf.GradientTape() as tape:
        loss = baselines.dmi_loss(tf.nn.log_softmax(var), labels, eps)
    grad = tape.gradient(loss, var).numpy()
    assert np.isfinite(grad).all()
    assert loss.numpy() == pytest.approx(-np.log(eps / 12 ** 3), rel=1e-3)
