"""Checks of Co-teaching (Han et al. 2018): the forget-rate schedule, the small-loss
selection, the cross update, evaluation by the first network, and MirroredStrategy.

Every expected value is computed here, in float64 numpy, from the paper's algorithm
and `coteaching`'s documented conventions (num_keep = B − floor(R·B + 1/2), per-replica
selection): never from `coteaching`'s own output.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import coteaching

import mirrored

K = 3          # classes of the tiny classifiers
LR = 0.1


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


tiny_classifier = mirrored.dense_classifier  # uint8 2x2x1 → Dense(K), given weights


def initial_weights(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, K)) * 2, rng.normal(size=K) * 0.3]


def make_batch(seed, b=8):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(b, 2, 2, 1)).astype(np.uint8),
        "label": rng.integers(0, K, size=b).astype(np.int64),
        "index": np.arange(b, dtype=np.int64),
    }


def pixels(batch):
    return batch["image"].reshape(len(batch["label"]), -1).astype(np.float64) / 255


def numpy_ce(weights, x, labels):
    """(per-example cross-entropy [B], softmax [B, K]) of the linear classifier."""
    p = softmax(x @ weights[0] + weights[1])
    return -np.log(p[np.arange(len(labels)), labels]), p


def numpy_pick(losses, rate):
    """The documented small-loss pick: the B − floor(R·B + 1/2) smallest, as a bool mask."""
    keep = len(losses) - int(np.floor(rate * len(losses) + 0.5))
    order = np.argsort(losses, kind="stable")
    picked = np.zeros(len(losses), bool)
    picked[order[:keep]] = True
    # The pick must not hinge on float32 rounding of the losses.
    if 0 < keep < len(losses):
        assert losses[order[keep]] - losses[order[keep - 1]] > 1e-4
    return picked


def numpy_step(w1, w2, batch, rate, shares=None, wd=0.0, swap=False):
    """One co-teaching SGD step by hand.

    Each share of the batch (`shares`: lists of rows, default the whole batch) is
    ranked separately; network 1 descends its mean CE over network 2's pick (all
    shares together), network 2 over network 1's. `swap`: each on its own pick
    instead (the wrong algorithm, to show the test tells them apart).
    Returns (new w1, new w2, logged loss, number kept).
    """
    x, y = pixels(batch), batch["label"]
    l1, p1 = numpy_ce(w1, x, y)
    l2, p2 = numpy_ce(w2, x, y)
    pick1, pick2 = np.zeros(len(y), bool), np.zeros(len(y), bool)
    for rows in shares or [np.arange(len(y))]:
        rows = np.asarray(rows)
        pick1[rows] = numpy_pick(l1[rows], rate)
        pick2[rows] = numpy_pick(l2[rows], rate)
    assert pick1.sum() == pick2.sum()
    kept = pick1.sum()
    train1, train2 = (pick1, pick2) if swap else (pick2, pick1)
    onehot = np.eye(K)[y]

    def update(w, p, train):
        g = (p - onehot) * train[:, None] / kept          # d(mean CE over `train`)/d logits
        return [w[0] - LR * (x.T @ g + wd * w[0]), w[1] - LR * (g.sum(0) + wd * w[1])]

    loss = 0.5 * (l1[train1].mean() + l2[train2].mean())
    return update(w1, p1, train1), update(w2, p2, train2), loss, kept


def assert_weights(net, expected):
    for actual, desired in zip(net.get_weights(), expected):
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)


def max_diff(a, b):
    return max(np.abs(np.asarray(u) - np.asarray(v)).max() for u, v in zip(a, b))


# --- the forget-rate schedule -----------------------------------------------------------

@pytest.mark.parametrize("tau, t_k", [(0.2, 10), (0.45, 5), (0.8, 3), (0.5, 1)])
def test_schedule_matches_formula(tau, t_k):
    epochs = np.arange(20)
    expected = np.minimum(epochs / t_k * tau, tau)      # R(t) = min(t/T_k·τ, τ), t 0-based
    actual = np.array([coteaching.forget_rate_schedule(int(t), tau, t_k) for t in epochs])
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)
    assert actual[0] == 0.0                              # the first epoch keeps everything
    assert (actual[:t_k] < tau).all() and (actual[t_k:] == tau).all()
    assert coteaching.forget_rate_schedule(3, tau) == pytest.approx(min(0.3 * tau, tau))  # T_k=10


@pytest.mark.parametrize("args", [(0, 1.0, 10), (0, -0.1, 10), (0, 0.2, 0), (-1, 0.2, 10)])
def test_schedule_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        coteaching.forget_rate_schedule(*args)


# --- selection counts per epoch ---------------------------------------------------------

def test_kept_count_per_epoch_follows_the_schedule():
    tau, t_k, b, steps, epochs = 0.4, 3, 16, 3, 5
    data = make_batch(seed=7, b=b * steps)
    m = coteaching.CoTeachingModel(tiny_classifier(initial_weights(0)),
                                   tiny_classifier(initial_weights(1)))
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    callback = coteaching.ForgetRateCallback(tau, t_k=t_k)
    history = m.fit(tf.data.Dataset.from_tensor_slices(data).batch(b), epochs=epochs,
                    verbose=0, callbacks=[callback]).history
    rates = np.minimum(np.arange(epochs) / t_k * tau, tau)
    expected = [steps * (b - int(np.floor(r * b + 0.5))) for r in rates]
    assert expected == [48, 42, 36, 30, 30]
    # The authors' int((1 − R)·B) would give other counts: the test tells them apart.
    assert expected != [steps * int((1 - r) * b) for r in rates]
    np.testing.assert_array_equal(history["kept"], expected)
    np.testing.assert_allclose(history["forget_rate"], rates, rtol=1e-6)
    assert float(m.forget_rate.numpy()) == pytest.approx(tau)


# --- the cross update ---------------------------------------------------------------------

@pytest.mark.parametrize("run_eagerly, jit_compile, wd", [
    (False, False, 0.0), (True, False, 0.0), pytest.param(False, True, 0.0, marks=pytest.mark.e2e),
    (False, False, 0.01)])  # e2e: XLA compilation, ~2 s
def test_each_network_trains_on_the_other_ones_pick(run_eagerly, jit_compile, wd):
    rate = 0.25                                   # B = 8: each network keeps 6
    w1, w2 = initial_weights(0), initial_weights(5)
    batch = make_batch(seed=1)
    x, y = pixels(batch), batch["label"]
    pick1 = numpy_pick(numpy_ce(w1, x, y)[0], rate)
    pick2 = numpy_pick(numpy_ce(w2, x, y)[0], rate)
    assert pick1.sum() == pick2.sum() == 6 and (pick1 != pick2).any()
    expected1, expected2, expected_loss, kept = numpy_step(w1, w2, batch, rate, wd=wd)
    swapped1, swapped2, _, _ = numpy_step(w1, w2, batch, rate, wd=wd, swap=True)
    assert max_diff(expected1, swapped1) > 1e-3 and max_diff(expected2, swapped2) > 1e-3
    assert max_diff(expected1, w1) > 1e-3 and max_diff(expected2, w2) > 1e-3

    classifier, peer = tiny_classifier(w1), tiny_classifier(w2)
    m = coteaching.CoTeachingModel(classifier, peer, weight_decay=wd)
    m.forget_rate.assign(rate)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), run_eagerly=run_eagerly,
              jit_compile=jit_compile)
    history = m.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    assert_weights(classifier, expected1)
    assert_weights(peer, expected2)
    np.testing.assert_allclose(history["loss"][0], expected_loss, rtol=1e-5)
    assert history["kept"][0] == kept == 6
    p1 = numpy_ce(w1, x, y)[1]
    np.testing.assert_allclose(history["accuracy"][0], np.mean(p1.argmax(1) == y), rtol=1e-6)


def test_planted_flipped_labels_are_left_out():
    # Class c lights pixel c; both networks are confident on the true class. A quarter
    # of the labels are flipped: those have the largest losses and are forgotten.
    rng = np.random.default_rng(3)
    b, rate = 12, 0.25
    clean = np.arange(b) % K
    image = rng.integers(0, 40, size=(b, 4))
    image[np.arange(b), clean] = rng.integers(200, 256, size=b)
    flipped = np.zeros(b, bool)
    flipped[[1, 6, 8]] = True
    labels = np.where(flipped, (clean + 1 + rng.integers(0, K - 1, b)) % K, clean)
    assert (labels[flipped] != clean[flipped]).all()
    batch = {"image": image.reshape(b, 2, 2, 1).astype(np.uint8),
             "label": labels.astype(np.int64), "index": np.arange(b, dtype=np.int64)}
    w1 = [np.vstack([8 * np.eye(K), np.zeros((1, K))]), np.zeros(K)]
    w2 = [w1[0] + rng.normal(size=(4, K)) * 0.5, rng.normal(size=K) * 0.1]
    x = pixels(batch)
    for w in (w1, w2):
        losses = numpy_ce(w, x, labels)[0]
        assert losses[flipped].min() > 3 * losses[~flipped].max()   # the premise

    classifier, peer = tiny_classifier(w1), tiny_classifier(w2)
    m = coteaching.CoTeachingModel(classifier, peer)
    for net in (classifier, peer):
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, net(batch["image"]))
        mask, keep = coteaching.small_loss_mask(losses, rate)
        assert keep.numpy() == b - 3
        np.testing.assert_array_equal(mask.numpy(), (~flipped).astype(np.float32))

    # One step: each network descends its mean CE over exactly the unflipped examples.
    m.forget_rate.assign(rate)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    m.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    onehot = np.eye(K)[labels]
    for net, w in ((classifier, w1), (peer, w2)):
        g = (numpy_ce(w, x, labels)[1] - onehot)[~flipped] / (~flipped).sum()
        expected = [w[0] - LR * x[~flipped].T @ g, w[1] - LR * g.sum(0)]
        assert_weights(net, expected)


def test_small_loss_mask_edge_cases():
    losses = tf.constant([0.5, 0.1, 0.5, 0.3])
    # Ties: the earlier example first; R·B = 1.0 forgets one.
    mask, keep = coteaching.small_loss_mask(losses, 0.25)
    np.testing.assert_array_equal(mask.numpy(), [1, 1, 0, 1])
    assert keep.numpy() == 3
    # R·B = 3.9 rounds to 4 = B: one example is kept all the same.
    mask, keep = coteaching.small_loss_mask(losses, 0.975)
    np.testing.assert_array_equal(mask.numpy(), [0, 1, 0, 0])
    # An empty share keeps nothing.
    mask, keep = coteaching.small_loss_mask(tf.zeros([0]), 0.3)
    assert mask.shape == (0,) and keep.numpy() == 0


# --- evaluation and export use the first network -------------------------------------------

def test_inference_and_evaluation_use_the_first_network(tmp_path):
    w1, w2 = initial_weights(0), initial_weights(5)
    classifier, peer = tiny_classifier(w1), tiny_classifier(w2)
    m = coteaching.CoTeachingModel(classifier, peer)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    data = make_batch(seed=11, b=40)
    x = pixels(data)
    # The labels are the peer's predictions: the peer is right everywhere, not network 1.
    data["label"] = numpy_ce(w2, x, data["label"])[1].argmax(1).astype(np.int64)
    images, y = data["image"], data["label"]
    np.testing.assert_array_equal(m(images).numpy(), classifier(images).numpy())
    np.testing.assert_allclose(m.predict(images, verbose=0), classifier(images).numpy(),
                               rtol=1e-6)
    assert np.abs(m(images).numpy() - peer(images).numpy()).max() > 0.1

    l1, p1 = numpy_ce(w1, x, y)
    acc1, acc2 = np.mean(p1.argmax(1) == y), np.mean(numpy_ce(w2, x, y)[1].argmax(1) == y)
    assert acc2 == 1.0 and acc1 < 0.8
    result = m.evaluate(tf.data.Dataset.from_tensor_slices(data).batch(16), verbose=0,
                        return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    np.testing.assert_allclose(result["accuracy"], acc1, rtol=1e-6)
    np.testing.assert_allclose(result["loss"], l1.mean(), rtol=1e-5)

    # Both networks and the forget rate are saved with the weights.
    m.forget_rate.assign(0.3)
    m.save_weights(tmp_path / "m.weights.h5")
    other = coteaching.CoTeachingModel(tiny_classifier(initial_weights(8)),
                                       tiny_classifier(initial_weights(9)))
    other.load_weights(tmp_path / "m.weights.h5")
    assert float(other.forget_rate.numpy()) == pytest.approx(0.3)
    for a, b in zip(other.classifier.get_weights() + other.peer.get_weights(),
                    classifier.get_weights() + peer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_rejects_one_network_twice_or_different_architectures():
    classifier = tiny_classifier(initial_weights(0))
    with pytest.raises(ValueError, match="two networks"):
        coteaching.CoTeachingModel(classifier, classifier)
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    other = keras.Model(inputs, keras.layers.Dense(K)(keras.layers.Dense(2)(x)))
    with pytest.raises(ValueError, match="same architecture"):
        coteaching.CoTeachingModel(classifier, other)


# --- MirroredStrategy ---------------------------------------------------------------------

MIRRORED = r"""
from idn_tf import coteaching

