"""Checks of the soft-label baselines (Tanaka et al. 2018, PENCIL) against numpy.

`soft_labels` holds the losses, the Keras models and their epoch callbacks.

Every expected value is computed here, in float64 numpy, from the papers' formulas
(hand-derived gradients, themselves checked against finite differences): never from
`soft_labels`' own output.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import soft_labels

import mirrored

K = 3          # classes of the tiny classifier
N = 12         # rows of the per-example tables
LR = 0.1
ALPHA, BETA = 1.2, 0.8                 # Tanaka's α (prior) and β (entropy)
PRIOR = np.array([0.5, 0.3, 0.2])      # Tanaka's p: not uniform, so its term is seen
P_ALPHA, P_BETA = 0.3, 0.4             # PENCIL's α (compatibility) and β (entropy)
LABEL_LR = 40.0                        # PENCIL's λ
SCALE = 2.0                            # PENCIL's ỹ = scale·onehot at the start
BATCH_IDS = np.array([7, 2, 10, 4, 0, 9, 5, 11])   # one batch's rows: 1, 3, 6, 8 unused


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def xlogy(x, y):
    """x·log y with 0·log 0 = 0."""
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def soft_rows(rng, n, zeros=True):
    """Random label distributions [n, K]; with `zeros`, about a third of the entries are 0."""
    y = rng.dirichlet(np.ones(K), size=n)
    if zeros:
        y[rng.random((n, K)) < 0.35] = 0.0
        y[np.arange(n), rng.integers(0, K, size=n)] += 0.2   # no row all 0
        y /= y.sum(axis=1, keepdims=True)
    return y


# --- numpy references: losses and their hand-derived gradients -------------------------

def tanaka_numpy(z, y, prior=PRIOR, alpha=ALPHA, beta=BETA):
    """(L, dL/dz) for L = mean_i[KL(y_i ‖ s_i) + β H(s_i)] + α KL(p ‖ s̄), s = softmax(z)."""
    b = len(z)
    s, log_s = softmax(z), log_softmax(z)
    kl = np.sum(xlogy(y, y), axis=1) - np.sum(y * log_s, axis=1)
    entropy = -np.sum(s * log_s, axis=1)
    mean_s = s.mean(axis=0)
    prior_kl = np.sum(prior * (np.log(prior) - np.log(mean_s)))
    loss = np.mean(kl + beta * entropy) + alpha * prior_kl
    g = s * y.sum(axis=1, keepdims=True) - y                        # d KL(y ‖ s)/dz
    g = g - beta * s * (log_s + entropy[:, None])                   # + β dH/dz
    g = g / b
    # d(−Σ_k p_k log s̄_k)/dz_ij = −(1/B)·(p_j s_ij / s̄_j − s_ij Σ_k p_k s_ik / s̄_k)
    ratio = prior / mean_s
    g = g - alpha / b * (s * ratio - s * np.sum(s * ratio, axis=1, keepdims=True))
    return loss, g


def pencil_numpy(z, label_logits, labels, phase, alpha=P_ALPHA, beta=P_BETA):
    """(L, dL/dz, dL/dỹ) of PENCIL's phase `phase` (batch means), f = softmax(z),
    y^d = softmax(ỹ), in the authors' code's form: 1: CE(onehot(label), f);
    2: KL(f ‖ y^d)/K + α·(−log softmax(y^d)[label]) + β·H(f)/K; 3: KL(f ‖ y^d)/K."""
    b = len(z)
    f, log_f = softmax(z), log_softmax(z)
    yd, log_yd = softmax(label_logits), log_softmax(label_logits)
    onehot = np.eye(K)[labels]
    if phase == 1:
        return -np.mean(log_f[np.arange(b), labels]), (f - onehot) / b, np.zeros_like(yd)
    kl = np.sum(f * (log_f - log_yd), axis=1)
    g_z = f * ((log_f - log_yd) - kl[:, None]) / K                  # d KL(f ‖ y^d)/K /dz
    g_y = (yd - f) / K                                              # d KL(f ‖ y^d)/K /dỹ
    loss = kl / K
    if phase == 2:
        twice = softmax(yd)                                         # the second softmax
        compatibility = -np.log(twice[np.arange(b), labels])
        entropy = -np.sum(f * log_f, axis=1)
        loss = kl / K + alpha * compatibility + beta * entropy / K
        g_z = g_z - beta * f * (log_f + entropy[:, None]) / K
        g_yd = twice - onehot                                       # d compat / d y^d
        g_y = g_y + alpha * yd * (g_yd - np.sum(yd * g_yd, axis=1, keepdims=True))
    return loss.mean(), g_z / b, g_y / b


def features(batch):
    return batch["image"].reshape(len(batch["label"]), -1).astype(np.float64) / 255


def sgd(weights, x, g_logits, lr=LR):
    kernel, bias = weights
    return [kernel - lr * (x.T @ g_logits), bias - lr * g_logits.sum(axis=0)]


def finite_differences(fn, z, h=1e-6):
    out = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        out[idx] = (fn(up) - fn(down)) / (2 * h)
    return out


def test_numpy_gradients_match_finite_differences():
    """The references the training-step tests rely on."""
    rng = np.random.default_rng(0)
    b = 6
    z = rng.normal(size=(b, K)) * 2
    y = soft_rows(rng, b)
    loss, g = tanaka_numpy(z, y)
    numeric = finite_differences(lambda v: tanaka_numpy(v, y)[0], z)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)
    # Every term matters: each one left out changes the gradient.
    for alpha, beta in [(0.0, BETA), (ALPHA, 0.0)]:
        assert np.abs(tanaka_numpy(z, y, alpha=alpha, beta=beta)[1] - g).max() > 1e-3
    label_logits = rng.normal(size=(b, K)) * 2
    labels = rng.integers(0, K, size=b)
    for phase in (1, 2, 3):
        _, g_z, g_y = pencil_numpy(z, label_logits, labels, phase)
        np.testing.assert_allclose(
            g_z, finite_differences(lambda v: pencil_numpy(v, label_logits, labels, phase)[0], z),
            rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(
            g_y, finite_differences(lambda v: pencil_numpy(z, v, labels, phase)[0], label_logits),
            rtol=1e-6, atol=1e-9)


# --- the loss terms ------------------------------------------------------------------

def test_tanaka_terms_match_numpy():
    rng = np.random.default_rng(1)
    b = 7
    z = rng.normal(size=(b, K)) * 2
    y = soft_rows(rng, b)
    y[0] = np.eye(K)[1]                       # a one-hot row too
    assert (y == 0).sum() >= 4
    s, log_s = softmax(z), log_softmax(z)
    kl = np.array([sum(y[i, k] * np.log(y[i, k] / s[i, k]) for k in range(K) if y[i, k] > 0)
                   for i in range(b)])
    mean_s = s.mean(axis=0)
    prior_kl = sum(PRIOR[k] * np.log(PRIOR[k] / mean_s[k]) for k in range(K))
    entropy = -np.sum(s * log_s, axis=1)
    classification, prior_term, h = soft_labels.tanaka_terms(
        tf.constant(log_s, tf.float64), tf.constant(y), PRIOR)
    assert classification.shape == (b,) and h.shape == (b,) and prior_term.shape == ()
    assert classification.dtype == tf.float64
    np.testing.assert_allclose(classification.numpy(), kl, rtol=1e-10)
    np.testing.assert_allclose(prior_term.numpy(), prior_kl, rtol=1e-10)
    np.testing.assert_allclose(h.numpy(), entropy, rtol=1e-10)
    assert np.isfinite(classification.numpy()).all()
    assert prior_kl > 1e-3 and kl.min() > 1e-3


def test_pencil_terms_match_numpy():
    rng = np.random.default_rng(2)
    b = 7
    z = rng.normal(size=(b, K)) * 2
    label_logits = rng.normal(size=(b, K)) * 3
    labels = rng.integers(0, K, size=b)
    f, log_f = softmax(z), log_softmax(z)
    yd = softmax(label_logits)
    kl = np.sum(f * np.log(f / yd), axis=1) / K
    twice = np.exp(yd) / np.exp(yd).sum(axis=1, keepdims=True)
    compatibility = -np.log(twice[np.arange(b), labels])
    entropy = -np.sum(f * np.log(f), axis=1) / K
    classification, compat, h = soft_labels.pencil_terms(
        tf.constant(log_f, tf.float64), tf.constant(label_logits, tf.float32), labels)
    assert classification.dtype == tf.float64
    np.testing.assert_allclose(classification.numpy(), kl, rtol=1e-6)  # ỹ passed as float32
    np.testing.assert_allclose(compat.numpy(), compatibility, rtol=1e-6)
    np.testing.assert_allclose(h.numpy(), entropy, rtol=1e-10)
    classification, compat, _ = soft_labels.pencil_terms(
        tf.constant(log_f, tf.float64), tf.constant(label_logits, tf.float64), labels)
    np.testing.assert_allclose(classification.numpy(), kl, rtol=1e-10)
    np.testing.assert_allclose(compat.numpy(), compatibility, rtol=1e-10)


# --- the Keras models ----------------------------------------------------------------

tiny_classifier = mirrored.dense_classifier  # uint8 2x2x1 → Dense(K), given weights


def initial_weights(seed=0):
    """Random Dense weights, rounded to float32 (what the model holds)."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(4, K)) * 2).astype(np.float32).astype(np.float64),
            (rng.normal(size=K) * 0.3).astype(np.float32).astype(np.float64)]


