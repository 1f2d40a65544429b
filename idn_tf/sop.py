"""SOP (Liu, Zhu, Qu, You, ICML 2022, "Robust Training under Label Noise by
Over-parameterization"): the label noise of example i is modelled by a sparse,
over-parameterised term s_i = u_i² ỹ_i − v_i² ⊙ (1 − ỹ_i), learned with the network.

As the authors' code computes it (shengliu66/SOP, `model/loss.py`,
`overparametrization_loss`), for a batch of B examples with one-hot observed labels
ỹ [B, K], logits z [B, K], p = softmax(z), u [B, 1] (one scalar per example, broadcast
over the classes) and v [B, K]:

    U = clip(u² ỹ, 0, 1),  V = clip(v² (1 − ỹ), 0, 1)
    q = max(p + U − sg(V), ε);  q ← q / Σ_k q_k;  q ← clip(q, ε, 1)      (ε = 1e-4)
    CE_i  = −Σ_k ỹ_ik log q_ik
    MSE_i = Σ_k (h_ik + U_ik − V_ik − ỹ_ik)²,  h = onehot(argmax z) (no gradient)
    L = mean_i (CE_i + MSE_i)  [+ λ_b · (−Σ_k (1/K) log clip(mean_i q_i, ε, 1)_k)]

sg = stop gradient: CE reaches the network and u, not v; MSE reaches u and v, not the
network (h is a constant). u and v take plain SGD steps on L, a batch mean, so each
row's step carries a 1/B (their optimiser: SGD, lr_u and lr_v, no momentum, no weight
decay). The bracketed class-balance term is SOP+'s (their `ratio_balance`). Their
other SOP+ term, the consistency between two augmentations, is not here (see
docs/baselines.md: the training batches hold one augmented image).

The paper writes u_i ∈ R^K; only its entry at the observed label enters s_i, and the
authors store that one number, as here. This is their code's loss rather than the paper's
equation (the floor, the L1 normalisation, the clips and the detached V are theirs).

`SOPModel` holds u [N, 1] and v [N, K] on `tables.ExampleTable`s; inference uses the
classifier alone (as theirs: s only enters the training loss).
"""

import numpy as np
import tensorflow as tf

from idn_tf import model, soft_labels, tables

EPS = 1e-4  # the authors' ε (clamps and the L1 normalisation)


def sop_terms(logits, labels, u, v, eps=EPS):
    """SOP's per-example terms (module docstring) for one batch.

    logits [B, K] (float32 or float64: the terms take its dtype); labels int [B]
    (observed); u [B, 1]; v [B, K].
    Returns (CE [B], MSE [B], q [B, K]): q is the corrected prediction the CE term
    scores, which SOP+'s class-balance term averages (`balance_term`).
    A slow loop would compute, for each i: U = min(u_i², 1) at ỹ_i and 0 elsewhere,
    V_k = min(v_ik², 1) off ỹ_i, then the formulas of the module docstring.
    """
    num_classes = tf.shape(logits)[-1]
    y = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    u_part = tf.clip_by_value(tf.square(tf.cast(u, logits.dtype)) * y, 0.0, 1.0)
    v_part = tf.clip_by_value(tf.square(tf.cast(v, logits.dtype)) * (1.0 - y), 0.0, 1.0)
    q = tf.maximum(tf.nn.softmax(logits) + u_part - tf.stop_gradient(v_part), eps)
    # torch's F.normalize(p=1): q / max(Σ|q|, ε); every entry is ≥ ε already.
    q = q / tf.maximum(tf.reduce_sum(q, axis=-1, keepdims=True), eps)
    q = tf.clip_by_value(q, eps, 1.0)
    ce = -tf.reduce_sum(y * tf.math.log(q), axis=-1)
    predicted = tf.stop_gradient(tf.one_hot(tf.argmax(logits, axis=-1, output_type=tf.int32),
                                            num_classes, dtype=logits.dtype))
    mse = tf.reduce_sum(tf.square(predicted + u_part - v_part - y), axis=-1)
    return ce, mse, q


def balance_term(q, eps=EPS):
    """SOP+'s class balance: −Σ_k (1/K) log clip(q̄, ε, 1)_k, q̄ the mean of q [B, K] over
    the (global) batch: the cross-entropy of the uniform prior to the mean prediction."""
    mean = tf.clip_by_value(soft_labels._global_mean_probs(q), eps, 1.0)
    return -tf.reduce_mean(tf.math.log(mean))


def initial_tables(num_examples, num_classes, std, seed):
    """u [N, 1] and v [N, K] drawn from N(0, std²), as the authors (std 1e-8), from
    numpy's generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, std, (num_examples, 1)).astype(np.float32)
    v = rng.normal(0.0, std, (num_examples, num_classes)).astype(np.float32)
    return u, v


class SOPModel(model.CrossEntropyModel):
    """The network and the per-example u [N, 1], v [N, K] learned together (module docstring).

    Each step: the network's gradient of L through the model's optimizer (the recipe's
    SGD with coupled weight decay), and the batch's rows of u and v by their own SGD
    steps, u ← u − lr_u ∂L/∂u, v ← v − lr_v ∂L/∂v. `balance` is SOP+'s λ_b (0: SOP).
    """

    def __init__(self, classifier, num_examples, num_classes, lr_u=10.0, lr_v=10.0,
                 balance=0.0, init_std=1e-8, seed=0, weight_decay=0.0, **kwargs):
        super().__init__(classifier, weight_decay=weight_decay, **kwargs)
        self.lr_u, self.lr_v, self.balance = float(lr_u), float(lr_v), float(balance)
        u, v = initial_tables(num_examples, num_classes, init_std, seed)
        self.u_table = tables.ExampleTable(self, "sop_u", u.shape, u)
        self.v_table = tables.ExampleTable(self, "sop_v", v.shape, v)

    def train_step(self, batch):
        ids = tf.cast(batch["index"], tf.int64)
        u, v = self.u_table.gather(ids), self.v_table.gather(ids)
        with tf.GradientTape() as tape:
            tape.watch([u, v])
            logits = tf.cast(self(batch["image"], training=True), tf.float32)
            ce, mse, q = sop_terms(logits, batch["label"], u, v)
            per_example = ce + mse
            loss, replicas = model.global_batch_mean(per_example)
            if self.balance:
                # Every replica computes the global batch's term (its mean is all-reduced,
                # whose gradient sums the replicas' again): its share is 1/replicas.
                balance = self.balance * balance_term(q)
                loss = loss + balance / replicas
                per_example = per_example + balance
        variables = self.trainable_variables
        grads, (u_grad, v_grad) = model.gradients(tape, self.optimizer, loss, variables, [u, v])
        model.apply_update(self.optimizer, grads, variables, self.weight_decay / replicas, loss)
        # A row lives on one replica: its gradient is that of the global batch's mean loss.
        self.u_table.scatter(ids, u - self.lr_u * u_grad)
        self.v_table.scatter(ids, v - self.lr_v * v_grad)
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(batch["label"], logits)
        return self._logs({m.name: m.result() for m in self.metrics})


def noise_estimate(u, v, labels):
    """The learned s = u² ỹ − v² ⊙ (1 − ỹ) of every example, clipped as in training, [N, K]
    (numpy): s_i at the observed label is how much of it SOP explains as noise."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    y = np.eye(v.shape[1], dtype=np.float32)[labels]
    return np.clip(np.square(u) * y, 0, 1) - np.clip(np.square(v) * (1 - y), 0, 1)