with mirrored.scope():
    nets = [dense_classifier(args["w1"]), dense_classifier(args["w2"])]
    m = coteaching.CoTeachingModel(*nets, weight_decay=args["wd"])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=args["lr"]))
m.forget_rate.assign(args["rate"])
history = m.fit(data(), epochs=1, verbose=0).history
# The rows ("index") each replica gets of the global batch.
dump({"replicas": mirrored.num_replicas_in_sync, "shares": shares("index"),
      "w1": [w.tolist() for w in nets[0].get_weights()],
      "w2": [w.tolist() for w in nets[1].get_weights()],
      "history": {k: v[0] for k, v in history.items()}})
"""


@pytest.mark.e2e
def test_mirrored_step_selects_within_each_replica(tmp_path):
    rate, wd = 0.25, 0.01
    w1, w2 = initial_weights(0), initial_weights(5)
    batch = make_batch(seed=4)
    got = mirrored.run(MIRRORED, {"batch": {k: v.tolist() for k, v in batch.items()},
                                  "w1": [w.tolist() for w in w1], "w2": [w.tolist() for w in w2],
                                  "rate": rate, "wd": wd, "lr": LR}, tmp_path)
    assert got["replicas"] == 2
    shares = got["shares"]
    assert sorted(len(s) for s in shares) == [4, 4]
    assert sorted(shares[0] + shares[1]) == list(range(8))

    expected1, expected2, expected_loss, kept = numpy_step(w1, w2, batch, rate, shares, wd=wd)
    # Per-replica selection differs from a selection over the global batch, for both nets.
    global1, global2, _, _ = numpy_step(w1, w2, batch, rate, wd=wd)
    assert max_diff(expected1, global1) > 1e-3 and max_diff(expected2, global2) > 1e-3
    assert kept == 6   # 3 of 4 on each replica (a global pick also keeps 6)
    for actual, expected, before in ((got["w1"], expected1, w1), (got["w2"], expected2, w2)):
        assert max_diff(expected, before) > 1e-3
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["history"]["loss"], expected_loss, rtol=1e-5)
    assert got["history"]["kept"] == kept
