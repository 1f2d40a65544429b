"""Checks of ELR (`idn_tf.elr`) against numpy, autodiff and a hand-derived gradient.

Every expected value is computed here, in float64 numpy, from the authors' loss
(`ELR/model/loss.py`): p = clip(softmax(z), 1e-4, 1 − 1e-4); t ← β t + (1 − β) p/Σp; loss
= mean CE(z, ỹ) + λ mean log(1 − ⟨p, t⟩), t a constant; never from `elr`'s own output.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import elr

import mirrored
# The tiny model's weights and examples, as the other per-example-table models' tests.
from test_soft_labels import examples, initial_weights, rows  # noqa: E402

K, N, LR = 3, 12, 0.1
BETA, LAM = 0.7, 3.0
BATCH_IDS = np.array([7, 2, 10, 4, 0, 9, 5, 11])   # one batch's rows: 1, 3, 6, 8 unused


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def elr_numpy(z, labels, t_old, beta=BETA, lam=LAM, clamp=1e-4):
    """(batch-mean loss, dL/dz [B, K], new targets [B, K]), written out by hand.

    dCE/dz = s − onehot; the regulariser R = log(1 − a), a = Σ_j t_j p_j with p the
    clamped s, has dR/dz_k = −1/(1 − a) Σ_j t_j m_j s_j (δ_jk − s_k), m_j = 1 where s_j is
    not clamped (the clamp's gradient is 0 there).
    """
    b = len(z)
    s = softmax(z)
    p = np.clip(s, clamp, 1 - clamp)
    t = beta * t_old + (1 - beta) * p / p.sum(axis=1, keepdims=True)
    a = np.sum(t * p, axis=1)
    onehot = np.eye(z.shape[1])[labels]
    ce = -np.log(s[np.arange(b), labels])
    loss = np.mean(ce + lam * np.log(1 - a))
    mask = (s > clamp) & (s < 1 - clamp)
    w = t * mask * s                                        # t_j m_j s_j
    da = w - s * w.sum(axis=1, keepdims=True)               # Σ_j t_j m_j s_j(δ_jk − s_k)
    grad = (s - onehot) - lam * da / (1 - a)[:, None]
    return loss, grad / b, t


def random_case(seed, b=6, scale=2.0, k=K):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, k)) * scale
    labels = rng.integers(0, k, size=b)
    t = rng.dirichlet(np.ones(k), size=b) * rng.uniform(0.2, 1.0, size=(b, 1))  # Σt ≤ 1
    return z, labels, t


def tf_loss(z, labels, t_old):
    log_probs = tf.nn.log_softmax(z)
    t = elr.target_update(t_old, elr.clamped_probs(log_probs), BETA)
    return tf.reduce_mean(elr.elr_loss(log_probs, labels, t, LAM)), t


@pytest.mark.parametrize("scale", [0.5, 2.0, 12.0])  # 12: some softmax entries clamped
def test_loss_targets_and_gradient_match_numpy(scale):
    z, labels, t_old = random_case(seed=int(scale * 10), scale=scale)
    loss, grad, t = elr_numpy(z, labels, t_old)
    if scale == 12.0:
        s = softmax(z)
        assert ((s < 1e-4) | (s > 1 - 1e-4)).any()  # the clamp is exercised
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        actual, targets = tf_loss(zt, labels, tf.constant(t_old))
    np.testing.assert_allclose(actual.numpy(), loss, rtol=1e-10)
    np.testing.assert_allclose(targets.numpy(), t, rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(actual, zt).numpy(), grad, rtol=1e-8, atol=1e-12)


def test_hand_gradient_matches_finite_differences():
    # The reference gradient itself, checked without autodiff (no clamped entries: the
    # clamp's kink is not differentiable). The targets are held fixed, as in the loss.
    z, labels, t_old = random_case(seed=3)
    _, grad, t = elr_numpy(z, labels, t_old)

    def loss_fixed_targets(v):
        s = softmax(v)
        p = np.clip(s, 1e-4, 1 - 1e-4)
        ce = -np.log(s[np.arange(len(v)), labels])
        return np.mean(ce + LAM * np.log(1 - np.sum(t * p, axis=1)))

    numeric = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += 1e-6
        down[idx] -= 1e-6
        numeric[idx] = (loss_fixed_targets(up) - loss_fixed_targets(down)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_hand_worked_first_visit():
    # Two classes, z = (0, ln 3): s = (1/4, 3/4); t starts at 0, so t = 0.3·s (β = 0.7),
    # ⟨s, t⟩ = 0.3·(1/16 + 9/16) = 0.1875; label 0: CE = ln 4.
    z = tf.constant([[0.0, np.log(3.0)]], tf.float64)
    loss, t = tf_loss(z, np.array([0]), tf.zeros((1, 2), tf.float64))
    np.testing.assert_allclose(t.numpy(), [[0.075, 0.225]], rtol=1e-12)
    np.testing.assert_allclose(loss.numpy(), np.log(4.0) + 3.0 * np.log(1 - 0.1875), rtol=1e-12)


def test_targets_are_not_differentiated():
    z, labels, t_old = random_case(seed=5)
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        t = elr.target_update(t_old, elr.clamped_probs(tf.nn.log_softmax(zt)), BETA)
    assert tape.gradient(t, zt) is None


def test_log_stays_finite_at_a_confident_agreeing_prediction():
    # s = onehot (to float precision) and t = onehot: without the clamp 1 − ⟨p, t⟩ = 0.
    z = tf.constant([[60.0, 0.0, 0.0]], tf.float32)
    t = tf.constant([[1.0, 0.0, 0.0]])
    loss = elr.elr_loss(tf.nn.log_softmax(z), np.array([0]), t, LAM).numpy()
    np.testing.assert_allclose(loss, LAM * np.log(1e-4), rtol=1e-3)


# --- the Keras model --------------------------------------------------------------------




def features(batch):
    return batch["image"].reshape(len(batch["label"]), -1).astype(np.float64) / 255


def elr_model(weights, **kwargs):
    m = elr.ELRModel(mirrored.dense_classifier(weights), N, K, beta=BETA, lam=LAM,
                     weight_decay=0.0, **kwargs)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    return m


def random_targets(seed):
    rng = np.random.default_rng(seed)
    return (rng.dirichlet(np.ones(K), size=N) * 0.8).astype(np.float32)


def test_targets_start_at_zero():
    m = elr_model(initial_weights())
    np.testing.assert_array_equal(m.targets_table.numpy(), np.zeros((N, K), np.float32))
    with pytest.raises(ValueError, match="beta"):
        elr.ELRModel(mirrored.dense_classifier(initial_weights()), N, K, beta=1.0)


@pytest.mark.parametrize("compiled", [False, True])
def test_train_step_matches_numpy(compiled):
    weights, data = initial_weights(), examples()
    table = random_targets(seed=2)
    m = elr_model(weights)
    m.run_eagerly = not compiled
    m.targets_table.assign(table)
    batch = rows(data, BATCH_IDS)
    x = features(batch)
    z = x @ weights[0] + weights[1]
    loss, g_z, t = elr_numpy(z, batch["label"], table[BATCH_IDS].astype(np.float64))
    history = m.fit(tf.data.Dataset.from_tensor_slices(batch).batch(len(BATCH_IDS)),
                    epochs=1, verbose=0).history
    expected = [weights[0] - LR * (x.T @ g_z), weights[1] - LR * g_z.sum(axis=0)]
    for actual, desired, old in zip(m.classifier.get_weights(), expected, weights):
        assert np.abs(desired - old).max() > 1e-3
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"][0], loss, rtol=1e-5)
    after = m.targets_table.numpy()
    others = np.setdiff1d(np.arange(N), BATCH_IDS)
    np.testing.assert_array_equal(after[others], table[others])
    np.testing.assert_allclose(after[BATCH_IDS], t, rtol=1e-5, atol=1e-6)


def test_second_visit_builds_on_the_first():
    # Two epochs on one batch from t = 0: after the first, Σ_k t_ik = 1 − β; after the
    # second, 1 − β², the second step's t from the first's and the moved network.
    weights, data = initial_weights(), examples()
    m = elr_model(weights)
    batch = rows(data, BATCH_IDS)
    m.fit(tf.data.Dataset.from_tensor_slices(batch).batch(len(BATCH_IDS)), epochs=2, verbose=0)
    x = features(batch)
    z = x @ weights[0] + weights[1]
    _, g_z, t1 = elr_numpy(z, batch["label"], np.zeros((len(BATCH_IDS), K)))
    w1 = [weights[0] - LR * (x.T @ g_z), weights[1] - LR * g_z.sum(axis=0)]
    _, _, t2 = elr_numpy(x @ w1[0] + w1[1], batch["label"], t1)
    after = m.targets_table.numpy()[BATCH_IDS]
    np.testing.assert_allclose(after, t2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.sum(axis=1), 1 - BETA ** 2, rtol=1e-5)


def test_targets_survive_save_and_load(tmp_path):
    m = elr_model(initial_weights())
    table = random_targets(seed=4)
    m.targets_table.assign(table)
    path = str(tmp_path / "elr.weights.h5")
    m.save_weights(path)
    other = elr_model(initial_weights(seed=9))
    other.load_weights(path)
    np.testing.assert_array_equal(other.targets_table.numpy(), table)


# --- under MirroredStrategy ---------------------------------------------------------------

# Runs in its own process (tests/mirrored.py).
MIRRORED_ELR = r"""
from idn_tf import elr

table = np.asarray(args["table"], np.float32)
k = len(args["weights"][1])


def train(strategy):
    with strategy.scope():
        classifier = dense_classifier(args["weights"])
        m = elr.ELRModel(classifier, len(table), k, beta=args["beta"], lam=args["lam"])
        m.targets_table.assign(table)
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=args["lr"]))
    loss = m.fit(data(), epochs=1, verbose=0).history["loss"][0]
    copies = getattr(m.targets_table.variable.value, "values", None)
    return {"weights": [w.tolist() for w in classifier.get_weights()], "loss": loss,
            "table": m.targets_table.numpy().tolist(),
            "copies": None if copies is None else [c.numpy().tolist() for c in copies]}


