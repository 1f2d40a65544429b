"""Baselines that learn a label distribution per training example (docs/baselines.md), on
`tables.ExampleTable` like the method's η:

- `TanakaModel` (Tanaka et al., CVPR 2018, "joint optimisation"): soft labels Y [N, K]
  start as the observed labels; the network trains on
  KL(y_i ‖ s_i) + α·KL(p ‖ s̄) + β·H(s_i). At the end of every epoch each example's
  prediction of that epoch (the mean of its training-step predictions, once per visit)
  goes into a window of the last W epochs; from the update's start epoch its soft label
  becomes the mean of its window, as in the authors' code (`TanakaLabelUpdate`; W = 1:
  the epoch's own predictions). Its second phase trains a fresh network with
  cross-entropy on the final soft labels (`SoftTargetModel`).
- `PencilModel` (Yi & Wu, CVPR 2019, "PENCIL"): label logits ỹ [N, K] start as
  `scale`·onehot(observed); in phase 2 the network and the batch's rows of ỹ learn
  together from KL(f ‖ y^d)/K + α·CE(y^d, observed) + β·H(f)/K, y^d = softmax(ỹ),
  the rows by their own gradient step with step size λ; phase 1 is plain
  cross-entropy, phase 3 trains the network on KL(f ‖ y^d)/K with ỹ fixed.
  `PencilPhase` sets the phase per epoch.

  These are the terms of the authors' released code, which produced their published
  numbers, not the paper's equations: the code averages KL and H over the K classes
  as well as over the batch (torch.mean of a [B, K] tensor), hence the /K, and its
  compatibility term passes y^d (already probabilities) to a cross-entropy that
  applies softmax again: CE(y^d, o) = −log softmax(y^d)[o]. With the paper's sums
  (no /K), the KL term's gradient on the network is up to K times cross-entropy's
  (y^d starts at softmax(10·onehot), whose off-class log-probabilities are ≈ −10),
  and a digits run at the recipe's learning rate diverged in phase 2; and with the
  paper's −log y^d[o], the authors' α = 0.4 pins y^d within 0.2·f + 0.8·onehot(o)
  (its fixed point), so no label would change. Their α, β and λ (0.4, 0.1, 600) mean
  what they mean in their code only with their terms.

s = f = softmax of the network's logits; H the entropy; p the class prior.
Both are `model.CrossEntropyModel`s: same data, optimiser, coupled weight decay,
metrics and distribution; inference uses the classifier alone.
"""

import keras
import numpy as np
import tensorflow as tf

from idn_tf import model, tables


def _onehot(labels, num_classes):
    labels = np.asarray(labels).reshape(-1)  # [N] or keras.datasets' [N, 1]
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return out


