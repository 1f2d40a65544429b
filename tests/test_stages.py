"""How a stage trains: the classifier and its initial weights, the optimiser's schedule,
and the predictions stages compute from a classifier (ψ, q, Forward's T), each checked
against numpy on the classifier's own logits."""

import dataclasses

import keras
import numpy as np
import pytest

from idn_tf import config as config_lib, stages, transition
from idn_tf.data import sources, views


@pytest.fixture(scope="module")
def setting():
    cfg = config_lib.Config(run_dir="unused", verbose=0)
    data = views.from_config(cfg, sources.load("digits"))
    return cfg, data


def _numpy_probs(classifier, images):
    logits = np.asarray(classifier(images, training=False), np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_the_same_seed_gives_the_same_initial_weights_and_another_seed_others(setting):
    cfg, data = setting
    with stages.model_scope(cfg):
        a = stages.new_classifier(cfg, data)
    with stages.model_scope(cfg):
        b = stages.new_classifier(cfg, data)
    c = stages.new_classifier(cfg, data, seed=cfg.seed + 1)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))
    assert a.output_shape == (None, data.num_classes)


def test_psi_is_the_softmax_of_the_observed_label(setting):
    cfg, data = setting
    classifier = stages.new_classifier(cfg, data)
    images, labels = data.train.images[:50], data.train.labels[:50]
    psi = stages.estimate_psi(classifier, images, labels, batch_size=16)
    expected = _numpy_probs(classifier, images)[np.arange(50), labels]
    np.testing.assert_allclose(psi, expected, rtol=1e-5)
    assert psi.dtype == np.float32


def test_train_mode_psi_equals_eval_mode_without_batch_norm_or_augmentation(setting):
    # The digits recipe: a small CNN without batch normalisation or dropout, no augmentation:
    # --psi_mode=train and eval give the same ψ (the measured options differ only elsewhere).
    cfg, data = setting
    classifier = stages.new_classifier(cfg, data)
    labels = data.train.labels
    train = stages.train_mode_psi(cfg, data, labels, classifier)
    np.testing.assert_allclose(train, stages.estimate_psi(classifier, data, labels, 64),
                               rtol=1e-5, atol=1e-7)


def test_train_mode_psi_uses_each_batchs_statistics_and_leaves_the_classifier_as_it_was():
    rng = np.random.default_rng(0)
    n, k, batch = 20, 3, 8
    images = rng.integers(0, 256, (n, 2, 2, 1)).astype(np.uint8)
    labels = rng.integers(0, k, n).astype(np.int64)
    split = sources.Split(images, labels, np.full(n, -1, np.int64))
    data = views.ArrayData(sources.Dataset("npz", split, split, k, ("a", "b", "c")))
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(4)
    norm = keras.layers.BatchNormalization(epsilon=1e-3)
    head = keras.layers.Dense(k)
    classifier = keras.Model(inputs, head(norm(dense(x))))
    norm.moving_mean.assign(rng.normal(size=4).astype(np.float32))  # unlike any batch's
    before = [w.numpy() for w in classifier.weights]
    cfg = config_lib.Config(run_dir="unused", batch_size=batch, seed=3)
    psi = stages.train_mode_psi(cfg, data, labels, classifier)
    for a, b in zip(before, classifier.weights):
        np.testing.assert_array_equal(a, b.numpy())
    # By hand, per batch of the same epoch: z = x W + b, normalised by the batch's own mean
    # and (biased) variance, γ = 1, β = 0, then the head and the softmax of the label.
    w1, b1 = (np.asarray(v, np.float64) for v in dense.get_weights())
    w2, b2 = (np.asarray(v, np.float64) for v in head.get_weights())
    expected = np.full(n, np.nan)
    for element in data.train_dataset(labels, batch, cfg.seed, epochs=1):
        ids = element["index"].numpy()
        z = images[ids].reshape(len(ids), -1) / 255.0 @ w1 + b1
        z = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-3)
        logits = z @ w2 + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        expected[ids] = (p / p.sum(1, keepdims=True))[np.arange(len(ids)), labels[ids]]
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(psi, expected, rtol=1e-4)
    eval_psi = stages.estimate_psi(classifier, images, labels, batch_size=batch)
    assert np.abs(eval_psi - psi).max() > 1e-2  # the moving statistics would give others


def test_psi_is_floored_at_the_smallest_normal_float32():
    classifier = keras.Sequential([keras.Input((1, 1, 1), dtype="uint8"),
                                   keras.layers.Flatten(),
                                   keras.layers.Lambda(lambda x: keras.ops.cast(x, "float32")
                                                       * keras.ops.convert_to_tensor([[500.0, -500.0]]))])
    psi = stages.estimate_psi(classifier, np.full((2, 1, 1, 1), 1, np.uint8), np.array([1, 1]), 2)
    assert (psi == np.finfo(np.float32).tiny).all()


