"""Co-teaching (Han et al., NeurIPS 2018) as a Keras model, with its forget-rate schedule.

Two networks of the same architecture but different initial weights, `classifier`
and `peer`, see the same mini-batches. In each step every network ranks the batch
by its own per-example cross-entropy against the observed labels and keeps its
`num_keep` smallest-loss examples; each network is then updated on the mean
cross-entropy over the examples the *other* network kept (the "cross update").
The fraction left out, the forget rate R(t), grows from 0 to τ over the first
T_k epochs (`forget_rate_schedule`, set per epoch by `ForgetRateCallback`).

Decisions where the paper and the authors' code leave room, or differ:

- How many are kept: num_keep = B − round(R·B) with halves rounded up, i.e.
  num_forget = floor(R·B + 1/2) (`small_loss_mask`). The authors' code keeps
  int((1 − R)·B), the same whenever R·B is a whole number or its fractional part is
  ≥ 1/2, and one fewer when the fractional part is in (0, 1/2). Rounding R·B is
  stable under the float32 storage of R (int(...) is not: with R = 0.3 in float32,
  (1 − R)·10 is 6.9999999). A non-empty batch keeps at least one example (the
  authors' code would average over no examples when R·B rounds up to B).
- Ties in the loss: the example earlier in the batch is kept first.
- The schedule: R(t) = min(t/T_k·τ, τ) for the 0-based epoch t, so the first epoch
  keeps everything and R reaches τ in epoch T_k (0-based). The paper's Algorithm 1
  counts epochs from 1 (R = τ/T_k in the first epoch); the authors' code ramps with
  linspace(0, τ, T_k), reaching τ in epoch T_k − 1. The paper's exponent c is 1.
- Under a tf.distribute strategy each replica ranks and selects within its own
  share of the global batch (num_keep computed from the share's size), not over
  the global batch: a global ranking would need the whole batch's losses on every
  replica. The loss is scaled as in `model.global_batch_mean`: each replica's loss
  is its sum over its kept examples divided by the number kept across all
  replicas, so the replicas' summed gradient is the gradient of the mean over all
  kept examples (with one replica, exactly the one-device step).
- One optimizer updates both networks in one `apply` call; each network's loss
  depends only on its own variables, so its gradient reaches only them. (The
  authors' code has one Adam per network; per-variable optimizer state makes that
  the same.) Coupled L2 weight decay (`model.coupled_l2`) applies to both.
- Evaluation, inference and export use the first network, `classifier`, alone.

Batches are dicts with "image" (uint8 [B, H, W, C]) and "label" (int [B]: observed
labels in training, clean ones in evaluation); "index" is accepted and not used.
"""

import keras
import numpy as np
import tensorflow as tf

from idn_tf import model


def forget_rate_schedule(epoch, noise_rate, t_k=10):
    """R(t) = min(t/T_k·τ, τ): the forget rate of the 0-based `epoch` t (τ = `noise_rate`).

    Epoch 0 keeps every example; R grows linearly to τ, reached at epoch T_k.
    """
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"noise_rate must be in [0, 1), got {noise_rate!r}")
    if t_k < 1:
        raise ValueError(f"t_k must be >= 1, got {t_k!r}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0-based), got {epoch!r}")
    return min(epoch / t_k * noise_rate, noise_rate)


def small_loss_mask(losses, forget_rate):
    """(mask [B] float32, number kept as float32) of the small-loss selection.

    Keeps the num_keep = B − floor(R·B + 1/2) examples of smallest `losses` [B]
    (at least one of a non-empty batch; ties: the earlier example first). Static
    shapes only (a sort and a scatter, no boolean_mask), so it compiles with XLA.
    """
    size = tf.shape(losses)[0]
    count = tf.cast(size, tf.float32)
    forget = tf.floor(tf.cast(forget_rate, tf.float32) * count + 0.5)
    keep = tf.clip_by_value(count - forget, tf.minimum(count, 1.0), count)
    order = tf.argsort(losses, stable=True)  # ascending
    kept_ranks = tf.cast(tf.range(size) < tf.cast(keep, tf.int32), tf.float32)
    return tf.scatter_nd(order[:, None], kept_ranks, tf.reshape(size, [1])), keep


