"""Checks of DivideMix (Li et al. 2020): the GMM split against scikit-learn, the MixMatch
targets and mixed inputs against a numpy reference of the authors' train(), the losses
against numpy and autodiff, the rampup by hand, one whole training step of the model
against numpy, the co-divide callback and batches, the ensemble, exact resume.

Every expected value is computed here (numpy, scikit-learn, tf.GradientTape, by hand),
never from `dividemix`'s own output; the mixup draws (λ, π) are inputs to the reference,
taken from `dividemix.mix_draws`, which is checked for its distribution on its own.
"""

import os
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.mixture import GaussianMixture

from idn_tf import callbacks, dividemix
from idn_tf.data import codivide

import mirrored

K = 3
T = 0.5
ALPHA = 4.0


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_sharpen(p, t):
    q = p ** (1 / t)
    return q / q.sum(axis=1, keepdims=True)


def weights(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, K)) * 2, rng.normal(size=K) * 0.3]


# --- The GMM split --------------------------------------------------------------------------


def test_clean_probability_is_sklearns_gmm_posterior_of_the_smaller_mean():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.gamma(2.0, 0.1, 300), 2.0 + rng.gamma(3.0, 0.3, 100)])
    x = ((losses - losses.min()) / (losses.max() - losses.min())).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4,
                          random_state=7).fit(x)
    expected = gmm.predict_proba(x)[:, np.argmin(gmm.means_.ravel())]
    w = dividemix.clean_probability(losses, random_state=7)
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
    # The planted high-loss examples are the unlabelled ones at τ = 0.5.
    assert (w[:300] > 0.5).mean() > 0.95 and (w[300:] > 0.5).mean() < 0.05
    # Min-max normalisation: scaling and shifting the losses changes nothing.
    np.testing.assert_allclose(dividemix.clean_probability(3 * losses + 5, random_state=7), w,
                               rtol=1e-5, atol=1e-6)


# --- MixMatch targets and mixup on one batch ------------------------------------------------


def numpy_mixmatch(one_hot, w, px1, px2, pu, inputs_x1, inputs_x2, inputs_u1, inputs_u2,
                   lam, perm):
    """The authors' train(), written out: refined and guessed targets, mixup of all four."""
    px = (px1 + px2) / 2
    targets_x = np_sharpen(w[:, None] * one_hot + (1 - w[:, None]) * px, T)
    targets_u = np_sharpen(sum(pu) / 4, T)
    lam = max(lam, 1 - lam)
    all_inputs = np.concatenate([inputs_x1, inputs_x2, inputs_u1, inputs_u2])
    all_targets = np.concatenate([targets_x, targets_x, targets_u, targets_u])
    return (lam * all_inputs + (1 - lam) * all_inputs[perm],
            lam * all_targets + (1 - lam) * all_targets[perm])


@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_mixmatch_mixed_inputs_and_targets_match_numpy(lam):
    rng = np.random.default_rng(1)
    b = 5
    one_hot = np.eye(K)[rng.integers(0, K, b)]
    w = rng.uniform(size=b)
    px1, px2 = softmax(rng.normal(size=(b, K))), softmax(rng.normal(size=(b, K)))
    pu = [softmax(rng.normal(size=(b, K))) for _ in range(4)]
    images = [rng.normal(size=(b, 2, 2, 1)) for _ in range(4)]
    perm = rng.permutation(4 * b)
    mixed_expected, targets_expected = numpy_mixmatch(one_hot, w, px1, px2, pu, *images,
                                                      lam, perm)
    targets_x = dividemix.co_refine(tf.constant(one_hot), tf.constant(w), tf.constant(px1),
                                    tf.constant(px2), T)
    targets_u = dividemix.co_guess([tf.constant(p) for p in pu], T)
    mixed, mixed_targets = dividemix.mixup(
        tf.constant(np.concatenate(images)),
        tf.concat([targets_x, targets_x, targets_u, targets_u], 0),
        tf.constant(lam, tf.float64), tf.constant(perm))
    np.testing.assert_allclose(mixed.numpy(), mixed_expected, rtol=1e-12)
    np.testing.assert_allclose(mixed_targets.numpy(), targets_expected, rtol=1e-12)
    np.testing.assert_allclose(mixed_targets.numpy().sum(1), 1.0, rtol=1e-12)


