"""The method's math (docs/method.md §2): posterior of the true label and the η step.

Pure TensorFlow functions of tensors: no Keras state, no I/O. Shapes use B for
the batch and K for the number of classes. Equation numbers are the paper's
(Wang et al., AAAI 2021).

Noise model (Eq. 3): P(ỹ_i | y_i, x_i) = (1 − η_i)·1{y_i = ỹ_i} + η_i·ψ_i, where
η_i is the confusing probability of example i and ψ_i = P(ỹ_i | x_i).

Numerics (`NUMERICS`, docs/method.md §2): "authors" floors the likelihood of Eq. 3 at
`FLOOR` before its log and divides the Eq. 11 step by max(η_i, `FLOOR`), as the authors'
released code does; "literal" takes the equations as printed (no floor, the step's
denominator η_i + ε), under which η_i = 0 is absorbing (docs/method.md §7.1).
"""

import tensorflow as tf

ETA_RULES = ("paper", "exact")
NUMERICS = ("authors", "literal")
FLOOR = 1e-5  # the authors' clamp(min=1e-5) on the likelihood and on η in the step


def _check_numerics(numerics):
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")


def _log_noise_likelihood(labels, eta, psi, num_classes, dtype, numerics="authors"):
    """log[(1 − η_i)·ỹ_ij + η_i·ψ_i] for every class j, shape [B, K] (Eq. 3/8).

    The observed class gets log(1 − η + ηψ), every other class log(ηψ). "literal":
    that is −inf when η_i = 0, and those classes get posterior mass exactly 0;
    "authors": each likelihood is floored at FLOOR first, so they keep p_ij·FLOOR.
    """
    _check_numerics(numerics)
    onehot = tf.one_hot(labels, num_classes, dtype=dtype)
    eta = tf.cast(eta, dtype)[:, None]
    psi = tf.cast(psi, dtype)[:, None]
    likelihood = (1.0 - eta) * onehot + eta * psi
    if numerics == "authors":
        likelihood = tf.maximum(likelihood, tf.constant(FLOOR, dtype))
    return tf.math.log(likelihood)


def posterior_from_log_probs(log_probs, labels, eta, psi, numerics="authors"):
    """Eq. 8 from log p (e.g. `tf.nn.log_softmax(logits)`); see `true_label_posterior`.

    Taking log p directly lets the model skip the exp/log round trip, so a
    peaked softmax cannot underflow to p = 0 on the observed class.
    """
    log_probs = tf.convert_to_tensor(log_probs)
    num_classes = tf.shape(log_probs)[-1]
    logits = log_probs + _log_noise_likelihood(
        labels, eta, psi, num_classes, log_probs.dtype, numerics)
    q = tf.exp(logits - tf.reduce_logsumexp(logits, axis=-1, keepdims=True))
    if numerics == "authors":  # every likelihood ≥ FLOOR: q is defined whatever η is
        return tf.stop_gradient(q)
    # Literal: where η_i = 0 the log-space result is already one-hot; the select makes
    # it exact even if p underflowed on the observed class (0/0 otherwise).
    onehot = tf.one_hot(labels, num_classes, dtype=log_probs.dtype)
    clean = tf.equal(tf.cast(eta, log_probs.dtype), 0.0)[:, None]
    return tf.stop_gradient(tf.where(clean, onehot, q))


def true_label_posterior(probs, labels, eta, psi, numerics="authors"):
    """Posterior of the true label, q_i = P(y_i | x_i, ỹ_i) (Eq. 7/8).

        q_ij ∝ p_ij · [(1 − η_i)·ỹ_ij + η_i·ψ_i]

    computed in log space (log p + log[…], then log-sum-exp normalisation).
    A slow loop would compute, for each i and j,
    ``u[i, j] = probs[i, j] * ((1 - eta[i]) * (j == labels[i]) + eta[i] * psi[i])``
    and then ``q[i] = u[i] / u[i].sum()``.

    Args:
      probs: float [B, K], softmax outputs p_i of the classifier.
      labels: int [B], observed labels ỹ_i.
      eta: float [B], confusing probabilities η_i in [0, 1].
      psi: float [B], ψ_i = P(ỹ_i | x_i) from stage 1.
      numerics: "authors" (each likelihood floored at FLOOR) or "literal".

    Returns:
      q: float [B, K]; rows sum to 1. Where η_i = 0: exactly one-hot(labels) under
      "literal"; under "authors" q_ij ∝ p_ij·FLOOR for j ≠ ỹ_i, one-hot up to the floor.
      A training target: no gradient flows through it.
    """
    probs = tf.convert_to_tensor(probs)
    return posterior_from_log_probs(tf.math.log(probs), labels, eta, psi, numerics)