def _kept_total(keep):
    """(the number kept summed over the replicas, number of replicas)."""
    return model.replica_sum(keep), model.replica_count()


class CoTeachingModel(model.TwoNetworkModel):
    """Co-teaching of `classifier` and `peer` (module docstring); inference uses `classifier`.

    `forget_rate` is a non-trainable float32 scalar weight, the R(t) of the current
    epoch, set from outside (`ForgetRateCallback`); it starts at 0 (keep everything).

    Training logs:
      loss      mean over the epoch's kept examples of the two networks' training
                losses (per batch on one device: the mean of network 1's mean CE over
                network 2's pick and network 2's mean CE over network 1's)
      accuracy  network 1's accuracy against the observed labels (all examples)
      kept      number of examples each network kept in the epoch so far (the two
                keep as many), summed over batches and replicas
    Evaluation logs loss and accuracy of network 1 (`CrossEntropyModel.test_step`).
    """

    method = "co-teaching"

    def __init__(self, classifier, peer, weight_decay=0.0, **kwargs):
        super().__init__(classifier, peer, weight_decay=weight_decay, **kwargs)
        self.forget_rate = self.add_weight(shape=(), dtype="float32", initializer="zeros",
                                           trainable=False, name="forget_rate")
        self.kept_tracker = keras.metrics.Sum(name="kept")

    @property
    def metrics(self):
        return super().metrics + [self.kept_tracker]

    def train_step(self, batch):
        labels = tf.cast(batch["label"], tf.int32)
        rate = self.forget_rate.value if hasattr(self.forget_rate, "value") else self.forget_rate
        with tf.GradientTape() as tape:
            logits1 = tf.cast(self.classifier(batch["image"], training=True), tf.float32)
            logits2 = tf.cast(self.peer(batch["image"], training=True), tf.float32)
            loss1 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits1)
            loss2 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits2)
            # Each network's own small-loss pick (indices only: no gradient flows
            # through the selection).
            picked1, keep = small_loss_mask(tf.stop_gradient(loss1), rate)
            picked2, _ = small_loss_mask(tf.stop_gradient(loss2), rate)
            total, replicas = _kept_total(keep)
            total = tf.maximum(total, 1.0)
            # Cross update: network 1 learns from network 2's pick and vice versa.
            # tf.where, not a product: a non-finite loss left out stays out of the sum.
            update1 = tf.reduce_sum(tf.where(picked2 > 0, loss1, 0.0)) / total
            update2 = tf.reduce_sum(tf.where(picked1 > 0, loss2, 0.0)) / total
            loss = update1 + update2
        variables = self.trainable_variables
        grads, _ = model.gradients(tape, self.optimizer, loss, variables)
        # The optimizer sums the replicas' gradients, so each adds its share of the decay.
        model.apply_update(self.optimizer, grads, variables, self.weight_decay / replicas, loss)
        self.loss_tracker.update_state(tf.concat([loss1, loss2], 0),
                                       sample_weight=tf.concat([picked2, picked1], 0))
        self.accuracy_tracker.update_state(labels, logits1)
        self.kept_tracker.update_state(keep)
        return self._logs({m.name: m.result() for m in self.metrics})


class ForgetRateCallback(keras.callbacks.Callback):
    """Sets `CoTeachingModel.forget_rate` to R(t) at the start of every epoch.

    R(t) = `forget_rate_schedule`(t, noise_rate, t_k) for the 0-based epoch t, as
    Keras counts it (so a resumed fit continues the schedule). Writes `forget_rate`
    into the epoch's logs, as `callbacks.PGACallback` does for `eta_update`.
    """

    def __init__(self, noise_rate, t_k=10, verbose=0):
        super().__init__()
        forget_rate_schedule(0, noise_rate, t_k)  # checks the arguments
        self.noise_rate = float(noise_rate)
        self.t_k = int(t_k)
        self.verbose = verbose

    def rate(self, epoch):
        """R of the 0-based `epoch`."""
        return forget_rate_schedule(epoch, self.noise_rate, self.t_k)

    def on_epoch_begin(self, epoch, logs=None):
        rate = self.rate(epoch)
        self.model.forget_rate.assign(np.float32(rate))
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: forget rate {rate:.4f}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["forget_rate"] = float(self.model.forget_rate.numpy())
