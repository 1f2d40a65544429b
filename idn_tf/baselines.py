"""The loss-correction baselines of the paper's tables (docs/baselines.md), as Keras models.

Each trains the wrapped classifier as `model.CrossEntropyModel` does (same data,
optimiser, coupled weight decay, metrics and distribution), with its own loss:

- `ForwardModel` (Patrini et al., CVPR 2017, "forward correction"): the
  cross-entropy of the observed label under softmax(h(x))·T, for a fixed
  row-stochastic T (T_ij = P(ỹ = j | y = i)); `transition.estimate_transition_matrix`
  is the paper's estimator of T from a cross-entropy model's predictions.
- `BootstrapModel` (Reed et al., ICLR 2015): −Σ_k t_k log p_k with the targets
  t = β·ỹ + (1−β)·p ("soft") or β·ỹ + (1−β)·onehot(argmax p) ("hard"), p the
  model's own prediction. In the soft loss p keeps its gradient inside the target,
  as in the paper (where the soft loss is β·CE plus (1−β) times the entropy of p,
  "minimum-entropy regularisation"): without it the soft loss would be plain
  cross-entropy at β times the learning rate. argmax has no gradient.
- `DMIModel` (Xu et al., NeurIPS 2019): −log|det(PᵀỸ / B)| over each batch
  (P the softmax outputs [B, K], Ỹ the one-hot observed labels), trained from a
  cross-entropy model ("warm-up").

The inference model is the classifier alone, as for the method.
"""

import keras
import numpy as np
import tensorflow as tf

from idn_tf import model

# Floor on the corrected probability of the observed label: log(0) would be -inf
# (Patrini's Keras code clips softmax(h) to [1e-7, 1 − 1e-7] before the product instead;
# the two differ only where T has a zero column).
FORWARD_FLOOR = 1e-7


def forward_loss(log_probs, labels, transition):
    """−log (softmax · T)[ỹ] per example [B]: forward-corrected cross-entropy."""
    noisy = tf.matmul(tf.exp(log_probs), tf.cast(transition, log_probs.dtype))
    picked = tf.gather(noisy, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    return -tf.math.log(tf.maximum(picked, tf.constant(FORWARD_FLOOR, log_probs.dtype)))


def bootstrap_targets(log_probs, labels, beta, hard):
    """β·onehot(ỹ) + (1−β)·p (soft) or β·onehot(ỹ) + (1−β)·onehot(argmax p) (hard), [B, K]."""
    num_classes = tf.shape(log_probs)[-1]
    observed = tf.one_hot(labels, num_classes, dtype=log_probs.dtype)
    if hard:
        own = tf.one_hot(tf.argmax(log_probs, axis=-1), num_classes, dtype=log_probs.dtype)
    else:
        own = tf.exp(log_probs)
    return beta * observed + (1.0 - beta) * own


def log_abs_det(matrix):
    """log|det M| of a square M [K, K] as Σ_i log|R_ii| of its QR decomposition M = QR
    (|det Q| = 1). −inf where an R_ii is exactly 0 (e.g. a zero column); a matrix that
    is singular only in exact arithmetic may give a tiny R_ii instead, where slogdet's LU
    may give 0.

    Not `tf.linalg.slogdet`: XLA has no kernel for its LogMatrixDeterminant op, and QR
    compiles (--jit_compile, docs/baselines.md).
    """
    r = tf.linalg.qr(matrix).r
    return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))


@tf.custom_gradient
def _log_abs_det(matrix):
    """`log_abs_det`, with the gradient M^{-T} taken as the transposed pseudo-inverse.

    The inverse (slogdet's own gradient) raises ("Input is not invertible") when its
    LU meets a zero pivot, which a nearly singular M can give even where the value
    is finite; the pseudo-inverse equals the inverse for an invertible M and stays
    finite (singular values below its cut-off count as 0) for a nearly singular one.
    """
    value = log_abs_det(matrix)

    def grad(upstream):
        return upstream * tf.linalg.matrix_transpose(tf.linalg.pinv(matrix))

    return value, grad


def dmi_loss(log_probs, labels, eps=1e-3):
    """L_DMI of one batch (a scalar): −log(|det(PᵀỸ / B)| + ε / B^K) (`dmi_loss_and_dead`)."""
    return dmi_loss_and_dead(log_probs, labels, eps)[0]


