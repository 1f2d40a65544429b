"""Checks of CrossEntropyModel / IDNModel training steps against hand-derived numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import callbacks, model

K = 3          # classes
N = 10         # rows of the η and ψ tables
LR = 0.1
WD = 0.01
ETA_LR = 0.3
EPS = 1e-4


def tiny_classifier(seed=0):
    """uint8 [2, 2, 1] -> x/255 -> Dense(K): logits linear in the pixels."""
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(K)(x))
    rng = np.random.default_rng(seed)
    classifier.set_weights([rng.normal(size=(4, K)).astype("float32"),
                            rng.normal(size=K).astype("float32") * 0.1])
    return classifier


def make_batch(ids, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(len(ids), 2, 2, 1)).astype(np.uint8),
        "label": rng.integers(0, K, size=len(ids)).astype(np.int64),
        "index": np.asarray(ids, dtype=np.int64),
    }


def one_batch_dataset(batch):
    return tf.data.Dataset.from_tensors(batch)


def numpy_q(p, labels, eta, psi, numerics):
    """Eq. 8 by hand; "authors" floors each likelihood at 1e-5 as their released code."""
    likelihood = (1 - eta)[:, None] * np.eye(K)[labels] + (eta * psi)[:, None]
    if numerics == "authors":
        likelihood = np.maximum(likelihood, 1e-5)
    u = p * likelihood
    return u / u.sum(1, keepdims=True)


def numpy_step(weights, batch, eta_table, psi_table, with_eta_update, numerics="authors"):
    """One IDN step by hand: Eq. 8 target, CE gradient, coupled L2, SGD, Eq. 11 + 12."""
    kernel, bias = weights
    x = batch["image"].reshape(len(batch["label"]), -1).astype(np.float64) / 255
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    eta, psi = eta_table[batch["index"]], psi_table[batch["index"]]
    q = numpy_q(p, batch["label"], eta, psi, numerics)
    # d/dlogits of mean_i −Σ_j q_ij log p_ij is (p − q)/B because Σ_j q_ij = 1.
    g_logits = (p - q) / len(x)
    new_kernel = kernel - LR * (x.T @ g_logits + WD * kernel)
    new_bias = bias - LR * (g_logits.sum(0) + WD * bias)
    new_table = eta_table.copy()
    if with_eta_update:
        q_k = q[np.arange(len(q)), batch["label"]]
        denominator = np.maximum(eta, 1e-5) if numerics == "authors" else eta + EPS
        step = ((1 - q_k) + q_k * eta * (psi - 1)) / denominator
        new_table[batch["index"]] = np.clip(eta + ETA_LR * step, 0, 1)
    loss = -np.mean(np.sum(q * np.log(p), axis=1))
    return [new_kernel, new_bias], new_table, loss


def idn_model(psi, eta_init=0.2, **kwargs):
    m = model.IDNModel(tiny_classifier(), psi=psi, eta_init=eta_init, eta_lr=ETA_LR,
                       eta_eps=EPS, weight_decay=WD, **kwargs)
    return m


@pytest.mark.parametrize("mode", ["eager", "graph", pytest.param("xla", marks=pytest.mark.e2e)])
@pytest.mark.parametrize("with_eta_update", [True, False])
@pytest.mark.parametrize("numerics", ["authors", "literal"])
def test_idn_step_matches_numpy(mode, with_eta_update, numerics):
    psi = np.linspace(0.1, 0.9, N).astype(np.float32)
    m = idn_model(psi, eta_numerics=numerics)
    m.compile(optimizer=keras.optimizers.SGD(LR, momentum=0.9),
              run_eagerly=mode == "eager", jit_compile=mode == "xla")
    m.eta_update_enabled.assign(with_eta_update)
    batch = make_batch([7, 2, 5, 0])
    weights0 = [w.astype(np.float64) for w in m.classifier.get_weights()]
    eta0 = m.eta.numpy().astype(np.float64)
    expected_w, expected_eta, expected_loss = numpy_step(
        weights0, batch, eta0, psi.astype(np.float64), with_eta_update, numerics)
    logs = m.fit(one_batch_dataset(batch), epochs=1, verbose=0).history
    for actual, desired in zip(m.classifier.get_weights(), expected_w):
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.eta.numpy(), expected_eta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(logs["loss"][0], expected_loss, rtol=1e-5)
    # Rows outside the batch are untouched, bit for bit.
    untouched = np.setdiff1d(np.arange(N), batch["index"])
    np.testing.assert_array_equal(m.eta.numpy()[untouched], np.float32(0.2))
    if not with_eta_update:
        np.testing.assert_array_equal(m.eta.numpy(), np.full(N, 0.2, np.float32))
    np.testing.assert_allclose(logs["eta_mean"][0], expected_eta[batch["index"]].mean(), rtol=1e-5)


@pytest.mark.parametrize("run_eagerly", [True, False])
def test_cross_entropy_step_matches_numpy(run_eagerly):
    # Stage 1 is the η = 0 case of the same step: the target is one-hot(labels).
    m = model.CrossEntropyModel(tiny_classifier(), weight_decay=WD)
    m.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=run_eagerly)
    batch = make_batch([0, 1, 2, 3, 4])
    weights0 = [w.astype(np.float64) for w in m.classifier.get_weights()]
    expected_w, _, _ = numpy_step(weights0, batch, np.zeros(N), np.ones(N), False, "literal")
    m.fit(one_batch_dataset(batch), epochs=1, verbose=0)
    for actual, desired in zip(m.classifier.get_weights(), expected_w):
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)


def test_weight_decay_is_coupled_l2_before_momentum():
    # Three steps of SGD with momentum 0.9, the PyTorch way: g ← ∇loss + wd·w,
    # buf ← μ·buf + g, w ← w − lr·buf. Decoupled decay (w ← w − lr·wd·w outside
    # the momentum) differs from the second step on.
    m = model.CrossEntropyModel(tiny_classifier(), weight_decay=WD)
    m.compile(optimizer=keras.optimizers.SGD(LR, momentum=0.9))
    batches = [make_batch([0, 1, 2, 3], seed=s) for s in (1, 2, 3)]
    kernel, bias = [w.astype(np.float64) for w in m.classifier.get_weights()]
    buf_k, buf_b = np.zeros_like(kernel), np.zeros_like(bias)
    for batch in batches:
        x = batch["image"].reshape(4, -1).astype(np.float64) / 255
        logits = x @ kernel + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g_logits = (p - np.eye(K)[batch["label"]]) / len(x)
        buf_k = 0.9 * buf_k + x.T @ g_logits + WD * kernel
        buf_b = 0.9 * buf_b + g_logits.sum(0) + WD * bias
        kernel, bias = kernel - LR * buf_k, bias - LR * buf_b
    data = tf.data.Dataset.from_tensor_slices(
        {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}).batch(4)
    m.fit(data, epochs=1, verbose=0)
    np.testing.assert_allclose(m.classifier.get_weights()[0], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.classifier.get_weights()[1], bias, rtol=1e-5, atol=1e-6)


class EtaRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.tables = []

    def on_epoch_end(self, epoch, logs=None):
        self.tables.append(self.model.eta.numpy().copy())


@pytest.mark.parametrize("run_eagerly", [True, False])
def test_eta_changes_only_in_scheduled_epochs_and_only_batch_rows(run_eagerly):
    psi = np.full(N, 0.3, np.float32)
    m = idn_model(psi, eta_init=0.3)
    m.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=run_eagerly)
    ids = [1, 4, 7, 8]
    data = tf.data.Dataset.from_tensor_slices(make_batch(ids, seed=3)).batch(2)
    recorder = EtaRecorder()
    history = m.fit(data, epochs=5, verbose=0, callbacks=[
        callbacks.PGACallback(callbacks.pga_schedule(start_epoch=2, every=2)), recorder])
    assert history.history["eta_update"] == [0.0, 1.0, 0.0, 1.0, 0.0]
    tables = [np.full(N, 0.3, np.float32)] + recorder.tables
    others = np.setdiff1d(np.arange(N), ids)
    for epoch in range(1, 6):
        before, after = tables[epoch - 1], tables[epoch]
        np.testing.assert_array_equal(after[others], before[others])
        if epoch in (2, 4):
            assert np.all(after[ids] != before[ids]), f"epoch {epoch} should update every batch row"
        else:
            np.testing.assert_array_equal(after, before)


def test_eta_and_psi_are_saved_with_the_weights(tmp_path):
    psi = np.linspace(0.05, 0.95, N).astype(np.float32)
    m = idn_model(psi)
    m.eta.assign(np.linspace(0, 1, N).astype(np.float32))
    path = str(tmp_path / "idn.weights.h5")
    m.save_weights(path)
    other = idn_model(np.ones(N, np.float32))
    other.load_weights(path)
    np.testing.assert_array_equal(other.eta.numpy(), m.eta.numpy())
    np.testing.assert_array_equal(other.psi.numpy(), psi)


def test_rejects_unknown_rule():
    with pytest.raises(ValueError, match="eta_rule"):
        idn_model(np.ones(N, np.float32), eta_rule="sgd")


def blobs(n, seed):
    """Three easy classes of 2×2 images: class c is bright in pixel c, dim elsewhere."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, K, size=n)
    images = rng.integers(0, 60, size=(n, 4))
    images[np.arange(n), clean] += 180
    return images.reshape(n, 2, 2, 1).astype(np.uint8), clean.astype(np.int64)