def test_sharpen_by_hand():
    # (0.2, 0.8) at T = 0.5: (0.04, 0.64) / 0.68.
    np.testing.assert_allclose(dividemix.sharpen(tf.constant([[0.2, 0.8]], tf.float64), 0.5),
                               [[0.04 / 0.68, 0.64 / 0.68]], rtol=1e-12)


def test_mix_draws_are_beta_and_a_permutation():
    lams, first = [], None
    draws = tf.function(lambda seed: dividemix.mix_draws(seed, 12, ALPHA))  # traced once
    for i in range(2000):
        lam, perm = draws(tf.constant([3, i], tf.int64))
        lams.append(float(lam))
        assert sorted(perm.numpy().tolist()) == list(range(12))
    lams = np.array(lams)
    # Beta(4, 4): mean 1/2, variance 1/(4(2α + 1)) = 1/36.
    assert abs(lams.mean() - 0.5) < 0.01
    assert abs(lams.var() - 1 / 36) < 0.003
    again, _ = dividemix.mix_draws(tf.constant([3, 5], tf.int64), 12, ALPHA)
    assert float(again) == lams[5]  # stateless: the same seed, the same λ


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.e2e)])
@pytest.mark.parametrize("alpha", [ALPHA, 0.5])
def test_beta_sample_inverts_the_beta_cdf(alpha, jit_compile):
    """λ = F⁻¹(u) of Beta(α, α) (scipy's), u the seed's stateless uniform draw. (Under
    XLA that draw is another number for the same seed: XLA's stateless generator is not
    TensorFlow's kernel; docs/run_folder.md.)"""
    from scipy import stats

    def draws(seed):
        return (tf.random.stateless_uniform([], seed=seed, dtype=tf.float32),
                dividemix.beta_sample(seed, alpha))

    draws = tf.function(draws, jit_compile=jit_compile)
    for i in range(20):
        u, lam = (t.numpy() for t in draws(tf.constant([7, i], tf.int64)))
        np.testing.assert_allclose(lam, stats.beta.ppf(np.float64(u), alpha, alpha),
                                   rtol=1e-5, atol=1e-6)


# --- Losses ---------------------------------------------------------------------------------


def test_losses_match_numpy_and_the_gradient_of_lx_is_autodiffs():
    rng = np.random.default_rng(2)
    zx, zu = rng.normal(size=(6, K)), rng.normal(size=(4, K))
    tx, tu = softmax(rng.normal(size=(6, K))), softmax(rng.normal(size=(4, K)))
    lx, lu = dividemix.mixmatch_losses(tf.constant(zx), tf.constant(tx), tf.constant(zu),
                                       tf.constant(tu))
    log_px = np.log(softmax(zx))
    np.testing.assert_allclose(float(lx), -np.mean(np.sum(tx * log_px, 1)), rtol=1e-12)
    np.testing.assert_allclose(float(lu), np.mean((softmax(zu) - tu) ** 2), rtol=1e-12)
    z = np.concatenate([zx, zu])
    mean = softmax(z).mean(0)
    np.testing.assert_allclose(float(dividemix.uniform_prior_penalty(tf.constant(z))),
                               np.sum(np.log((1 / K) / mean)) / K, rtol=1e-12)
    p = softmax(zx)
    np.testing.assert_allclose(float(dividemix.confidence_penalty(tf.constant(zx))),
                               np.mean(np.sum(p * np.log(p), 1)), rtol=1e-12)
    # ∂L_x/∂z = (softmax(z) − t) / M for targets summing to 1.
    logits = tf.Variable(zx)
    with tf.GradientTape() as tape:
        loss, _ = dividemix.mixmatch_losses(logits, tf.constant(tx), tf.constant(zu),
                                            tf.constant(tu))
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), (p - tx) / 6, rtol=1e-10)