dump({"replicas": mirrored.num_replicas_in_sync, "shares": shares("index"),
      "one": train(tf.distribute.get_strategy()), "mirrored": train(mirrored)})
"""


@pytest.mark.e2e
def test_under_mirrored_strategy_tables_match_one_device_and_each_other(tmp_path):
    weights, data = initial_weights(seed=13), examples(seed=14)
    table = random_targets(seed=15)
    batch = rows(data, BATCH_IDS)
    got = mirrored.run(MIRRORED_ELR, {
        "batch": {k: v.tolist() for k, v in batch.items()},
        "weights": [w.tolist() for w in weights], "lr": LR, "beta": BETA, "lam": LAM,
        "table": table.tolist()}, tmp_path)
    assert got["replicas"] == 2
    first, second = got["shares"]
    assert len(first) == len(second) == 4 and sorted(first + second) == sorted(BATCH_IDS)
    x = features(batch)
    loss, g_z, t = elr_numpy(x @ weights[0] + weights[1], batch["label"],
                             table[BATCH_IDS].astype(np.float64))
    expected = [weights[0] - LR * (x.T @ g_z), weights[1] - LR * g_z.sum(axis=0)]
    one, two = got["one"], got["mirrored"]
    assert one["copies"] is None and len(two["copies"]) == 2
    others = np.setdiff1d(np.arange(N), BATCH_IDS)
    for run in (one, two):
        for actual, desired in zip(run["weights"], expected):
            np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run["loss"], loss, rtol=1e-5)
        run_table = np.asarray(run["table"])
        np.testing.assert_allclose(run_table[BATCH_IDS], t, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(run_table[others], table[others])
    # Both replicas' copies hold every row's update (not only their own half's).
    np.testing.assert_array_equal(two["copies"][0], two["copies"][1])
    np.testing.assert_array_equal(two["copies"][0], two["table"])
