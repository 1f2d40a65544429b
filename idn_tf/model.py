"""Keras models that train a wrapped classifier on noisy labels.

`CrossEntropyModel` is stage 1 (plain cross-entropy on the observed labels,
the "standard CE" baseline); `IDNModel` is stage 2 (docs/method.md §2, Algorithm 1): its
targets are the posterior q of Eq. 8 and it owns the per-example η and ψ tables.

Both take batches that are dicts with at least "image" (uint8 [B, H, W, C]),
"label" (int [B]: observed labels in training, clean labels in evaluation) and,
for `IDNModel` training, "index" (int64 [B]: the examples' rows in the tables).
The wrapped classifier maps uint8 images to logits; inference uses it alone.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from idn_tf import posterior, precision, tables
from idn_tf.data import views


def coupled_l2(grads, variables, weight_decay, scale=1.0):
    """PyTorch-style SGD weight decay: g ← g + wd·w on every weight (docs/method.md §3);
    g ← g + scale·wd·w for gradients of a loss multiplied by `scale` (loss scaling).

    Keras's `weight_decay=` optimizer argument is decoupled (AdamW-style) and
    is not the same thing, hence this explicit form.
    """
    if not weight_decay:
        return grads
    return [g + weight_decay * tf.cast(scale, g.dtype) * tf.cast(v, g.dtype)
            for g, v in zip(grads, variables)]


def gradients(tape, optimizer, loss, variables, rows=()):
    """(the gradients of `variables`, for `apply_update`; those of the table `rows`):
    of `loss` times the optimizer's loss scale (1 but under --precision=mixed_float16,
    `precision`) for the variables, of `loss` itself for the rows, which the step
    updates on its own."""
    scale = precision.loss_scale(optimizer)
    variables, rows = list(variables), list(rows)
    grads = tape.gradient(loss, variables + rows, output_gradients=scale)
    return grads[:len(variables)], [g / scale for g in grads[len(variables):]]


def apply_update(optimizer, grads, variables, weight_decay, after):
    """One optimizer step of every train_step: `coupled_l2` of `weight_decay`, then
    `optimizer.apply`, run only once the tensors `after` (the step's loss) exist.

    `grads` are those of the scaled loss, as `gradients` takes them: under loss scaling
    (--precision=mixed_float16, `precision.wrap`) the decay is added at the same scale,
    and the optimizer divides the sum back.

    Why `after`: tf.function orders each read of a variable before the step's write
    of it by a control edge, and Grappler's dependency optimizer removes some of those
    edges when the written value does not depend on the read. DivideMix's co-guess
    reads the other network in eval mode for targets only, so that network's update
    could run first and the guess saw the updated weights: about one run in ten, on
    2 CPU cores (tests/test_step_ordering.py finds such pairs in the optimized graph).
    The loss depends on every read of the step, so ordering the update after it
    restores the program order whatever Grappler removes.
    """
    if weight_decay:
        grads = coupled_l2(grads, variables, weight_decay, precision.loss_scale(optimizer))
    with tf.control_dependencies(tf.nest.flatten(after)):
        optimizer.apply(grads, variables)


def _multi_worker(strategy):
    """Whether `strategy` spans several workers (MultiWorkerMirroredStrategy with a cluster)."""
    extended = getattr(strategy, "extended", None)
    in_multi_worker_mode = getattr(extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode and in_multi_worker_mode())


def replica_count():
    """The number of replicas in sync in the current replica context (1 outside a strategy)."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def replica_sum(value):
    """`value` summed over the replicas in sync (itself with one replica). Its gradient is
    all_reduce's: the replicas' upstream gradients summed in turn."""
    if replica_count() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_batch_mean(per_example):
    """(this replica's share of the global batch's mean, number of replicas).

    With one replica: the batch mean. Under a tf.distribute strategy each replica
    holds part of the global batch and the optimizer sums the replicas' gradients,
    so each replica's loss is its sum over the global batch size. That size is
    counted across replicas (an epoch's last batch may split unevenly, or leave a
    replica empty), so the summed gradient is exactly the one-device gradient.
    """
    replicas = replica_count()
    if replicas == 1:
        return tf.reduce_mean(per_example), 1
    total = replica_sum(tf.cast(tf.shape(per_example)[0], per_example.dtype))
    return tf.reduce_sum(per_example) / total, replicas


class CrossEntropyModel(keras.Model):
    """Trains `classifier` with cross-entropy against per-batch targets.

    The targets here are one-hot observed labels (stage 1); subclasses override
    `targets`, `after_update` and, for other losses, `per_example_loss` or
    `batch_loss` (`baselines`). Loss is the mean of −Σ_j t_ij log p_ij over
    the batch; weight decay enters the gradient as coupled L2 (`coupled_l2`).
    """

    def __init__(self, classifier, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.weight_decay = float(weight_decay)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # The wrapper adds no layers of its own: it is built when its classifier is,
        # so its weights (η and ψ included) can be saved before any training.
        self.built = classifier.built

    def call(self, images, training=False):
        return self.classifier(images, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the optimizer only (the model is built, and compiles no losses or metrics).

        Keras 3.15's version averages the first distributed batch with
        `strategy.reduce`, which fails for a dict batch under
        MultiWorkerMirroredStrategy with several workers ("Attempt to convert a
        value ({'image': PerReplica…}) to a Tensor"); all it would build here is
        the optimizer.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def targets(self, batch, log_probs):
        """Training targets t [B, K]: here one-hot observed labels."""
        return tf.one_hot(batch["label"], tf.shape(log_probs)[-1], dtype=log_probs.dtype)

    def after_update(self, batch, targets, log_probs):
        """Hook run after the classifier's update, with the step's targets and log p
        (the η step in `IDNModel`)."""

    def per_example_loss(self, batch, log_probs, targets):
        """Loss of each example [B]: here −Σ_j t_ij log p_ij."""
        return -tf.reduce_sum(targets * log_probs, axis=-1)

    def batch_loss(self, batch, log_probs, targets):
        """(this replica's share of the batch loss, the values the loss metric averages,
        number of replicas): here the global batch mean of `per_example_loss`."""
        per_example = self.per_example_loss(batch, log_probs, targets)
        loss, replicas = global_batch_mean(per_example)
        return loss, per_example, replicas

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            logits = self(batch["image"], training=True)
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
            targets = tf.stop_gradient(self.targets(batch, log_probs))
            loss, tracked, replicas = self.batch_loss(batch, log_probs, targets)
        variables = self.trainable_variables
        grads, _ = gradients(tape, self.optimizer, loss, variables)
        # The optimizer sums the replicas' gradients, so each adds its share of the decay.
        apply_update(self.optimizer, grads, variables, self.weight_decay / replicas, loss)
        self.after_update(batch, targets, log_probs)
        self.loss_tracker.update_state(tracked)
        self.accuracy_tracker.update_state(batch["label"], log_probs)
        return self._logs({m.name: m.result() for m in self.metrics})

    def test_step(self, batch):
        """Plain cross-entropy and accuracy against batch["label"] (clean on test)."""
        logits = tf.cast(self(batch["image"], training=False), tf.float32)
        # Per example: a replica may get no rows of the last batch (a mean would be NaN).
        self.loss_tracker.update_state(tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.cast(batch["label"], tf.int32), logits))
        self.accuracy_tracker.update_state(batch["label"], logits)
        return self._logs({"loss": self.loss_tracker.result(),
                           "accuracy": self.accuracy_tracker.result()})

    def _get_metrics_result_or_logs(self, logs):
        """The epoch's logs from the metrics themselves (aggregated over replicas).

        Keras does this only when the step's keys equal `self.metrics`' names; the
        test step reports a subset of them, and the last step's own values are
        per-replica partial results under a tf.distribute strategy.
        """
        results = self.get_metrics_result()
        if isinstance(logs, dict) and set(logs) <= set(results):
            return {name: results[name] for name in logs}
        return logs

    def _logs(self, logs):
        """The step's logs; shape [1] with several workers, else scalars.

        Keras 3.15 averages a step's logs over a multi-worker cluster with
        strategy.reduce("MEAN", value, axis=0), which rejects scalars
        (keras-team/keras#20585); over [1]-shaped values it gives the scalar mean.
        """
        if _multi_worker(self.distribute_strategy):
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs


def check_pair(first, peer, method):
    """ValueError unless `first` and `peer` are two networks with the same weight shapes
    (`method` names the caller in the message)."""
    if peer is first:
        raise ValueError(f"{method} needs two networks: peer is the classifier itself")
    if first.built and peer.built:
        shapes = [tuple(w.shape) for w in first.weights]
        peer_shapes = [tuple(w.shape) for w in peer.weights]
        if shapes != peer_shapes:
            raise ValueError("classifier and peer must have the same architecture; their "
                             f"weight shapes are {shapes} and {peer_shapes}")


class TwoNetworkModel(CrossEntropyModel):
    """`classifier` and `peer` of the same architecture (`two_networks`).

    `classifier` is what evaluation, selection and export use: by default the first
    network; a subclass may pass `inference` (a model built on both networks, e.g.
    DivideMix's average) and keeps the first network as `network`.
    """

    method = "two-network training"

    def __init__(self, classifier, peer, weight_decay=0.0, inference=None, **kwargs):
        check_pair(classifier, peer, self.method)
        super().__init__(classifier if inference is None else inference,
                         weight_decay=weight_decay, **kwargs)
        if inference is not None:
            self.network = classifier
        self.peer = peer
        self.built = classifier.built and peer.built


class IDNModel(CrossEntropyModel):
    """Stage 2 of the method: classifier update against q, then a sparse η step.

    Owns two per-example tables of shape [N] (`tables.ExampleTable`, saved with
    the model's weights): `eta_table` (η_i, starts at eta_init) and `psi_table`
    (ψ_i from stage 1); `eta` and `psi` are their variables.
    `eta_update_enabled` (set by `PGACallback`) decides whether a step also
    updates the η of its batch; the update reads and writes only the batch's
    rows (O(B) whatever N is).

    With `q_ensemble` β > 0 (docs/method.md §7.6; the paper: 0) a third table,
    `ensemble_table` [N, K] (starting at 0), holds each example's exponential moving
    average of its training-mode predictions (`posterior.ensemble_update`), and Eq. 8
    takes that average in place of the batch's p: the step moves the batch's rows
    first, then computes q from them, as ELR's targets are.

    Logs, besides loss and accuracy (against observed labels): `eta_mean` and
    `eta_above_half`, the mean of η_i and of 1{η_i > 0.5} over the examples
    seen so far in the epoch (after their update). With every example once
    per epoch these equal the table's statistics at the epoch's end, without
    an O(N) reduction per step.
    """

    def __init__(self, classifier, psi, eta_init=0.01, eta_lr=0.5, eta_rule="paper",
                 eta_numerics="authors", eta_eps=1e-4, eta_min=0.0, weight_decay=0.0,
                 q_ensemble=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        if eta_rule not in posterior.ETA_RULES:
            raise ValueError(f"eta_rule must be one of {posterior.ETA_RULES}, got {eta_rule!r}")
        if eta_numerics not in posterior.NUMERICS:
            raise ValueError(f"eta_numerics must be one of {posterior.NUMERICS}, "
                             f"got {eta_numerics!r}")
        self.numerics = eta_numerics
        if not 0.0 <= q_ensemble < 1.0:
            raise ValueError(f"q_ensemble must be in [0, 1), got {q_ensemble}")
        self.q_ensemble = float(q_ensemble)
        self.eta_lr = float(eta_lr)
        self.eta_rule = eta_rule
        self.eta_eps = float(eta_eps)
        self.eta_min = float(eta_min)
        num_examples = int(tf.size(psi))
        # eta_init: a scalar, or one value per row (e.g. 0 for clean rows).
        self.eta_table = tables.ExampleTable(self, "eta", (num_examples,), eta_init)
        self.psi_table = tables.ExampleTable(self, "psi", (num_examples,), 1.0)
        self.psi_table.assign(psi)
        self.eta, self.psi = self.eta_table.variable, self.psi_table.variable
        self.ensemble_table = None
        if self.q_ensemble:  # a weight only when used: the paper's runs keep their weights
            num_classes = int(classifier.output_shape[-1])
            self.ensemble_table = tables.ExampleTable(self, "q_ensemble",
                                                      (num_examples, num_classes), 0.0)
        self.eta_update_enabled = self.add_weight(
            shape=(), dtype="bool", initializer="zeros", trainable=False,
            name="eta_update_enabled")
        self.eta_mean_tracker = keras.metrics.Mean(name="eta_mean")
        self.eta_high_tracker = keras.metrics.Mean(name="eta_above_half")

    @property
    def metrics(self):
        return super().metrics + [self.eta_mean_tracker, self.eta_high_tracker]

    def _rows(self, batch):
        """The batch's ids and their current η_i, ψ_i (sparse reads of the tables).

        Examples flagged `is_clean` (clean labels mixed into the batches, the paper's
        Clothing1M row #8) have η = 0 whatever their table row holds: their q is their
        label, and their rows are only ever written with 0.
        """
        ids = tf.cast(batch["index"], tf.int64)
        eta = self.eta_table.gather(ids)
        if "is_clean" in batch:
            eta = tf.where(batch["is_clean"], tf.zeros_like(eta), eta)
        return ids, eta, self.psi_table.gather(ids)

    def _ensemble_rows(self, batch, log_probs):
        """The batch's rows of the ensemble table after this visit [B, K]."""
        ids = tf.cast(batch["index"], tf.int64)
        return posterior.ensemble_update(self.ensemble_table.gather(ids), tf.exp(log_probs),
                                         self.q_ensemble)

    def targets(self, batch, log_probs):
        """Predicting step (Eq. 8): q from log p (or the batch's updated ensemble) and
        the batch's η, ψ."""
        _, eta, psi = self._rows(batch)
        if self.ensemble_table is not None:
            log_probs = tf.math.log(self._ensemble_rows(batch, log_probs))
        return posterior.posterior_from_log_probs(log_probs, batch["label"], eta, psi,
                                                  self.numerics)

    def after_update(self, batch, targets, log_probs):
        """η step (Eq. 11/12) on the batch's rows when updates are enabled.

        Under a tf.distribute strategy the step is computed and written on every
        step, with the old values where updates are off: a branch (tf.cond) around
        the write could not hold the replicas' synchronisation in the table's scatter.
        """
        ids, eta, psi = self._rows(batch)
        if self.ensemble_table is not None:  # the rows `targets` used, stored
            self.ensemble_table.scatter(ids, self._ensemble_rows(batch, log_probs))
        new_eta = posterior.eta_step(
            targets, batch["label"], eta, psi, self.eta_lr,
            rule=self.eta_rule, eps=self.eta_eps, eta_min=self.eta_min, numerics=self.numerics)
        eta = tf.where(self.eta_update_enabled, tf.cast(new_eta, self.eta.dtype), eta)
        noisy = tf.ones_like(eta)
        if "is_clean" in batch:  # clean examples: η stays 0, and counts in no η statistic
            eta = tf.where(batch["is_clean"], tf.zeros_like(eta), eta)
            noisy = 1.0 - tf.cast(batch["is_clean"], eta.dtype)
        if self.eta_table.mirrored:
            self.eta_table.scatter(ids, eta)
        else:  # one device: no write at all in the epochs without η updates
            tf.cond(self.eta_update_enabled,
                    lambda: self.eta_table.scatter(ids, eta) or tf.no_op(), tf.no_op)
        self.eta_mean_tracker.update_state(eta, sample_weight=noisy)
        self.eta_high_tracker.update_state(tf.cast(eta > 0.5, tf.float32), sample_weight=noisy)


_PREDICT = weakref.WeakKeyDictionary()  # classifier -> {image spec: its compiled forward pass}


def _forward(classifier, shape, dtype):
    """The classifier's compiled log-softmax forward pass for images [None, *shape]."""
    spec = tf.TensorSpec((None,) + tuple(shape), tf.as_dtype(dtype))
    cache = _PREDICT.setdefault(classifier, {})
    if spec not in cache:
        ref = weakref.ref(classifier)  # a strong reference would keep the key alive forever
        cache[spec] = tf.function(
            lambda x: tf.nn.log_softmax(tf.cast(ref()(x, training=False), tf.float32)),
            input_signature=[spec])
    return cache[spec]


def predict_log_probs(classifier, images, batch_size):
    """log softmax of `classifier` on un-augmented uint8 `images` [N, ...], float32 [N, K].

    A plain local forward pass, not `Model.predict`: under a tf.distribute strategy
    every worker gets all N rows in order (predict would shard the rows across
    workers and need every worker to take part).
    """
    forward = _forward(classifier, images.shape[1:], images.dtype)
    return np.concatenate([forward(images[i:i + batch_size]).numpy()
                           for i in range(0, len(images), batch_size)])


def predict_log_probs_dataset(classifier, batches):
    """As `predict_log_probs`, for a tf.data dataset of records (batches with "image")."""
    spec = batches.element_spec["image"]
    forward = _forward(classifier, spec.shape[1:], spec.dtype)
    return np.concatenate([forward(batch["image"]).numpy() for batch in batches])


def example_log_probs(classifier, examples, batch_size):
    """log softmax of `classifier` on the un-augmented training examples, float32 [N, K].

    `examples`: a uint8 image array [N, ...] or a data view (`data.views`), whose
    `unaugmented` is an array (in memory) or a dataset of records (streamed files).
    """
    inputs = views.as_examples(examples).unaugmented(batch_size)
    if isinstance(inputs, np.ndarray):
        return predict_log_probs(classifier, inputs, batch_size)
    return predict_log_probs_dataset(classifier, inputs)