@pytest.mark.parametrize("current, expected", [(3.0, 0.0), (5.0, 0.0), (9.0, 25 * 4 / 16),
                                               (21.0, 25.0), (40.0, 25.0)])
def test_linear_rampup_by_hand(current, expected):
    # The authors': λ_u·clip((epoch + batch/iterations − warm-up)/16, 0, 1), warm-up 5.
    assert float(dividemix.linear_rampup(current, 5, 25.0, 16)) == pytest.approx(expected)


# --- The networks ---------------------------------------------------------------------------


def test_ensemble_sums_the_logits_and_the_split_is_the_network():
    first, peer = mirrored.dense_classifier(weights(1)), mirrored.dense_classifier(weights(2))
    images = np.random.default_rng(3).integers(0, 256, (7, 2, 2, 1)).astype(np.uint8)
    x = images.reshape(7, -1) / 255
    # The authors' test(): outputs1 + outputs2 (logits), arg max.
    expected = (x @ weights(1)[0] + weights(1)[1]) + (x @ weights(2)[0] + weights(2)[1])
    out = dividemix.ensemble(first, peer)(images).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.argmax(1), expected.argmax(1))
    head, body = dividemix.split_after_first_layer(first)
    np.testing.assert_allclose(body(head(images)).numpy(), first(images).numpy(), rtol=1e-6)
    np.testing.assert_allclose(head(images).numpy().reshape(7, -1), x, rtol=1e-6)


# --- One training step against numpy ---------------------------------------------------------


def step_batch(seed, b=4):
    rng = np.random.default_rng(seed)
    batch = {}
    for name in codivide.STREAMS:
        part = {"image": rng.integers(0, 256, (b, 2, 2, 1)).astype(np.uint8),
                "image2": rng.integers(0, 256, (b, 2, 2, 1)).astype(np.uint8)}
        if name.startswith("x"):
            part.update(label=rng.integers(0, K, b).astype(np.int64),
                        index=rng.integers(0, 10, b).astype(np.int64))
        batch[name] = part
    return batch


def numpy_network_loss(params, fixed, other, x, u, w, lam, perm, ramp):
    """Network k's L_x + ramp·L_u + penalty, the authors' train() for the linear nets:
    the targets from its weights `fixed` (no gradient, torch.no_grad()), the mixed batch
    through `params`."""
    def probs(p, images):
        return softmax(images.reshape(len(images), -1) / 255 @ p[0] + p[1])

    one_hot = np.eye(K)[x["label"]]
    pu = [probs(fixed, u["image"]), probs(fixed, u["image2"]),
          probs(other, u["image"]), probs(other, u["image2"])]
    flat = [v.reshape(len(v), -1).astype(np.float64) / 255
            for v in (x["image"], x["image2"], u["image"], u["image2"])]
    mixed, targets = numpy_mixmatch(one_hot, w, probs(fixed, x["image"]),
                                    probs(fixed, x["image2"]), pu, *flat, lam, perm)
    z = mixed @ params[0] + params[1]
    n = 2 * len(x["label"])
    lx = -np.mean(np.sum(targets[:n] * np.log(softmax(z[:n])), 1))
    lu = np.mean((softmax(z[n:]) - targets[n:]) ** 2)
    penalty = np.sum(np.log((1 / K) / softmax(z).mean(0))) / K
    return lx + ramp * lu + penalty, (lx, lu, penalty)


def model(steps=5, warmup=1, lambda_u=25.0, rampup=2):
    keras.utils.set_random_seed(0)
    return dividemix.DivideMixModel(
        mirrored.dense_classifier(weights(1)), mirrored.dense_classifier(weights(2)),
        steps_per_epoch=steps, warmup_epochs=warmup, num_examples=10, lambda_u=lambda_u,
        temperature=T, alpha=ALPHA, rampup_epochs=rampup, seed=11)