def start_labels(labels, num_classes):
    """The [N, K] table a model starts from: onehot of integer labels ([N] or [N, 1]),
    or soft labels given as floats [N, K]."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer):
        return _onehot(labels, num_classes)
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise ValueError(f"soft labels must be [N, {num_classes}], got shape {labels.shape}")
    return labels.astype(np.float32)


def _global_mean_probs(probs):
    """The mean of `probs` [B, K] over the global batch (all replicas' shares)."""
    total = model.replica_sum(tf.reduce_sum(probs, axis=0))
    return total / model.replica_sum(tf.cast(tf.shape(probs)[0], probs.dtype))


def tanaka_terms(log_probs, soft_labels, prior):
    """Tanaka et al.'s terms for one batch: (KL(y ‖ s) [B], KL(p ‖ s̄) scalar, H(s) [B]).

    s̄ is the mean prediction over the (global) batch, as in the authors' code.
    """
    probs = tf.exp(log_probs)
    y = tf.cast(soft_labels, log_probs.dtype)
    y_log_y = tf.reduce_sum(tf.math.xlogy(y, y), axis=-1)
    classification = y_log_y - tf.reduce_sum(y * log_probs, axis=-1)
    prior = tf.cast(prior, log_probs.dtype)
    # The floor keeps the term finite when a class's mean prediction underflows to 0.
    mean_probs = tf.maximum(_global_mean_probs(probs), np.finfo(np.float32).tiny)
    # xlogy: a class with prior 0 adds 0 (not 0·(−inf)).
    prior_term = tf.reduce_sum(tf.math.xlogy(prior, prior) - tf.math.xlogy(prior, mean_probs))
    entropy = -tf.reduce_sum(probs * log_probs, axis=-1)
    return classification, prior_term, entropy


class TanakaModel(model.CrossEntropyModel):
    """Joint optimisation of the network and a soft-label table (module docstring).

    Tables (saved with the weights, so a resumed stage goes on with the same window):
    `labels_table` [N, K] (the soft labels), `sum_table` [N, K] and `count_table` [N]
    (this epoch's predictions per example), `window_table` [N, W, K] (the predictions of
    the last W epochs, slot e mod W for the 0-based epoch e) and `window_seen` [N, W]
    (1 where a slot holds a prediction).
    """

    def __init__(self, classifier, labels, num_classes, alpha=1.2, beta=0.8, prior=None,
                 average_epochs=10, weight_decay=0.0, **kwargs):
        """`labels`: the observed labels (int [N]) or soft labels to start from ([N, K]);
        `prior`: the class prior p [K] (default uniform, as the authors on CIFAR);
        `average_epochs`: W, the epochs whose predictions a soft label averages."""
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        n, window = len(labels), int(average_epochs)
        if window < 1:
            raise ValueError(f"average_epochs must be >= 1, got {average_epochs}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.prior = np.full(num_classes, 1.0 / num_classes, np.float32) if prior is None \
            else np.asarray(prior, np.float32)
        self.labels_table = tables.ExampleTable(self, "soft_labels", (n, num_classes),
                                                start_labels(labels, num_classes))
        self.sum_table = tables.ExampleTable(self, "prediction_sum", (n, num_classes), 0.0)
        self.count_table = tables.ExampleTable(self, "prediction_count", (n,), 0.0)
        self.window_table = tables.ExampleTable(self, "prediction_window",
                                                (n, window, num_classes), 0.0)
        self.window_seen = tables.ExampleTable(self, "prediction_window_seen", (n, window), 0.0)

    def targets(self, batch, log_probs):
        return self.labels_table.gather(tf.cast(batch["index"], tf.int64))

    def batch_loss(self, batch, log_probs, targets):
        classification, prior_term, entropy = tanaka_terms(log_probs, targets, self.prior)
        per_example = classification + self.beta * entropy
        loss, replicas = model.global_batch_mean(per_example)
        # Every replica computes the global batch's prior term (its mean prediction is
        # all-reduced, whose gradient sums the replicas' again): its share is 1/replicas.
        loss = loss + self.alpha * prior_term / replicas
        return loss, per_example + self.alpha * prior_term, replicas

    def after_update(self, batch, targets, log_probs):
        """Adds this step's predictions (those it trained with) to the epoch's sums."""
        ids = tf.cast(batch["index"], tf.int64)
        probs = tf.exp(log_probs)
        self.sum_table.scatter(ids, self.sum_table.gather(ids) + probs)
        self.count_table.scatter(ids, self.count_table.gather(ids) + 1.0)

    def end_epoch(self, epoch, update):
        """End of the 0-based `epoch`: each example's prediction of the epoch (the mean of
        its visits) fills the window's slot epoch mod W; an example the epoch did not
        visit keeps its latest prediction there (the authors keep the last one they
        saw). With `update`, every example with a prediction in its window gets the
        window's mean as its soft label. The sums start again either way. Dense, once
        per epoch (outside the training step: every replica's copy is assigned)."""
        counts, sums = self.count_table.numpy(), self.sum_table.numpy()
        window, seen = self.window_table.numpy(), self.window_seen.numpy()
        slot, previous = epoch % window.shape[1], (epoch - 1) % window.shape[1]
        visited = counts > 0
        window[~visited, slot] = window[~visited, previous]
        seen[~visited, slot] = seen[~visited, previous]
        window[visited, slot] = sums[visited] / counts[visited, None]
        seen[visited, slot] = 1.0
        self.window_table.assign(window)
        self.window_seen.assign(seen)
        if update:
            filled = seen.sum(axis=1)
            rows = filled > 0
            labels = self.labels_table.numpy()
            labels[rows] = window[rows].sum(axis=1) / filled[rows, None]
            self.labels_table.assign(labels)
        self.sum_table.assign(np.zeros_like(sums))
        self.count_table.assign(np.zeros_like(counts))


class SoftTargetModel(model.CrossEntropyModel):
    """Cross-entropy −Σ_k y_ik log p_ik against fixed soft labels y [N, K] (a table read by
    the batch's "index"): Tanaka et al.'s second phase, a fresh network on the labels the
    first phase learned. No regulariser and no label updates."""

    def __init__(self, classifier, labels, num_classes, weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        self.labels_table = tables.ExampleTable(self, "soft_labels", (len(labels), num_classes),
                                                start_labels(labels, num_classes))

    def targets(self, batch, log_probs):
        return tf.cast(self.labels_table.gather(tf.cast(batch["index"], tf.int64)),
                       log_probs.dtype)


class TanakaLabelUpdate(keras.callbacks.Callback):
    """`TanakaModel.end_epoch` after every epoch; labels change from epoch `start` (1-based).
    Keras numbers a resumed stage's epochs on from its initial epoch, so the window's slots
    are those of an uninterrupted run."""

    def __init__(self, start=1):
        super().__init__()
        self.start = int(start)

    def on_epoch_end(self, epoch, logs=None):
        self.model.end_epoch(epoch, update=epoch + 1 >= self.start)


def pencil_terms(log_probs, label_logits, labels):
    """PENCIL's terms per example [B] each, as the authors' code computes them (module
    docstring): KL(f ‖ y^d)/K, the compatibility −log softmax(y^d)[label], and H(f)/K,
    with f = exp(log_probs), y^d = softmax(label_logits), K the number of classes."""
    log_yd = tf.nn.log_softmax(tf.cast(label_logits, log_probs.dtype))
    probs = tf.exp(log_probs)
    classes = tf.cast(tf.shape(log_probs)[-1], log_probs.dtype)
    compatibility = -tf.gather(tf.nn.log_softmax(tf.exp(log_yd)), tf.cast(labels, tf.int32),
                               axis=1, batch_dims=1)
    classification = tf.reduce_sum(probs * (log_probs - log_yd), axis=-1) / classes
    entropy = -tf.reduce_sum(probs * log_probs, axis=-1) / classes
    return classification, compatibility, entropy


class PencilModel(model.CrossEntropyModel):
    """PENCIL's three phases (module docstring); `phase` (1, 2, 3) is set by `PencilPhase`.

    Table (saved with the weights): `label_logits` [N, K], written only in phase 2 and
    only in the batch's rows: ỹ_i ← ỹ_i − λ·∂L/∂ỹ_i, L the batch's mean loss.
    """

    def __init__(self, classifier, labels, num_classes, alpha=0.4, beta=0.1, label_lr=600.0,
                 scale=10.0, weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        self.alpha, self.beta, self.label_lr = float(alpha), float(beta), float(label_lr)
        self.label_table = tables.ExampleTable(
            self, "label_logits", (len(labels), num_classes),
            float(scale) * _onehot(labels, num_classes))
        self.phase = self.add_weight(shape=(), dtype="int32", initializer="ones",
                                     trainable=False, name="phase")

    def train_step(self, batch):
        ids = tf.cast(batch["index"], tf.int64)
        rows = self.label_table.gather(ids)
        phase = tf.convert_to_tensor(self.phase)
        with tf.GradientTape() as tape:
            tape.watch(rows)
            logits = self(batch["image"], training=True)
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.cast(batch["label"], tf.int32), tf.cast(logits, tf.float32))
            classification, compatibility, entropy = pencil_terms(log_probs, rows,
                                                                  batch["label"])
            joint = classification + self.alpha * compatibility + self.beta * entropy
            per_example = tf.where(phase == 1, ce, tf.where(phase == 2, joint, classification))
            loss, replicas = model.global_batch_mean(per_example)
        variables = self.trainable_variables
        grads, (row_grads,) = model.gradients(tape, self.optimizer, loss, variables, [rows])
        model.apply_update(self.optimizer, grads, variables, self.weight_decay / replicas, loss)
        # The rows' gradient is that of the global batch's mean loss (a row lives on one
        # replica); phases 1 and 3 write the rows back unchanged (under a strategy every
        # replica must take part in every write).
        new_rows = tf.where(phase == 2, rows - self.label_lr * row_grads, rows)
        self.label_table.scatter(ids, new_rows)
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(batch["label"], log_probs)
        return self._logs({m.name: m.result() for m in self.metrics})


class PencilPhase(keras.callbacks.Callback):
    """Sets `PencilModel.phase` at each epoch's start: 1 before epoch `joint_start`,
    2 before `finetune_start`, 3 after (1-based epochs); logs it as `pencil_phase`."""

    def __init__(self, joint_start, finetune_start):
        super().__init__()
        self.joint_start, self.finetune_start = int(joint_start), int(finetune_start)

    def phase(self, epoch):
        """The phase of the 0-based `epoch`."""
        if epoch + 1 < self.joint_start:
            return 1
        return 2 if epoch + 1 < self.finetune_start else 3

    def on_epoch_begin(self, epoch, logs=None):
        self.model.phase.assign(self.phase(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # for TensorBoard and the stage's history
            logs["pencil_phase"] = self.phase(epoch)