def eta_gradient(q, labels, eta, psi, rule="paper", eps=1e-4, numerics="authors"):
    """Ascent direction for η_i of Eq. 9, J(η_i) = Σ_j q_ij log[(1 − η_i)ỹ_ij + η_i ψ_i].

    rule="paper" (Eq. 11): [(1 − q_ik) + q_ik·η_i·(ψ_i − 1)] / d_i, k the observed
      class; equal to the true gradient only when ψ_i = 1.
    rule="exact": dJ/dη_i = (1 − q_ik)/d_i − q_ik(1 − ψ_i)/(1 − η_i(1 − ψ_i)).
    The denominator d_i is max(η_i, FLOOR) under numerics="authors" (their code), so
    an example at η_i = 0 still gets the step (1 − q_ik)/FLOOR ≈ (1 − p_ik)/p_ik; under
    "literal" it is η_i + ε (paper rule), or η_i with the first term taken as 0 at
    η_i = 0 (exact rule), where the one-hot q makes both steps 0.

    Args:
      q: float [B, K] posterior (Eq. 8); labels: int [B]; eta, psi: float [B].

    Returns:
      float [B], the ascent direction per example.
    """
    _check_numerics(numerics)
    q = tf.convert_to_tensor(q)
    dtype = q.dtype
    eta = tf.cast(eta, dtype)
    psi = tf.cast(psi, dtype)
    onehot = tf.one_hot(labels, tf.shape(q)[-1], dtype=dtype)
    q_k = tf.reduce_sum(q * onehot, axis=-1)
    # 1 − q_ik summed over the other classes: where q_ik rounds to 1 the difference would
    # keep only rounding error, which the floored denominator (1e-5) would magnify.
    doubt = tf.reduce_sum(q * (1.0 - onehot), axis=-1)
    floored = tf.maximum(eta, tf.constant(FLOOR, dtype))
    if rule == "paper":
        numerator = doubt + q_k * eta * (psi - 1.0)
        return numerator / (floored if numerics == "authors" else eta + eps)
    if rule == "exact":
        first = (doubt / floored if numerics == "authors"
                 else tf.math.divide_no_nan(doubt, eta))
        return first - tf.math.divide_no_nan(q_k * (1.0 - psi), 1.0 - eta * (1.0 - psi))
    raise ValueError(f"rule must be one of {ETA_RULES}, got {rule!r}")


def eta_step(q, labels, eta, psi, eta_lr, rule="paper", eps=1e-4, eta_min=0.0,
             numerics="authors"):
    """One projected gradient-ascent step on η (Eq. 11 + projection Eq. 12).

        η_i ← clip(η_i + α₁·g_i, η_min, 1)

    with g_i from `eta_gradient` and α₁ = eta_lr. The paper projects onto
    [0, 1] (eta_min = 0); under numerics="literal" η_i = 0 is then absorbing
    (docs/method.md §7.1), which eta_min > 0 or the authors' numerics avoid.

    Args:
      q: float [B, K]; labels: int [B]; eta, psi: float [B]; eta_lr: α₁ > 0.

    Returns:
      float [B], the new η of the batch's examples.
    """
    eta = tf.convert_to_tensor(eta)
    step = eta_lr * eta_gradient(q, labels, eta, psi, rule=rule, eps=eps, numerics=numerics)
    new_eta = tf.cast(eta, step.dtype) + step
    return tf.clip_by_value(new_eta, tf.constant(eta_min, step.dtype), 1.0)


def eta_objective(q, labels, eta, psi, numerics="literal"):
    """Eq. 9 per example, J_i = Σ_j q_ij log[(1 − η_i)ỹ_ij + η_i ψ_i], shape [B].

    Terms with q_ij = 0 contribute 0 (0·log 0 := 0). Used by tests and
    monitoring; the training step uses the closed-form `eta_gradient`.
    """
    q = tf.convert_to_tensor(q)
    log_lik = _log_noise_likelihood(labels, eta, psi, tf.shape(q)[-1], q.dtype, numerics)
    return tf.reduce_sum(tf.math.multiply_no_nan(log_lik, q), axis=-1)


def ensemble_update(ensemble, probs, beta):
    """One visit's exponential moving average of an example's predictions:
    e ← β·e + (1 − β)·p (rows [B, K]; β in [0, 1); no gradient to `probs`).

    The temporal ensemble of ELR's targets (Liu et al., NeurIPS 2020) and of the method's
    --q_ensemble (docs/method.md §7.6). From e = 0, v visits give Σ_k e_k = 1 − β^v: a
    scale Eq. 8 does not see (q is normalised over the classes), so the first visits need
    no bias correction there.
    """
    probs = tf.stop_gradient(tf.convert_to_tensor(probs))
    return beta * tf.cast(ensemble, probs.dtype) + (1.0 - beta) * probs