@pytest.mark.parametrize("run_eagerly", [True, False])
def test_mixmatch_step_matches_numpy(run_eagerly):
    m = model()
    w_tables = [np.random.default_rng(k).uniform(size=10) for k in (4, 5)]
    for table, w in zip(m.clean_tables, w_tables):
        table.assign(w)
    m.warming_up = False
    lr = 0.1
    m.compile(optimizer=keras.optimizers.SGD(lr), run_eagerly=run_eagerly)
    m.optimizer.build(m.trainable_variables)
    step = 7  # the 8th step: epoch 1 (after one warm-up epoch of 5), 2/5 into it
    m.optimizer.iterations.assign(step)
    batch = step_batch(6)
    params = [weights(1), weights(2)]
    ramp = 25.0 * np.clip((step / 5 - 1) / 2, 0, 1)
    expected, parts = [], []
    for k in (0, 1):
        x, u = batch[f"x{k + 1}"], batch[f"u{k + 1}"]
        lam, perm = dividemix.mix_draws(dividemix.step_seed(11, step, k), 16, ALPHA)
        args = (params[k], params[1 - k], x, u, w_tables[1 - k][x["index"]], float(lam), perm.numpy(), ramp)
        loss, part = numpy_network_loss(params[k], *args)
        expected.append(loss)
        parts.append(part)
        # The update: −lr × the numpy loss' gradient by central differences.
        grads = []
        for i, p in enumerate(params[k]):
            g = np.zeros_like(p)
            for j in np.ndindex(p.shape):
                plus = [q.copy() for q in params[k]]
                minus = [q.copy() for q in params[k]]
                plus[i][j] += 1e-6
                minus[i][j] -= 1e-6
                g[j] = (numpy_network_loss(plus, *args)[0]
                        - numpy_network_loss(minus, *args)[0]) / 2e-6
            grads.append(g)
        expected_params = [p - lr * g for p, g in zip(params[k], grads)]
        parts[-1] = (part, expected_params)
    logs = m.train_step(tf.nest.map_structure(tf.constant, batch))
    np.testing.assert_allclose(float(logs["loss"]), sum(expected), rtol=1e-4)
    np.testing.assert_allclose(float(logs["lambda_u"]), ramp, rtol=1e-6)
    np.testing.assert_allclose(float(logs["lu"]), parts[0][0][1] + parts[1][0][1], rtol=1e-4)
    for net, (_, expected_params) in zip(m.networks, parts):
        for actual, desired in zip(net.get_weights(), expected_params):
            np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=1e-5)


def test_warmup_step_is_both_networks_cross_entropy():
    m = model()
    m.compile(optimizer=keras.optimizers.SGD(0.1))
    batch = step_batch(8)
    expected = 0.0
    for k, p in enumerate([weights(1), weights(2)]):
        x = batch[f"x{k + 1}"]
        probs = softmax(x["image"].reshape(4, -1) / 255 @ p[0] + p[1])
        expected += -np.mean(np.log(probs[np.arange(4), x["label"]]))
    logs = m.train_step(tf.nest.map_structure(tf.constant, batch))
    np.testing.assert_allclose(float(logs["loss"]), expected, rtol=1e-5)
    assert float(logs["lu"]) == 0.0


# --- The co-divide batches and callback -----------------------------------------------------


def test_feed_streams_come_from_the_other_networks_split():
    n, b, steps = 20, 4, 6
    feed = codivide.SplitFeed(n, b, steps, seed=0, warmup_epochs=1)
    warm = feed.rows(0)
    assert warm.shape == (4, steps * b)
    assert sorted(warm[0][:n]) == list(range(n))  # one full shuffle first
    own_1 = np.arange(n) < 15
    own_2 = np.arange(n) % 2 == 0
    got = {}
    reader = threading.Thread(target=lambda: got.update(rows=feed.rows(1)))
    reader.start()
    reader.join(0.5)
    assert reader.is_alive()  # waits for the split of its epoch
    feed.publish(1, own_1, own_2)
    reader.join(5)
    x1, u1, x2, u2 = got["rows"]
    assert own_2[x1].all() and not own_2[u1].any()
    assert own_1[x2].all() and not own_1[u2].any()
    # A labelled set of 10 cycles: each pass of 10 is a permutation of it.
    assert sorted(x1[:10]) == sorted(np.flatnonzero(own_2)) == sorted(x1[10:20])


