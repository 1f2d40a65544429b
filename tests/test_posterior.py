"""Checks of idn_tf.posterior against numpy loops, hand-worked cases and autodiff."""

import numpy as np
import pytest
import tensorflow as tf

from idn_tf import posterior


def random_batch(seed, batch=7, classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, classes)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, classes, size=batch)
    eta = rng.uniform(0.01, 0.99, size=batch)
    psi = rng.uniform(0.01, 0.99, size=batch)
    return probs, labels, eta, psi


def posterior_loop(probs, labels, eta, psi):
    """Eq. 8 the slow way, one example and one class at a time."""
    q = np.zeros_like(probs)
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            noise = (1 - eta[i]) * (j == labels[i]) + eta[i] * psi[i]
            q[i, j] = probs[i, j] * noise
        q[i] /= q[i].sum()
    return q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posterior_matches_numpy_loop(seed):
    probs, labels, eta, psi = random_batch(seed)
    q = posterior.true_label_posterior(probs, labels, eta, psi).numpy()
    np.testing.assert_allclose(q, posterior_loop(probs, labels, eta, psi), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.sum(axis=1), np.ones(len(q)), rtol=1e-12)


def test_posterior_hand_worked():
    # p = (.5, .3, .2), observed class 0, η = .5, ψ = .4:
    # weights (1 − η) + ηψ = .7 on class 0 and ηψ = .2 elsewhere;
    # p ⊙ w = (.35, .06, .04), sum .45 -> q = (7/9, 2/15, 4/45).
    q = posterior.true_label_posterior(
        np.array([[0.5, 0.3, 0.2]]), np.array([0]), np.array([0.5]), np.array([0.4]))
    np.testing.assert_allclose(q.numpy(), [[7 / 9, 2 / 15, 4 / 45]], rtol=1e-12)


def test_posterior_eta_one_is_classifier():
    # η = 1: every class has weight ψ, so q = p whatever the observed label.
    probs, labels, _, psi = random_batch(3)
    q = posterior.true_label_posterior(probs, labels, np.ones(len(labels)), psi)
    np.testing.assert_allclose(q.numpy(), probs, rtol=1e-10)


def test_literal_posterior_eta_zero_is_exactly_one_hot():
    probs, labels, eta, psi = random_batch(4, batch=6, classes=4)
    eta[::2] = 0.0
    # A peaked classifier that all but excludes the observed class, and one
    # that gives it probability exactly 0.
    probs[0] = [1e-30, 1.0 - 2e-30, 1e-30, 0.0]
    labels[0] = 0
    probs[2] = [0.0, 0.5, 0.5, 0.0]
    labels[2] = 3
    for dtype in (np.float32, np.float64):
        q = posterior.true_label_posterior(
            probs.astype(dtype), labels, eta.astype(dtype), psi.astype(dtype),
            numerics="literal").numpy()
        np.testing.assert_array_equal(q[::2], np.eye(4, dtype=dtype)[labels[::2]])
        assert np.all(np.isfinite(q))


def test_posterior_log_space_survives_peaked_logits():
    # log p of -1e4 underflows exp() in float32; Eq. 8 in log space stays finite
    # and puts the mass where p ⊙ noise weights put it.
    log_probs = tf.constant([[0.0, -1e4, -1e4]], tf.float32)
    q = posterior.posterior_from_log_probs(log_probs, [1], [0.3], [0.5]).numpy()
    np.testing.assert_allclose(q, [[1.0, 0.0, 0.0]], atol=1e-7)
    q = posterior.posterior_from_log_probs(
        tf.constant([[-1e4, -1e4 - np.log(2.0), -3e4]], tf.float64), [1], [0.5], [0.5]).numpy()
    # Both first classes tied after the noise weights: p1/p0 = 1/2, w1/w0 = .75/.25 = 3.
    np.testing.assert_allclose(q, [[0.4, 0.6, 0.0]], rtol=1e-9, atol=1e-12)


def test_posterior_has_no_gradient():
    probs, labels, eta, psi = random_batch(5)
    probs = tf.Variable(probs)
    with tf.GradientTape(persistent=True) as tape:
        q = posterior.true_label_posterior(probs, labels, eta, psi)
        total = tf.reduce_sum(q * tf.math.log(probs))
    assert tape.gradient(q, probs) is None
    # Gradient of Σ q log p flows through log p only: ∂/∂p_ij = q_ij / p_ij.
    np.testing.assert_allclose(tape.gradient(total, probs).numpy(), q.numpy() / probs.numpy(), rtol=1e-10)