def examples(n=N, seed=1):
    """All n training examples: images, observed labels, index = row."""
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, size=(n, 2, 2, 1)).astype(np.uint8),
            "label": rng.integers(0, K, size=n).astype(np.int64),
            "index": np.arange(n, dtype=np.int64)}


def rows(data, ids):
    return {k: v[np.asarray(ids)] for k, v in data.items()}


def batches(data, ids, batch_size):
    """The rows `ids` in that order, `batch_size` at a time (no shuffle)."""
    return tf.data.Dataset.from_tensor_slices(rows(data, ids)).batch(batch_size)


def tanaka_model(weights, labels, **kwargs):
    m = soft_labels.TanakaModel(tiny_classifier(weights), labels, K, alpha=ALPHA, beta=BETA,
                                prior=PRIOR, weight_decay=0.0, **kwargs)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    return m


def pencil_model(weights, labels, **kwargs):
    m = soft_labels.PencilModel(tiny_classifier(weights), labels, K, alpha=P_ALPHA,
                                beta=P_BETA, label_lr=LABEL_LR, scale=SCALE,
                                weight_decay=0.0, **kwargs)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    return m


def assert_weights(model, expected, before):
    for actual, desired, old in zip(model.classifier.get_weights(), expected, before):
        assert np.abs(desired - old).max() > 1e-3  # the step moves the weights
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)