def test_codivide_sets_the_tables_from_each_networks_losses_and_switches_mode():
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, (10, 2, 2, 1)).astype(np.uint8)
    labels = rng.integers(0, K, 10)
    m = model()
    m.compile(optimizer=keras.optimizers.SGD(0.1))
    feed = codivide.SplitFeed(10, 4, 3, seed=0, warmup_epochs=1)
    cb = dividemix.CoDivide(feed, images, labels, 4, warmup_epochs=1, p_threshold=0.5, seed=0)
    cb.set_model(m)
    cb.on_epoch_begin(0)
    assert m.warming_up
    cb.on_epoch_begin(1)
    assert not m.warming_up
    x = images.reshape(10, -1) / 255
    for k, p in enumerate([weights(1), weights(2)]):
        losses = -np.log(softmax(x @ p[0] + p[1])[np.arange(10), labels])
        norm = ((losses - losses.min()) / (losses.max() - losses.min())).reshape(-1, 1)
        gmm = GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4,
                              random_state=dividemix.gmm_seed(0, 1, k)).fit(norm)
        expected = gmm.predict_proba(norm)[:, np.argmin(gmm.means_.ravel())]
        np.testing.assert_allclose(m.clean_tables[k].numpy(), expected, rtol=1e-4, atol=1e-5)
    rows = feed.rows(1)
    own_2 = m.clean_tables[1].numpy() > 0.5
    assert np.isin(rows[0], np.flatnonzero(own_2 if own_2.any() else np.ones(10, bool))).all()


# --- Exact resume ---------------------------------------------------------------------------


def train(backup_dir, epochs, images, labels):
    m = model(steps=3, warmup=1, rampup=1)
    feed = codivide.SplitFeed(len(labels), 4, 3, seed=0, warmup_epochs=1)
    initial, _ = callbacks.Backup.latest(backup_dir)
    ds = codivide.dataset(images, labels, feed, augment="none", epochs=epochs,
                          initial_epoch=initial)  # as stages.fit: up to the fit's epochs
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    m.fit(ds, epochs=epochs, initial_epoch=initial, steps_per_epoch=3, verbose=0, shuffle=False,
          callbacks=[dividemix.CoDivide(feed, images, labels, 4, 1, seed=0),
                     callbacks.Backup(backup_dir)])
    return [v.numpy() for v in m.weights] + [v.numpy() for v in m.optimizer.variables]


@pytest.mark.e2e  # three short fits, as tests/test_stateful_resume.py
def test_resumed_training_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (10, 2, 2, 1)).astype(np.uint8)
    labels = rng.integers(0, K, 10)
    straight = train(str(tmp_path / "a"), 4, images, labels)
    train(str(tmp_path / "b"), 2, images, labels)  # "killed" after epoch 2 (1 of MixMatch)
    resumed = train(str(tmp_path / "b"), 4, images, labels)
    assert len(straight) == len(resumed)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)


# --- MirroredStrategy -----------------------------------------------------------------------

MIRRORED = r"""
from idn_tf import dividemix
from idn_tf.data import codivide

def weights(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)) * 2, rng.normal(size=3) * 0.3]

rng = np.random.default_rng(10)
images = rng.integers(0, 256, (12, 2, 2, 1)).astype(np.uint8)
labels = rng.integers(0, 3, 12)
keras.utils.set_random_seed(0)
with mirrored.scope():
    m = dividemix.DivideMixModel(dense_classifier(weights(1)), dense_classifier(weights(2)),
                                 steps_per_epoch=3, warmup_epochs=1, num_examples=12,
                                 rampup_epochs=1, seed=11)
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
feed = codivide.SplitFeed(12, 4, 3, seed=0, warmup_epochs=1)
history = m.fit(codivide.dataset(images, labels, feed, epochs=3), epochs=3, steps_per_epoch=3,
                verbose=0, callbacks=[dividemix.CoDivide(feed, images, labels, 4, 1, seed=0)])
copies = [[np.asarray(c).tolist() for c in mirrored.experimental_local_results(v.value)]
          for v in m.weights]
dump({"copies": copies, "loss": history.history["loss"],
      "tables": [t.numpy().tolist() for t in m.clean_tables]})
"""