def eq9_objective(q, labels, eta, psi):
    """Eq. 9 written out independently of the library: Σ_j q_ij log[(1−η)ỹ_ij + ηψ_i]."""
    onehot = tf.one_hot(labels, q.shape[1], dtype=tf.float64)
    return tf.reduce_sum(q * tf.math.log((1.0 - eta[:, None]) * onehot + eta[:, None] * psi[:, None]), axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_rule_is_autodiff_of_eq9(seed):
    probs, labels, eta, psi = random_batch(seed, batch=9)
    q = posterior.true_label_posterior(probs, labels, eta, psi)
    eta_var = tf.Variable(eta)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(eq9_objective(q, labels, eta_var, tf.constant(psi)))
    grad = tape.gradient(total, eta_var).numpy()
    np.testing.assert_allclose(
        posterior.eta_gradient(q, labels, eta, psi, rule="exact").numpy(), grad, rtol=1e-9)
    alpha = 0.01  # small enough that no entry is clipped
    new_eta = posterior.eta_step(q, labels, eta, psi, alpha, rule="exact").numpy()
    np.testing.assert_allclose(new_eta, eta + alpha * grad, rtol=1e-12)
    np.testing.assert_allclose(
        posterior.eta_objective(q, labels, eta, psi).numpy(),
        eq9_objective(q, labels, tf.constant(eta), tf.constant(psi)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_rule_is_eq11(seed):
    probs, labels, eta, psi = random_batch(seed, batch=9)
    q = posterior.true_label_posterior(probs, labels, eta, psi).numpy()
    alpha, eps = 0.05, 1e-4
    expected = np.empty_like(eta)
    for i in range(len(eta)):  # Eq. 11 via its vector form [1 + (ψη − η − 1)ỹ]ᵀq / (η + ε)
        onehot = np.eye(q.shape[1])[labels[i]]
        direction = (np.ones_like(onehot) + (psi[i] * eta[i] - eta[i] - 1) * onehot) @ q[i]
        expected[i] = np.clip(eta[i] + alpha * direction / (eta[i] + eps), 0.0, 1.0)
    actual = posterior.eta_step(q, labels, eta, psi, alpha, rule="paper", eps=eps,
                                numerics="literal").numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_paper_rule_equals_exact_gradient_when_psi_is_one():
    probs, labels, eta, _ = random_batch(6)
    psi = np.ones_like(eta)
    q = posterior.true_label_posterior(probs, labels, eta, psi)
    for numerics in posterior.NUMERICS:  # η ≥ 0.01 here: the authors' floor does not bind
        paper = posterior.eta_gradient(q, labels, eta, psi, rule="paper", eps=0.0,
                                       numerics=numerics)
        exact = posterior.eta_gradient(q, labels, eta, psi, rule="exact", numerics=numerics)
        np.testing.assert_allclose(paper.numpy(), exact.numpy(), rtol=1e-12)


@pytest.mark.parametrize("rule", ["paper", "exact"])
def test_projection_clips_to_unit_interval(rule):
    # Example 0: q is one-hot on the observed class and ψ < 1, so the step is
    # negative (−q_k(1−ψ)·… ) and a huge α₁ drives η far below 0.
    # Example 1: the observed class has tiny posterior, so the step is large and positive.
    q = np.array([[1.0, 0.0, 0.0], [1e-3, 0.999, 0.0]])
    labels = np.array([0, 0])
    eta = np.array([0.3, 0.3])
    psi = np.array([0.2, 0.2])
    new_eta = posterior.eta_step(q, labels, eta, psi, eta_lr=100.0, rule=rule).numpy()
    np.testing.assert_array_equal(new_eta, [0.0, 1.0])
    new_eta = posterior.eta_step(q, labels, eta, psi, eta_lr=100.0, rule=rule, eta_min=1e-3).numpy()
    np.testing.assert_array_equal(new_eta, [1e-3, 1.0])


@pytest.mark.parametrize("rule", ["paper", "exact"])
def test_eta_zero_is_absorbing_under_the_literal_equations(rule):
    probs, labels, eta, psi = random_batch(7)
    eta[:] = 0.0
    q = posterior.true_label_posterior(probs, labels, eta, psi, numerics="literal")
    new_eta = posterior.eta_step(q, labels, eta, psi, eta_lr=0.7, rule=rule,
                                 numerics="literal").numpy()
    np.testing.assert_array_equal(new_eta, np.zeros_like(eta))


# The authors' released code (main.py of QizhouWang/instance-dependent-label-noise),
# transcribed to numpy from its two formulas, one example at a time:
#   log_lik = log(clamp(onehot(ỹ)·(1 − η) + ψη, min=1e-5))
#   q = normalise(exp(log_lik + log_softmax(logits)))
#   η ← clamp(η + α₁·Σ_j q_j(1 + (ψη − η − 1)·onehot_j) / clamp(η, min=1e-5), 0, 1)

def authors_step_loop(logits, labels, eta, psi, alpha):
    q = np.zeros_like(logits)
    new_eta = np.zeros_like(eta)
    for i in range(len(labels)):
        onehot = np.eye(logits.shape[1])[labels[i]]
        log_lik = np.log(np.maximum(onehot * (1 - eta[i]) + psi[i] * eta[i], 1e-5))
        log_softmax = logits[i] - np.log(np.sum(np.exp(logits[i])))
        joint = np.exp(log_lik + log_softmax)
        q[i] = joint / joint.sum()
        disparity = np.sum(q[i] * (1 + (psi[i] * eta[i] - eta[i] - 1) * onehot))
        new_eta[i] = np.clip(eta[i] + alpha * disparity / max(eta[i], 1e-5), 0.0, 1.0)
    return q, new_eta


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_default_matches_the_authors_code(seed):
    rng = np.random.default_rng(seed)
    batch, classes = 64, 10
    logits = (rng.normal(size=(batch, classes)) * 4.0).astype(np.float32)
    labels = rng.integers(0, classes, size=batch)
    # η across the floor's range: exactly 0, below and around 1e-5, and ordinary values
    eta = rng.choice([0.0, 3e-6, 1e-5, 2e-4, 0.01, 0.3, 0.9, 1.0], size=batch).astype(np.float32)
    psi = rng.uniform(1e-4, 1.0, size=batch).astype(np.float32)
    expected_q, expected_eta = authors_step_loop(logits.astype(np.float64), labels,
                                                 eta.astype(np.float64), psi.astype(np.float64),
                                                 0.5)
    log_probs = tf.nn.log_softmax(logits)
    q = posterior.posterior_from_log_probs(log_probs, labels, eta, psi)
    np.testing.assert_allclose(q.numpy(), expected_q, rtol=1e-6, atol=1e-6)
    new_eta = posterior.eta_step(q, labels, eta, psi, eta_lr=0.5).numpy()
    np.testing.assert_allclose(new_eta, expected_eta, rtol=1e-6, atol=1e-6)


def test_eta_zero_is_left_under_the_default_and_kept_under_the_literal_equations():
    # An example at η = 0 whose classifier doubts its label: p = (.2, .8), observed 0, ψ .5.
    # Authors: q_1 = .8e-5 / (.2 + .8e-5) and the step is α₁(1 − q_0)/1e-5 = α₁·4/(1 + 4e-5),
    # so with α₁ = 0.01 η leaves 0 for 0.04 (to 6 digits). Literal: q one-hot, step 0.
    log_probs = np.log([[0.2, 0.8]])
    labels, eta, psi = [0], [0.0], [0.5]
    q = posterior.posterior_from_log_probs(log_probs, labels, eta, psi).numpy()
    np.testing.assert_allclose(q, [[0.2 / (0.2 + 0.8e-5), 0.8e-5 / (0.2 + 0.8e-5)]], rtol=1e-9)
    new_eta = posterior.eta_step(q, labels, eta, psi, eta_lr=0.01).numpy()
    np.testing.assert_allclose(new_eta, [0.04 / (1 + 4e-5)], rtol=1e-6)
    literal_q = posterior.posterior_from_log_probs(log_probs, labels, eta, psi,
                                                   numerics="literal").numpy()
    np.testing.assert_array_equal(literal_q, [[1.0, 0.0]])
    for rule in posterior.ETA_RULES:
        literal = posterior.eta_step(literal_q, labels, eta, psi, eta_lr=0.01, rule=rule,
                                     numerics="literal").numpy()
        np.testing.assert_array_equal(literal, [0.0])


def test_unknown_numerics_raises():
    with pytest.raises(ValueError, match="numerics"):
        posterior.eta_gradient(np.eye(2), [0, 1], [0.1, 0.1], [0.5, 0.5], numerics="torch")


def test_unknown_rule_raises():
    with pytest.raises(ValueError, match="rule"):
        posterior.eta_gradient(np.eye(2), [0, 1], [0.1, 0.1], [0.5, 0.5], rule="adam")


def test_the_method_lists_the_same_rules():
    from idn_tf.methods import idn as idn_method
    assert idn_method.ETA_RULES == posterior.ETA_RULES
    assert idn_method.ETA_NUMERICS == posterior.NUMERICS