@pytest.mark.e2e
def test_planted_noise_gets_higher_eta():
    keras.utils.set_random_seed(0)  # first: the dataset's shuffle also draws on the global seed
    n = 600
    images, clean = blobs(n, seed=0)
    rng = np.random.default_rng(1)
    flipped = rng.choice(n, size=n // 5, replace=False)
    labels = clean.copy()
    labels[flipped] = (clean[flipped] + rng.integers(1, K, size=len(flipped))) % K
    data = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "index": np.arange(n)}).shuffle(n, seed=0).batch(32)
    # Stage 1: a linear model cannot memorise the flips, so ψ is low on them.
    ce = model.CrossEntropyModel(tiny_classifier())
    ce.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    ce.fit(data, epochs=10, verbose=0)
    probs = tf.nn.softmax(ce.classifier.predict(images, verbose=0)).numpy()
    psi = probs[np.arange(n), labels].astype(np.float32)
    idn = model.IDNModel(tiny_classifier(), psi=psi, eta_init=0.01, eta_lr=0.5)
    idn.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    idn.fit(data, epochs=10, verbose=0,
            callbacks=[callbacks.PGACallback(callbacks.pga_schedule(3, 2))])
    eta = idn.eta.numpy()
    is_flipped = np.zeros(n, bool)
    is_flipped[flipped] = True
    # Over global seeds 0-4 the gap was 0.29-0.45 (η = 0 absorbs some flipped examples).
    assert eta[is_flipped].mean() > eta[~is_flipped].mean() + 0.2, (
        eta[is_flipped].mean(), eta[~is_flipped].mean())


