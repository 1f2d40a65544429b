"""Early-learning regularisation (ELR; Liu et al., NeurIPS 2020), on a `tables.ExampleTable`.

Every training example i has a target t_i [K], a temporal ensemble of the network's
predictions, and the network trains on

    L = mean_i [ CE(z_i, ỹ_i) + λ · log(1 − ⟨p_i, t_i⟩) ]                      (paper Eq. 6)

with z_i the logits, ỹ_i the observed label and p_i the clamped softmax below. As in the
authors' code (`ELR/model/loss.py`, `elr_loss.forward`), in one training step:

1. p = clip(softmax(z), 1e-4, 1 − 1e-4) (the regulariser's prediction; CE takes the
   unclamped logits);
2. the batch's targets move first: t_i ← β t_i + (1 − β) p̂_i with p̂_i = p_i / Σ_k p_ik
   (the clamped prediction renormalised, without gradient);
3. the regulariser uses the updated t_i, as a constant (the authors' table is a buffer
   written from `y_pred.data`); both terms are means over the batch.

The targets start at 0 (the authors' `torch.zeros(num_examp, num_classes)`), so an example's
first visit has ⟨p, t⟩ = (1 − β)⟨p, p̂⟩, and Σ_k t_ik = 1 − β^v after v visits.

The clamp bounds ⟨p, t⟩ ≤ max_k p_k ≤ 1 − 1e-4 (t sums to at most 1), so the log stays
finite; its gradient is 0 on the clamped entries (torch.clamp's, tf.clip_by_value's).
The regulariser's gradient on the logits is λ·p_k(⟨p, t⟩ − t_k)/(1 − ⟨p, t⟩) on the
unclamped entries (∂⟨p,t⟩/∂z_k = p_k(t_k − ⟨p,t⟩), times the log's −1/(1 − ⟨p,t⟩)): it
pushes p towards t, more strongly as they agree, which is what keeps an example whose
target has settled on its early prediction from being pulled to a wrong label by CE.
"""

import tensorflow as tf

from idn_tf import model, posterior, tables

# The authors' clamp of the softmax (loss.py: torch.clamp(y_pred, 1e-4, 1.0 - 1e-4)).
CLAMP = 1e-4


def clamped_probs(log_probs, clamp=CLAMP):
    """p = clip(exp(log_probs), clamp, 1 − clamp) [B, K]: the prediction ELR regularises."""
    return tf.clip_by_value(tf.exp(log_probs), clamp, 1.0 - clamp)


def target_update(targets, probs, beta):
    """t ← β t + (1 − β) p̂, p̂ = p / Σ_k p_k (the clamped prediction renormalised).

    targets: the batch's rows of the table [B, K]; probs: `clamped_probs` [B, K]; beta: the
    momentum β in [0, 1). Returns the new rows [B, K], without gradient to `probs`.
    """
    probs = tf.stop_gradient(probs)
    return posterior.ensemble_update(targets, probs / tf.reduce_sum(probs, axis=-1, keepdims=True),
                                     beta)


def elr_loss(log_probs, labels, targets, lam, clamp=CLAMP):
    """ELR's loss per example [B]: CE(p, ỹ) + λ·log(1 − ⟨p, t⟩) (module docstring).

    log_probs: log softmax of the logits [B, K]; labels: observed labels int [B]; targets:
    the batch's (already updated) targets [B, K], treated as constants; lam: λ. The CE term
    uses the unclamped log_probs, the regulariser `clamped_probs`. The batch mean of this
    is the authors' `final_loss`.
    """
    ce = -tf.gather(log_probs, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    probs = clamped_probs(log_probs, clamp)
    agreement = tf.reduce_sum(tf.stop_gradient(tf.cast(targets, probs.dtype)) * probs, axis=-1)
    return ce + lam * tf.math.log(1.0 - agreement)


class ELRModel(model.CrossEntropyModel):
    """Cross-entropy plus the early-learning regulariser (module docstring).

    Table (saved with the weights, so a resumed stage goes on with the same targets):
    `targets_table` [N, K], the temporal ensembles t, starting at 0. A step computes the
    batch's new rows from its (augmented, training-mode) predictions in `targets`, trains
    against them, and writes them in `after_update`: the rows the loss used are the rows
    stored. Under a tf.distribute strategy the write is `ExampleTable.scatter`'s, the same
    on every replica.
    """

    def __init__(self, classifier, num_examples, num_classes, beta=0.7, lam=3.0,
                 weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta, self.lam = float(beta), float(lam)
        self.targets_table = tables.ExampleTable(self, "elr_targets",
                                                 (int(num_examples), int(num_classes)), 0.0)

    def targets(self, batch, log_probs):
        """The batch's updated targets t [B, K] (step 2 of the module docstring)."""
        ids = tf.cast(batch["index"], tf.int64)
        return target_update(self.targets_table.gather(ids), clamped_probs(log_probs),
                             self.beta)

    def per_example_loss(self, batch, log_probs, targets):
        return elr_loss(log_probs, batch["label"], targets, self.lam)

    def after_update(self, batch, targets, log_probs):
        """Stores the rows the step trained with."""
        self.targets_table.scatter(tf.cast(batch["index"], tf.int64), targets)