@pytest.mark.parametrize("numerics", ["authors", "literal"])
def test_posterior_table_is_eq_8_on_the_classifiers_probabilities(setting, numerics):
    cfg, data = setting
    classifier = stages.new_classifier(cfg, data)
    n = 40
    images, labels = data.train.images[:n], data.train.labels[:n]
    rng = np.random.default_rng(0)
    eta = rng.uniform(0, 1, n).astype(np.float32)
    eta[:5] = 0.0  # clean examples: q is the observed label exactly
    psi = rng.uniform(0.05, 1, n).astype(np.float32)
    q = stages.posterior_table(classifier, images, labels, eta, psi, batch_size=16,
                               numerics=numerics)
    p = _numpy_probs(classifier, images)
    onehot = np.eye(data.num_classes)[labels]
    likelihood = (1 - eta[:, None]) * onehot + (eta * psi)[:, None]
    if numerics == "authors":  # their clamp(min=1e-5)
        likelihood = np.maximum(likelihood, 1e-5)
    unnormalised = p * likelihood
    np.testing.assert_allclose(q, unnormalised / unnormalised.sum(1, keepdims=True), atol=1e-5)
    if numerics == "literal":
        np.testing.assert_array_equal(q[:5], onehot[:5])
    else:  # one-hot up to the floor: the other classes keep at most ~1e-5 / p_observed
        np.testing.assert_allclose(q[:5], onehot[:5], atol=1e-5 / p[np.arange(5), labels[:5]].min())


def test_estimate_transition_is_the_estimator_on_the_classifiers_probabilities(setting):
    cfg, data = setting
    classifier = stages.new_classifier(cfg, data)
    images = data.train.images[:200]
    got = stages.estimate_transition(classifier, images, 64, percentile=97.0)
    expected = transition.estimate_transition_matrix(_numpy_probs(classifier, images), 97.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.dtype == np.float32


def test_learning_rate_is_constant_without_decay_epochs_inside_the_run():
    cfg = config_lib.Config(run_dir="unused", epochs=5, lr=0.2, lr_decay_epochs=(5, 9))
    assert stages.learning_rate(cfg, steps_per_epoch=4) == 0.2
    decayed = dataclasses.replace(cfg, lr_decay_epochs=(2,), lr_decay_factor=0.5)
    schedule = stages.learning_rate(decayed, steps_per_epoch=4)
    # Epoch 1 and 2 (steps 0..7) at 0.2; the first step of epoch 3 at 0.1.
    assert [float(schedule(s)) for s in (0, 7, 8, 19)] == pytest.approx([0.2, 0.2, 0.1, 0.1])


def test_finetune_config_is_its_own_epochs_at_a_constant_lr():
    cfg = config_lib.Config(run_dir="unused", dataset="clothing1m", data_dir="unused",
                            noise="none", finetune_clean_epochs=3, finetune_lr=1e-3)
    tuned = stages.finetune_config(cfg)
    assert (tuned.epochs, tuned.lr, tuned.lr_decay_epochs) == (3, 1e-3, ())
    assert tuned.batch_size == cfg.batch_size and tuned.seed == cfg.seed


def test_out_of_sample_places_each_folds_rows_and_averages_the_others():
    rng = np.random.default_rng(0)
    n, m, k, folds = 23, 7, 4, 3
    parts = np.array_split(rng.permutation(n), folds)
    held = [rng.dirichlet(np.ones(k), len(rows)).astype(np.float32) for rows in parts]
    others = [rng.dirichlet(np.ones(k), m).astype(np.float32) for _ in range(folds)]
    got = stages.out_of_sample(parts, held, others)
    expected = np.zeros((n + m, k))
    for rows, probs in zip(parts, held):  # a loop over every fold's rows
        for j, row in enumerate(rows):
            expected[row] = probs[j]
    for j in range(m):
        expected[n + j] = sum(o[j].astype(np.float64) for o in others) / folds
    assert got.shape == (n + m, k) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    no_others = stages.out_of_sample(parts, held, [np.zeros((0, k), np.float32)] * folds)
    np.testing.assert_array_equal(no_others, got[:n])


def test_fold_probs_predicts_the_audited_rows_with_every_fold_classifier(setting, monkeypatch):
    # Each fold's "training" is a fresh classifier of seed k (no fit): its rows' and the
    # validation rows' probabilities are then known here, from numpy on its logits.
    cfg, full = setting
    labels = full.train.labels
    held = np.arange(0, len(labels), 10)  # 144 validation rows
    data, train_labels = full.hold_out(held, labels)
    trained_on, classifiers = {}, {}

    def untrained(config, view, fit_labels, stage):
        k = int(stage.rsplit("fold", 1)[1])
        trained_on[k] = view.rows.copy()
        classifiers[k] = stages.new_classifier(config, view, seed=k)  # the fold's statistics
        return classifiers[k], None

    monkeypatch.setattr(stages, "train_cross_entropy", untrained)
    others = data.audited_splits()
    assert [(s.split, len(s)) for s in others] == [("validation", len(held))]
    probs = stages.fold_probs(cfg, data, train_labels, 3, "audit", others)
    from idn_tf.data import holdout
    parts = holdout.fold_rows(train_labels, 3, cfg.seed)
    n = len(train_labels)
    assert probs.shape == (n + len(held), data.num_classes)
    mean = np.zeros((len(held), data.num_classes))
    for k, rows in enumerate(parts, 1):
        classifier = classifiers[k]
        assert not set(trained_on[k]) & (set(data.rows[rows]) | set(held))  # saw neither
        np.testing.assert_allclose(probs[rows], _numpy_probs(classifier, data.train.images[rows]),
                                   rtol=1e-5, atol=1e-7)
        mean += _numpy_probs(classifier, full.train.images[held]) / 3
    np.testing.assert_allclose(probs[n:], mean, rtol=1e-5, atol=1e-7)