def test_tanaka_tables_start_at_the_labels():
    data = examples()
    hard = tanaka_model(initial_weights(), data["label"])
    np.testing.assert_array_equal(hard.labels_table.numpy(), np.eye(K)[data["label"]])
    soft = soft_rows(np.random.default_rng(3), N)
    m = tanaka_model(initial_weights(), soft)
    np.testing.assert_array_equal(m.labels_table.numpy(), soft.astype(np.float32))
    for table in (m, hard):
        np.testing.assert_array_equal(table.sum_table.numpy(), np.zeros((N, K)))
        np.testing.assert_array_equal(table.count_table.numpy(), np.zeros(N))


@pytest.mark.parametrize("start", ["observed", "soft"])
def test_tanaka_step_matches_numpy(start):
    weights = initial_weights()
    data = examples()
    start_labels = data["label"] if start == "observed" else soft_rows(np.random.default_rng(4), N)
    y_table = np.eye(K)[data["label"]] if start == "observed" else start_labels
    m = tanaka_model(weights, start_labels)
    labels_before = m.labels_table.numpy().copy()
    batch = rows(data, BATCH_IDS)
    x = features(batch)
    z = x @ weights[0] + weights[1]
    y = y_table[BATCH_IDS]
    loss, g = tanaka_numpy(z, y)
    # The step is not cross-entropy's on the observed labels.
    assert np.abs(g - (softmax(z) - np.eye(K)[batch["label"]]) / len(x)).max() > 1e-3
    history = m.fit(batches(data, BATCH_IDS, len(BATCH_IDS)), epochs=1, verbose=0).history
    assert_weights(m, sgd(weights, x, g), weights)
    np.testing.assert_allclose(history["loss"][0], loss, rtol=1e-5)
    # The soft labels do not change within an epoch (only at its end, by the callback).
    np.testing.assert_array_equal(m.labels_table.numpy(), labels_before)
    # The epoch's sums hold the step's predictions (its forward pass, before the update),
    # in the batch's rows only; the other rows stay exactly 0.
    sums, counts = m.sum_table.numpy(), m.count_table.numpy()
    others = np.setdiff1d(np.arange(N), BATCH_IDS)
    np.testing.assert_allclose(sums[BATCH_IDS], softmax(z), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(counts[BATCH_IDS], np.ones(len(BATCH_IDS)))
    np.testing.assert_array_equal(sums[others], np.zeros((len(others), K)))
    np.testing.assert_array_equal(counts[others], np.zeros(len(others)))


class WeightsBeforeEachStep(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        self.weights.append([w.astype(np.float64) for w in self.model.classifier.get_weights()])


class TablesAtEpochEnd(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.tables = []

    def on_epoch_end(self, epoch, logs=None):
        m = self.model
        self.tables.append((m.labels_table.numpy().copy(), m.sum_table.numpy().copy(),
                            m.count_table.numpy().copy()))


def test_tanaka_labels_update_once_per_epoch_to_the_epochs_predictions():
    n, seen = 14, 12                   # rows 3 and 11 are in no batch
    weights = initial_weights(seed=5)
    data = examples(n, seed=6)
    order = np.random.default_rng(7).permutation(np.setdiff1d(np.arange(n), [3, 11]))
    assert len(order) == seen
    m = tanaka_model(weights, data["label"], average_epochs=1)   # the last epoch's alone
    recorder, before_update, after_update = (WeightsBeforeEachStep(), TablesAtEpochEnd(),
                                             TablesAtEpochEnd())
    m.fit(batches(data, order, 3), epochs=2, verbose=0,
          callbacks=[recorder, before_update, soft_labels.TanakaLabelUpdate(start=2),
                     after_update])
    assert len(recorder.weights) == 8          # 4 batches × 2 epochs
    # Each step's prediction for its rows, from the weights before that step.
    predictions = np.zeros((2, n, K))
    for step, (kernel, bias) in enumerate(recorder.weights):
        ids = order[3 * (step % 4): 3 * (step % 4) + 3]
        predictions[step // 4, ids] = softmax(features(rows(data, ids)) @ kernel + bias)
    # The predictions move within an epoch and across epochs by far more than the tolerance.
    assert np.abs(predictions[1] - predictions[0]).max() > 1e-2
    onehot = np.eye(K)[data["label"]]
    # Epoch 1 (before `start`): the labels stay, the sums are reset.
    labels, sums, counts = before_update.tables[0]
    np.testing.assert_array_equal(labels, onehot)
    np.testing.assert_allclose(sums[order], predictions[0][order], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(counts, np.isin(np.arange(n), order).astype(np.float32))
    labels, sums, counts = after_update.tables[0]
    np.testing.assert_array_equal(labels, onehot)
    np.testing.assert_array_equal(sums, np.zeros((n, K)))
    np.testing.assert_array_equal(counts, np.zeros(n))
    # Epoch 2: each seen row becomes the prediction made for it in epoch 2 (one per row);
    # the unseen rows keep their labels.
    labels, sums, counts = before_update.tables[1]
    np.testing.assert_array_equal(labels, onehot)
    np.testing.assert_array_equal(counts[order], np.ones(seen))
    np.testing.assert_array_equal(counts[[3, 11]], [0, 0])
    labels, sums, counts = after_update.tables[1]
    np.testing.assert_allclose(labels[order], predictions[1][order], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(labels[[3, 11]], onehot[[3, 11]])
    assert np.abs(predictions[1][order] - onehot[order]).max() > 0.1
    np.testing.assert_array_equal(sums, np.zeros((n, K)))
    np.testing.assert_array_equal(counts, np.zeros(n))


def epoch_predictions(recorder, epoch_orders, data, batch_size):
    """[epochs, n, K] each row's mean prediction per epoch (NaN where an epoch missed the
    row), from the weights before each step: what the test computes itself."""
    n = len(data["label"])
    steps = [order[i:i + batch_size] for order in epoch_orders
             for i in range(0, len(order), batch_size)]
    assert len(steps) == len(recorder.weights)
    per_epoch = len(steps) // len(epoch_orders)
    total = np.zeros((len(epoch_orders), n, K))
    visits = np.zeros((len(epoch_orders), n))
    for step, ((kernel, bias), ids) in enumerate(zip(recorder.weights, steps)):
        np.add.at(total[step // per_epoch], ids, softmax(features(rows(data, ids)) @ kernel + bias))
        np.add.at(visits[step // per_epoch], ids, 1)
    with np.errstate(invalid="ignore"):
        return total / visits[..., None]


def test_tanaka_soft_labels_are_the_mean_of_the_last_window_epochs():
    """Window W = 3, labels updated from epoch 4 of 6: after epoch e each label is the mean
    of the row's predictions in epochs e−2..e; a row an epoch misses counts its latest
    prediction for it (the authors keep the last one seen), a row never seen keeps its
    label."""
    n, window, start, epochs, batch_size = 13, 3, 4, 6, 3
    weights = initial_weights(seed=16)
    data = examples(n, seed=17)
    rng = np.random.default_rng(18)
    orders = [rng.permutation(12) for _ in range(epochs)]       # row 12: never seen
    orders[4] = np.where(orders[4] == 5, 0, orders[4])          # epoch 5: row 5 missed, row 0 twice
    m = tanaka_model(weights, data["label"], average_epochs=window)
    recorder, tables_after = WeightsBeforeEachStep(), TablesAtEpochEnd()
    ds = tf.data.Dataset.from_tensor_slices(rows(data, np.concatenate(orders))).batch(batch_size)
    m.fit(ds, epochs=epochs, steps_per_epoch=4, verbose=0,
          callbacks=[recorder, soft_labels.TanakaLabelUpdate(start=start), tables_after])
    predictions = epoch_predictions(recorder, orders, data, batch_size)
    latest = predictions.copy()                                   # carried into missed epochs
    for e in range(1, epochs):
        missed = np.isnan(latest[e, :, 0])
        latest[e, missed] = latest[e - 1, missed]
    assert np.isnan(latest[:, 12]).all() and not np.isnan(latest[:, :12]).any()
    assert np.isnan(predictions[4, 5]).all() and not np.isnan(predictions[5, 5]).any()
    onehot = np.eye(K)[data["label"]]
    for e in range(epochs):                                       # 0-based epoch
        labels = tables_after.tables[e][0]
        if e + 1 < start:
            np.testing.assert_array_equal(labels, onehot)
            continue
        expected = latest[e - window + 1:e + 1, :12].mean(axis=0)
        np.testing.assert_allclose(labels[:12], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(labels[12], onehot[12])
        # Not the epoch's own predictions, nor a mean over every epoch so far.
        assert np.abs(expected - latest[e, :12]).max() > 1e-2
        assert np.abs(expected - latest[:e + 1, :12].mean(axis=0)).max() > 1e-3
    # Row 0's epoch-5 prediction averages its two visits; row 5's is its epoch-4 one.
    np.testing.assert_allclose(m.window_table.numpy()[5, 4 % window], latest[4, 5], rtol=1e-5)


def test_tanaka_window_before_it_fills_averages_the_epochs_so_far():
    weights = initial_weights(seed=19)
    data = examples(seed=20)
    m = tanaka_model(weights, data["label"], average_epochs=10)
    recorder = WeightsBeforeEachStep()
    m.fit(batches(data, np.arange(N), 4), epochs=3, verbose=0,
          callbacks=[recorder, soft_labels.TanakaLabelUpdate(start=3)])
    predictions = epoch_predictions(recorder, [np.arange(N)] * 3, data, 4)
    np.testing.assert_allclose(m.labels_table.numpy(), predictions.mean(axis=0), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(m.labels_table.numpy().sum(axis=1), np.ones(N), rtol=1e-5)


def test_tanaka_update_averages_an_epochs_predictions():
    """Two visits of each row in one epoch: the new label is the mean of both predictions."""
    weights = initial_weights(seed=8)
    data = examples(6, seed=9)
    order = np.array([4, 1, 5, 0, 2, 3])
    m = tanaka_model(weights, data["label"])
    recorder = WeightsBeforeEachStep()
    twice = batches(data, order, 3).repeat(2)
    m.fit(twice, epochs=1, verbose=0,
          callbacks=[recorder, soft_labels.TanakaLabelUpdate(start=1)])
    assert len(recorder.weights) == 4
    total = np.zeros((6, K))
    for step, (kernel, bias) in enumerate(recorder.weights):
        ids = order[3 * (step % 2): 3 * (step % 2) + 3]
        total[ids] += softmax(features(rows(data, ids)) @ kernel + bias)
    np.testing.assert_allclose(m.labels_table.numpy(), total / 2, rtol=1e-5, atol=1e-7)


# --- PENCIL --------------------------------------------------------------------------

@pytest.mark.parametrize("joint_start, finetune_start, phases", [
    (3, 5, [1, 1, 2, 2, 3, 3, 3]),
    (1, 3, [2, 2, 3, 3, 3, 3, 3]),
    (2, 2, [1, 3, 3, 3, 3, 3, 3]),
])
def test_pencil_phase_of_each_epoch(joint_start, finetune_start, phases):
    schedule = soft_labels.PencilPhase(joint_start, finetune_start)
    assert [schedule.phase(epoch) for epoch in range(7)] == phases


class PhaseAndTable(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.phases, self.tables = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.phases.append(int(self.model.phase.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        self.tables.append(self.model.label_table.numpy().copy())


def test_pencil_phase_callback_sets_the_phase_and_only_phase_2_writes_labels():
    data = examples()
    m = pencil_model(initial_weights(), data["label"])
    assert int(m.phase.numpy()) == 1
    start = m.label_table.numpy().copy()
    np.testing.assert_array_equal(start, SCALE * np.eye(K)[data["label"]])
    recorder = PhaseAndTable()
    m.fit(batches(data, BATCH_IDS, len(BATCH_IDS)), epochs=5, verbose=0,
          callbacks=[soft_labels.PencilPhase(2, 4), recorder])
    assert recorder.phases == [1, 2, 2, 3, 3]
    tables = [start] + recorder.tables
    others = np.setdiff1d(np.arange(N), BATCH_IDS)
    for epoch in range(1, 6):
        before, after = tables[epoch - 1], tables[epoch]
        np.testing.assert_array_equal(after[others], before[others])
        if epoch in (2, 3):
            assert np.abs(after[BATCH_IDS] - before[BATCH_IDS]).min(axis=1).min() > 1e-4
        else:
            np.testing.assert_array_equal(after, before)


def random_label_logits(seed=10):
    return (np.random.default_rng(seed).normal(size=(N, K)) * 2).astype(np.float32)


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_pencil_step_matches_numpy(phase):
    weights = initial_weights(seed=11)
    data = examples(seed=12)
    m = pencil_model(weights, data["label"])
    table = random_label_logits()
    m.label_table.assign(table)
    m.phase.assign(phase)
    batch = rows(data, BATCH_IDS)
    x = features(batch)
    z = x @ weights[0] + weights[1]
    label_logits = table[BATCH_IDS].astype(np.float64)
    loss, g_z, g_y = pencil_numpy(z, label_logits, batch["label"], phase)
    ce_g = (softmax(z) - np.eye(K)[batch["label"]]) / len(x)
    if phase != 1:  # the step is not cross-entropy's
        assert np.abs(g_z - ce_g).max() > 1e-3
    if phase == 2:  # the compatibility and entropy terms matter
        _, g_z3, g_y3 = pencil_numpy(z, label_logits, batch["label"], 3)
        assert np.abs(g_z - g_z3).max() > 1e-3 and np.abs(g_y - g_y3).max() > 1e-3
    history = m.fit(batches(data, BATCH_IDS, len(BATCH_IDS)), epochs=1, verbose=0).history
    assert_weights(m, sgd(weights, x, g_z), weights)
    np.testing.assert_allclose(history["loss"][0], loss, rtol=1e-5)
    after = m.label_table.numpy()
    others = np.setdiff1d(np.arange(N), BATCH_IDS)
    np.testing.assert_array_equal(after[others], table[others])
    if phase == 2:
        # ỹ_i ← ỹ_i − λ ∂L/∂ỹ_i, L the batch mean (the 1/B is in g_y).
        change = after[BATCH_IDS].astype(np.float64) - label_logits
        assert np.abs(change).max() > 0.1
        np.testing.assert_allclose(change, -LABEL_LR * g_y, rtol=1e-4, atol=2e-5)
    else:
        np.testing.assert_array_equal(after, table)
    assert int(m.phase.numpy()) == phase


# --- PENCIL (and Tanaka) under MirroredStrategy --------------------------------------

# Runs in its own process (tests/mirrored.py).
MIRRORED_SOFT_LABELS = r"""
from idn_tf import soft_labels

observed = np.asarray(args["observed"], np.int64)
table = np.asarray(args["table"], np.float32)
k = len(args["weights"][1])


def train(strategy, method):
    with strategy.scope():
        classifier = dense_classifier(args["weights"])
        if method == "pencil":
            m = soft_labels.PencilModel(classifier, observed, k, weight_decay=0.0,
                                        **args["pencil"])
            m.label_table.assign(table)
            m.phase.assign(2)
        else:
            m = soft_labels.TanakaModel(classifier, observed, k, weight_decay=0.0,
                                        **args["tanaka"])
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=args["lr"]))
    loss = m.fit(data(), epochs=1, verbose=0).history["loss"][0]
    out = {"weights": [w.tolist() for w in classifier.get_weights()], "loss": loss}
    state = m.label_table if method == "pencil" else m.sum_table
    out["table"] = state.numpy().tolist()
    copies = getattr(state.variable.value, "values", None)
    out["copies"] = None if copies is None else [c.numpy().tolist() for c in copies]
    return out


result = {"replicas": mirrored.num_replicas_in_sync, "shares": shares("index")}
for method in ("pencil", "tanaka"):
    result[method] = {"one": train(tf.distribute.get_strategy(), method),
                      "mirrored": train(mirrored, method)}
dump(result)
"""


@pytest.mark.e2e
def test_pencil_and_tanaka_under_mirrored_strategy_match_one_device(tmp_path):
    weights = initial_weights(seed=13)
    data = examples(seed=14)
    table = random_label_logits(seed=15)
    batch = rows(data, BATCH_IDS)
    pencil = {"alpha": P_ALPHA, "beta": P_BETA, "label_lr": LABEL_LR, "scale": SCALE}
    tanaka = {"alpha": ALPHA, "beta": BETA, "prior": PRIOR.tolist()}
    got = mirrored.run(MIRRORED_SOFT_LABELS, {
        "batch": {k: v.tolist() for k, v in batch.items()},
        "weights": [w.tolist() for w in weights], "lr": LR, "observed": data["label"].tolist(),
        "table": table.tolist(), "pencil": pencil, "tanaka": tanaka}, tmp_path)
    assert got["replicas"] == 2
    first, second = got["shares"]
    assert len(first) == len(second) == 4 and sorted(first + second) == sorted(BATCH_IDS)
    x = features(batch)
    z = x @ weights[0] + weights[1]
    others = np.setdiff1d(np.arange(N), BATCH_IDS)

    # PENCIL, phase 2: network weights and the batch's label rows.
    loss, g_z, g_y = pencil_numpy(z, table[BATCH_IDS].astype(np.float64), batch["label"], 2)
    expected_w = sgd(weights, x, g_z)
    expected_rows = table[BATCH_IDS] - LABEL_LR * g_y
    one, two = got["pencil"]["one"], got["pencil"]["mirrored"]
    assert one["copies"] is None and len(two["copies"]) == 2
    for a, b, desired in zip(one["weights"], two["weights"], expected_w):
        np.testing.assert_allclose(a, desired, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for run in (one, two):
        run_table = np.asarray(run["table"])
        np.testing.assert_allclose(run_table[BATCH_IDS], expected_rows, rtol=1e-5, atol=2e-5)
        np.testing.assert_array_equal(run_table[others], table[others])
        np.testing.assert_allclose(run["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(two["table"])[BATCH_IDS],
                               np.asarray(one["table"])[BATCH_IDS], rtol=1e-5, atol=1e-5)
    # Both replicas' copies hold every row's update (not only their own half's).
    np.testing.assert_array_equal(two["copies"][0], two["copies"][1])
    np.testing.assert_array_equal(two["copies"][0], two["table"])

    # Tanaka: the prior term's batch mean spans both replicas' halves.
    loss, g = tanaka_numpy(z, np.eye(K)[batch["label"]])
    one, two = got["tanaka"]["one"], got["tanaka"]["mirrored"]
    for run in (one, two):
        for actual, desired in zip(run["weights"], sgd(weights, x, g)):
            np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run["loss"], loss, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(run["table"])[BATCH_IDS], softmax(z), rtol=1e-5,
                                   atol=1e-7)
    np.testing.assert_array_equal(two["copies"][0], two["copies"][1])


# --- per-example state is saved with the weights -------------------------------------

def test_tanaka_tables_survive_save_and_load(tmp_path):
    data = examples()
    m = tanaka_model(initial_weights(), data["label"])
    m.fit(batches(data, np.arange(N), 4), epochs=1, verbose=0,
          callbacks=[soft_labels.TanakaLabelUpdate(start=1)])        # labels updated
    m.fit(batches(data, BATCH_IDS, 4), epochs=1, verbose=0)          # sums, counts in flight
    labels, sums, counts = (m.labels_table.numpy(), m.sum_table.numpy(),
                            m.count_table.numpy())
    window, seen = m.window_table.numpy(), m.window_seen.numpy()
    assert np.abs(labels - np.eye(K)[data["label"]]).max() > 0.1
    assert counts.sum() == len(BATCH_IDS) and np.abs(sums).max() > 0.1
    assert seen.sum() == N and np.abs(window).max() > 0.1
    path = str(tmp_path / "tanaka.weights.h5")
    m.save_weights(path)
    other = tanaka_model(initial_weights(seed=20), np.zeros(N, np.int64))
    other.load_weights(path)
    np.testing.assert_array_equal(other.labels_table.numpy(), labels)
    np.testing.assert_array_equal(other.sum_table.numpy(), sums)
    np.testing.assert_array_equal(other.count_table.numpy(), counts)
    np.testing.assert_array_equal(other.window_table.numpy(), window)
    np.testing.assert_array_equal(other.window_seen.numpy(), seen)
    for a, b in zip(other.classifier.get_weights(), m.classifier.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pencil_label_logits_and_phase_survive_save_and_load(tmp_path):
    data = examples()
    m = pencil_model(initial_weights(), data["label"])
    m.phase.assign(2)
    m.fit(batches(data, np.arange(N), 4), epochs=1, verbose=0)
    m.phase.assign(3)
    table = m.label_table.numpy()
    assert np.abs(table - SCALE * np.eye(K)[data["label"]]).min(axis=1).min() > 1e-4
    path = str(tmp_path / "pencil.weights.h5")
    m.save_weights(path)
    other = pencil_model(initial_weights(seed=21), np.zeros(N, np.int64))
    assert int(other.phase.numpy()) == 1
    other.load_weights(path)
    np.testing.assert_array_equal(other.label_table.numpy(), table)
    assert int(other.phase.numpy()) == 3
    for a, b in zip(other.classifier.get_weights(), m.classifier.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_prior_with_a_zero_class_keeps_the_prior_term_finite():
    log_probs = tf.nn.log_softmax(tf.constant([[1.0, 0.0, -1.0], [0.0, 2.0, 0.5]], tf.float64))
    prior = np.array([0.5, 0.5, 0.0])
    _, prior_term, _ = soft_labels.tanaka_terms(log_probs, tf.one_hot([0, 1], 3, dtype=tf.float64),
                                                prior)
    mean = np.exp(log_probs.numpy()).mean(axis=0)
    expected = sum(p * (np.log(p) - np.log(m)) for p, m in zip(prior, mean) if p > 0)
    np.testing.assert_allclose(prior_term.numpy(), expected, rtol=1e-12)


def test_integer_labels_as_a_column_start_the_tables_at_their_onehot():
    column = np.array([[0], [2], [1], [2]])
    np.testing.assert_array_equal(soft_labels.start_labels(column, 3),
                                  np.eye(3, dtype=np.float32)[[0, 2, 1, 2]])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        soft_labels.start_labels(np.ones((4, 2)), 3)


def test_soft_target_step_is_cross_entropy_on_the_table_rows():
    """Tanaka's second phase: one SGD step against −Σ_k y_k log softmax(z)_k with y the
    batch's rows of the soft-label table (dL/dz = (softmax(z) − y)/B for rows summing to 1)."""
    weights = initial_weights(seed=3)
    data = examples()
    table = soft_rows(np.random.default_rng(8), N)
    m = soft_labels.SoftTargetModel(tiny_classifier(weights), table.astype(np.float32), K,
                                    weight_decay=0.0)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    batch = rows(data, BATCH_IDS)
    x = features(batch)
    z = x @ weights[0] + weights[1]
    y = table[BATCH_IDS]
    loss = -np.mean(np.sum(y * log_softmax(z), axis=1))
    g = (softmax(z) - y) / len(x)
    history = m.fit(batches(data, BATCH_IDS, len(BATCH_IDS)), epochs=1, verbose=0).history
    assert_weights(m, sgd(weights, x, g), weights)
    np.testing.assert_allclose(history["loss"][0], loss, rtol=1e-5)
    # The rows the batch's observed labels name are not the targets.
    assert np.abs(g - (softmax(z) - np.eye(K)[batch["label"]]) / len(x)).max() > 1e-3
    np.testing.assert_allclose(m.labels_table.numpy(), table, rtol=1e-6)  # never written


def test_tanaka_prior_term_stays_finite_when_a_class_mean_underflows():
    # Class 2's probability underflows to 0 in float32 for every example of the batch.
    log_probs = tf.constant([[0.0, -200.0, -300.0], [-200.0, 0.0, -300.0]], tf.float32)
    log_probs = tf.nn.log_softmax(log_probs)
    _, prior_term, _ = soft_labels.tanaka_terms(log_probs, tf.constant(np.eye(K)[[0, 1]],
                                                                       tf.float32), PRIOR)
    assert np.isfinite(prior_term.numpy()) and prior_term.numpy() > 10