def test_mirrored_training_keeps_the_replicas_equal(tmp_path):
    out = mirrored.run(MIRRORED, {"batch": {"image": [], "label": [], "index": []}}, tmp_path)
    assert all(np.isfinite(out["loss"]))
    for copies in out["copies"]:  # every weight, tables included: two equal copies
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])
    assert any(np.ptp(t) > 0 for t in out["tables"])  # the GMM split was computed


# --- Flags and flagfiles --------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("dividemix_lambda_u", -1.0), ("dividemix_p_threshold", 1.0), ("dividemix_p_threshold", 0.0),
    ("dividemix_temperature", 0.0), ("dividemix_alpha", 0.0), ("dividemix_warmup_epochs", -1),
    ("dividemix_rampup_epochs", -1)])
def test_bad_dividemix_flags_name_the_flag(field, value):
    from idn_tf import config as config_lib
    with pytest.raises(config_lib.ConfigError, match=f"--{field}"):
        config_lib.resolve({"method": "dividemix", field: value})


def test_warmup_and_rampup_scale_the_authors_to_the_run():
    from idn_tf import config as config_lib
    from idn_tf.methods import dividemix as method
    digits = config_lib.resolve({"method": "dividemix"})  # 40 epochs: 10/300 and 16/300
    assert (method.METHOD.warmup_epochs(digits), method.METHOD.rampup_epochs(digits)) == (1, 2)
    cifar = config_lib.resolve({"method": "dividemix", "epochs": 300})
    assert (method.METHOD.warmup_epochs(cifar), method.METHOD.rampup_epochs(cifar)) == (10, 16)
    with pytest.raises(config_lib.ConfigError, match="--dividemix_warmup_epochs"):
        config_lib.resolve({"method": "dividemix", "epochs": 5, "dividemix_warmup_epochs": 5})


@pytest.mark.parametrize("name, warmup, lambda_u, penalty", [
    ("method_dividemix.cfg", 10, 25.0, False),
    ("method_dividemix_cifar100.cfg", 30, 150.0, False),
    ("method_dividemix_asym.cfg", 10, 25.0, True)])  # the authors' asym warm-up penalty
def test_dividemix_flagfiles_set_the_authors_settings(name, warmup, lambda_u, penalty):
    from test_config import ROOT, _config_from_flagfile
    cfg = _config_from_flagfile("table2_cifar10_ccn_0.4.cfg", f"--flagfile=flags/{name}")
    assert cfg.arch == "preact_resnet18"  # the paper's backbone
    assert (cfg.method, cfg.epochs, cfg.lr, tuple(cfg.lr_decay_epochs), cfg.batch_size,
            cfg.weight_decay, cfg.momentum) == ("dividemix", 300, 0.02, (150,), 64, 5e-4, 0.9)
    assert (cfg.dividemix_warmup_epochs, cfg.dividemix_rampup_epochs, cfg.dividemix_lambda_u,
            cfg.dividemix_p_threshold, cfg.dividemix_temperature, cfg.dividemix_alpha) == (
        warmup, 16, lambda_u, 0.5, 0.5, 4.0)
    assert cfg.dividemix_confidence_penalty is penalty
    assert (cfg.noise, cfg.noise_rate) == ("ccn", 0.4)  # the row's data and noise are kept
    with open(os.path.join(ROOT, "flags", name)) as f:
        header = "".join(line for line in f if line.startswith("#"))
    assert f"--flagfile=flags/{name}" in header and "Expected test accuracy" in header