def dmi_loss_and_dead(log_probs, labels, eps=1e-3):
    """(L_DMI of one batch, whether its gradient is zero): −log(|det(PᵀỸ / B)| + ε / B^K).

    P = exp(log_probs) [B, K], Ỹ = onehot(labels) [B, K]. `eps` is the authors' code's
    0.001, which it adds to |det(PᵀỸ)| of the *unnormalised* matrix: the same here,
    as ε / B^K on the normalised one. It matters only when the determinant is tiny;
    a batch without some class makes PᵀỸ singular, and its loss is then the constant
    −log(ε / B^K) with zero gradient, as in the authors' code. A matrix singular in
    floating point (its log-determinant not finite) is treated the same way.

    Under a tf.distribute strategy (called in a replica context) PᵀỸ and B are
    summed over the replicas' shares of the global batch first.
    """
    num_classes = tf.shape(log_probs)[-1]
    dtype = log_probs.dtype
    onehot = tf.one_hot(labels, num_classes, dtype=dtype)
    joint = tf.matmul(tf.exp(log_probs), onehot, transpose_a=True)  # [K, K]: PᵀỸ
    counts = tf.reduce_sum(onehot, axis=0)                           # examples per class
    joint, counts = model.replica_sum(joint), model.replica_sum(counts)
    size = tf.reduce_sum(counts)
    joint = joint / size
    # The gradient inverts the matrix, which fails for a singular one (a class
    # missing from the batch, or an exactly singular matrix in floating point, e.g.
    # after the training diverged): take it of the identity instead; the loss is then
    # the constant floor.
    forward_only = log_abs_det(tf.stop_gradient(joint))
    singular = tf.logical_or(tf.reduce_any(counts == 0),
                             tf.logical_not(tf.math.is_finite(forward_only)))
    safe = tf.where(singular, tf.eye(num_classes, dtype=dtype), joint)
    log_det = _log_abs_det(safe)
    log_det = tf.where(singular, tf.constant(-np.inf, dtype), log_det)
    log_floor = tf.math.log(tf.constant(eps, dtype)) - tf.cast(num_classes, dtype) * tf.math.log(size)
    return -tf.reduce_logsumexp(tf.stack([log_det, log_floor])), singular


class ForwardModel(model.CrossEntropyModel):
    """Forward correction: −log (softmax(h(x))·T)_ỹ with a fixed transition matrix T."""

    def __init__(self, classifier, transition_matrix, weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        self.transition_matrix = np.asarray(transition_matrix, np.float32)

    def per_example_loss(self, batch, log_probs, targets):
        return forward_loss(log_probs, batch["label"], self.transition_matrix)


class BootstrapModel(model.CrossEntropyModel):
    """Bootstrapping: −Σ_k t_k log p_k with t = `bootstrap_targets` (soft or hard), the
    soft target's p differentiated too (module docstring)."""

    def __init__(self, classifier, beta, hard, weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        self.beta = float(beta)
        self.hard = bool(hard)

    def per_example_loss(self, batch, log_probs, targets):
        own = bootstrap_targets(log_probs, batch["label"], self.beta, self.hard)
        return -tf.reduce_sum(own * log_probs, axis=-1)


class DMIModel(model.CrossEntropyModel):
    """L_DMI: one loss per (global) batch, `dmi_loss`; its metric is that batch loss.

    Logs `dead_steps` too: the share of the epoch's steps so far whose loss was the
    constant floor, with zero gradient (a batch without some class, or a matrix singular
    in floating point).
    """

    def __init__(self, classifier, eps=1e-3, weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        self.eps = float(eps)
        self.dead_tracker = keras.metrics.Mean(name="dead_steps")

    @property
    def metrics(self):
        return super().metrics + [self.dead_tracker]

    def batch_loss(self, batch, log_probs, targets):
        loss, dead = dmi_loss_and_dead(log_probs, batch["label"], self.eps)
        # Counted here, where it is known; the same value on every replica (PᵀỸ is the
        # global batch's), so the metric's mean over replicas is the step's.
        self.dead_tracker.update_state(tf.cast(dead, tf.float32))
        replicas = model.replica_count()
        # Every replica computes the global batch's loss; the optimizer sums their
        # gradients, and all_reduce's gradient sums them once more across replicas.
        # Each replica's share is therefore loss / replicas.
        return loss / replicas, loss, replicas