@pytest.mark.parametrize("run_eagerly", [True, False])
@pytest.mark.parametrize("numerics", ["authors", "literal"])
def test_clean_examples_keep_eta_zero_and_train_on_their_label(run_eagerly, numerics):
    """Row #8 of the paper: clean examples mixed into the batches have η fixed at 0."""
    n_noisy, n_clean = 12, 8
    n = n_noisy + n_clean
    rng = np.random.default_rng(3)
    batch = {
        "image": rng.integers(0, 256, size=(n, 2, 2, 1)).astype(np.uint8),
        "label": rng.integers(0, K, size=n).astype(np.int64),
        "index": np.arange(n, dtype=np.int64),
        "is_clean": np.arange(n) >= n_noisy,
    }
    psi = rng.uniform(0.1, 0.9, n).astype(np.float32)
    idn = model.IDNModel(tiny_classifier(), psi=psi, eta_init=0.3, eta_lr=ETA_LR, eta_eps=EPS,
                         eta_numerics=numerics)
    idn.eta.assign(np.where(batch["is_clean"], 0.0, 0.3).astype(np.float32))
    idn.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=run_eagerly)
    weights = [w.astype(np.float64) for w in idn.classifier.get_weights()]
    history = idn.fit(tf.data.Dataset.from_tensor_slices(batch).batch(5), epochs=3, verbose=0,
                      callbacks=[callbacks.PGACallback(lambda epoch: True)])
    eta = idn.eta.numpy()
    np.testing.assert_array_equal(eta[n_noisy:], 0.0)  # exactly 0, never written
    assert np.all(eta[:n_noisy] != 0.3), "the noisy rows were not updated"
    # η statistics count the noisy examples only.
    np.testing.assert_allclose(history.history["eta_mean"][-1], eta[:n_noisy].mean(), rtol=1e-6)

    # One step by hand: a clean example's target is its one-hot label (up to the authors'
    # floor) even where the table would say otherwise (here its row holds 0.9).
    idn2 = model.IDNModel(tiny_classifier(), psi=psi, eta_init=0.9, eta_lr=ETA_LR, eta_eps=EPS,
                          eta_numerics=numerics)
    idn2.classifier.set_weights([w.astype(np.float32) for w in weights])
    idn2.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=run_eagerly)
    clean = {k: v[n_noisy:] for k, v in batch.items()}
    idn2.fit(tf.data.Dataset.from_tensors(clean), epochs=1, verbose=0)
    kernel, bias = weights
    x = clean["image"].reshape(n_clean, -1) / 255.0
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # plain CE on the clean labels (η = 0): the one-hot label, floored under "authors"
    target = numpy_q(p, clean["label"], np.zeros(n_clean), psi[n_noisy:], numerics)
    if numerics == "literal":
        np.testing.assert_array_equal(target, np.eye(K)[clean["label"]])
    g = (p - target) / n_clean
    np.testing.assert_allclose(idn2.classifier.get_weights()[0], kernel - LR * (x.T @ g),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(idn2.eta.numpy()[n_noisy:], np.float32(0.9))  # not written
