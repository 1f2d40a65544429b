"""DivideMix (Li, Socher & Hoi, ICLR 2020) as a Keras model: the math, the model, the
per-epoch co-divide step.

Two networks (`model.TwoNetworkModel`) are warmed up with cross-entropy; then,
at the start of every epoch, each network's per-example losses on the un-augmented
training set are fitted with a two-component Gaussian mixture (`clean_probability`):
w_i, the posterior of the smaller-mean component, is the probability that example i's
label is clean, and w_i > τ (p_threshold) puts it in the labelled set. Each network
trains on the *other* network's split with MixMatch: label co-refinement of the
labelled part (`co_refine`), co-guessing of the unlabelled part (`co_guess`),
sharpening (`sharpen`), mixup over both parts (`mixup`), and the loss
L_x + λ_u·ramp·L_u + the uniform-prior penalty (`mixmatch_losses`, `uniform_prior_penalty`,
`linear_rampup`). Evaluation and export use the sum of the two networks' logits, as the
authors test (`ensemble`).

Decisions where the authors' code (github LiJunnan1992/DivideMix, Train_cifar.py,
Train_clothing1M.py, dataloader_cifar.py) leaves room or cannot be followed here
(docs/baselines.md, "DivideMix"):

- The two networks train in the same Keras step, each on its own batches (one
  optimizer, as `coteaching`); the authors train network 1 for a whole epoch, then
  network 2 (whose co-guessing then uses the updated network 1). A Keras epoch has one
  fixed length, and a branch choosing the network to update cannot hold the
  replicas' synchronisation of the optimizer and of BatchNorm.
- Epoch length: every epoch (warm-up too) is ceil(N / B) steps (the pipeline's CE
  epoch); each step draws B labelled and B unlabelled examples per network, from a
  shuffle of the other network's labelled (unlabelled) set repeated with a fresh
  shuffle when it runs out (`data.codivide`). The authors' epoch is one pass over the
  labelled set, ceil(|L| / B) steps, its last batch smaller, the unlabelled set
  re-shuffled when it runs out (the same as here); Keras needs one number of steps per
  epoch (its epoch iterator fixes the count after the first epoch), so an epoch here
  has N / |L| times the authors' steps. The warm-up batch is B (theirs 2B on CIFAR, so
  their warm-up epoch has half our steps); docs/baselines.md says what following both
  would take.
- Mixup mixes the images after the classifier's first layer (x/255, or Caffe's
  preprocessing), as the authors mix normalised tensors: the classifiers take uint8,
  which would round the mixed pixels, and normalisation is affine, so mixing before or
  after it is the same.
- λ ~ Beta(α, α) (`beta_sample`) and the permutation are stateless draws of (seed, step,
  network), so a resumed run draws the same; the GMM's random_state is (seed, epoch,
  network) (the authors leave it unseeded). Under a tf.distribute strategy each replica mixes within
  its share of the batch and the prior penalty uses its share's mean prediction; the
  loss is each replica's divided by the number of replicas (the mean of their losses).
- The 90%-noise averaging of the losses over the last 5 epochs is not implemented (only
  used by the authors at r = 0.9).
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

from idn_tf import model, tables

# The authors' GaussianMixture settings (Train_cifar.py, eval_train).
GMM_MAX_ITER = 10
GMM_TOL = 1e-2
GMM_REG_COVAR = 5e-4


# --- The math -------------------------------------------------------------------------------


def normalise_losses(losses):
    """(ℓ − min ℓ) / (max ℓ − min ℓ) of per-example losses [N], as the authors (0 if all equal)."""
    losses = np.asarray(losses, np.float64)
    spread = losses.max() - losses.min()
    return (losses - losses.min()) / spread if spread > 0 else np.zeros_like(losses)


def clean_probability(losses, random_state=0, max_iter=GMM_MAX_ITER, tol=GMM_TOL,
                      reg_covar=GMM_REG_COVAR):
    """w [N]: the posterior of the smaller-mean component of a two-component
    GaussianMixture fitted to the normalised `losses` [N] (the authors' eval_train)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    x = normalise_losses(losses).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                          random_state=random_state)
    with warnings.catch_warnings():  # 10 iterations often stop before tol: as the authors'
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    return gmm.predict_proba(x)[:, int(np.argmin(gmm.means_))].astype(np.float32)


def sharpen(probs, temperature):
    """p^(1/T) / Σ_j p_j^(1/T) over the last axis: [B, K] -> [B, K]."""
    powered = tf.pow(probs, 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def co_refine(one_hot, w, probs_1, probs_2, temperature):
    """Label co-refinement: sharpen(w·ỹ + (1 − w)·(p₁ + p₂)/2), with `one_hot` ỹ [B, K],
    w [B] the other network's clean probabilities and p₁, p₂ [B, K] the network's own
    predictions on the two augmentations."""
    w = tf.reshape(tf.cast(w, probs_1.dtype), [-1, 1])
    mean = (probs_1 + probs_2) / 2.0
    return sharpen(w * one_hot + (1.0 - w) * mean, temperature)


def co_guess(probs, temperature):
    """Label co-guessing: sharpen of the mean of `probs` (a list of [B, K]: both networks'
    predictions on both augmentations)."""
    return sharpen(tf.add_n(list(probs)) / float(len(probs)), temperature)


def mixup(inputs, targets, lam, permutation):
    """(λ'x + (1 − λ')x[π], λ't + (1 − λ')t[π]) with λ' = max(λ, 1 − λ): inputs [M, ...],
    targets [M, K], π = `permutation` [M] (MixMatch's mixup over the whole batch)."""
    lam = tf.maximum(lam, 1.0 - lam)
    mixed = lam * inputs + (1.0 - lam) * tf.gather(inputs, permutation)
    return mixed, lam * targets + (1.0 - lam) * tf.gather(targets, permutation)


def mixmatch_losses(logits_x, targets_x, logits_u, targets_u):
    """(L_x, L_u): L_x = −mean_i Σ_j t_ij log softmax(z_i)_j over the labelled rows;
    L_u = mean over the unlabelled rows and classes of (softmax(z)_ij − t_ij)²."""
    lx = -tf.reduce_mean(tf.reduce_sum(targets_x * tf.nn.log_softmax(logits_x), axis=-1))
    lu = tf.reduce_mean(tf.square(tf.nn.softmax(logits_u) - targets_u))
    return lx, lu


def uniform_prior_penalty(logits):
    """Σ_j π_j log(π_j / p̄_j), π uniform over K and p̄ [K] the batch's mean softmax of
    `logits` [M, K]: KL(π ‖ p̄)."""
    mean = tf.reduce_mean(tf.nn.softmax(logits), axis=0)
    prior = tf.fill(tf.shape(mean), 1.0 / tf.cast(tf.shape(mean)[0], mean.dtype))
    return tf.reduce_sum(prior * tf.math.log(prior / mean))


def confidence_penalty(logits):
    """The authors' warm-up penalty for asymmetric noise: mean_i Σ_j p_ij log p_ij
    (the negative entropy, so minimising it keeps predictions from becoming confident)."""
    log_p = tf.nn.log_softmax(logits)
    return tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1))


def linear_rampup(current, warmup_epochs, lambda_u, rampup_epochs=16):
    """λ_u · clip((current − warm-up) / rampup, 0, 1), `current` the fractional epoch
    (epoch + batch / batches per epoch, 0-based)."""
    ramp = tf.clip_by_value((tf.cast(current, tf.float32) - warmup_epochs) / rampup_epochs,
                            0.0, 1.0)
    return lambda_u * ramp


BETA_BISECTIONS = 32  # λ within 2⁻³² of the inverse CDF's value: below float32's spacing


def beta_sample(seed, alpha):
    """λ ~ Beta(α, α) from a stateless seed [2], by inversion: u ~ U(0, 1) and λ the
    solution of I_λ(α, α) = u (the regularised incomplete beta function, Beta's CDF),
    found by bisecting [0, 1] BETA_BISECTIONS times.

    Not G₁/(G₁ + G₂) with G ~ Gamma(α): XLA has no kernel for the stateless gamma
    sampler (--jit_compile), and betainc compiles.
    """
    u = tf.random.stateless_uniform([], seed=seed, dtype=tf.float32)
    a = tf.constant(alpha, tf.float32)
    low, high = tf.constant(0.0), tf.constant(1.0)
    for _ in range(BETA_BISECTIONS):
        middle = (low + high) / 2
        below = tf.math.betainc(a, a, middle) < u
        low, high = tf.where(below, middle, low), tf.where(below, high, middle)
    return (low + high) / 2


def mix_draws(seed, size, alpha):
    """(λ ~ Beta(α, α), a permutation of range(size)): one step's mixup draws, stateless
    functions of `seed` [2] (int64)."""
    lam_seed, perm_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return beta_sample(lam_seed, alpha), tf.argsort(tf.random.stateless_uniform([size], perm_seed))


def step_seed(seed, step, network):
    """The stateless seed [2] of the mixup draws of network 0 or 1 in optimizer step `step`."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64) * 2 + network])


# --- The networks ---------------------------------------------------------------------------


def ensemble(first, peer):
    """A classifier whose logits are f₁(x) + f₂(x), the two networks' summed logits, as
    the authors test (Train_cifar.py `test`: outputs1 + outputs2, then the arg max), so
    evaluation, selection and export see one classifier; its softmax, the exported
    probabilities, is softmax(f₁(x) + f₂(x)) (∝ the product of the two networks'
    softmaxes). A functional model needs distinct layer names: a peer named as `first`
    (both are --arch) is renamed <name>_peer (weights are saved by attribute path, not by
    name)."""
    if peer.name == first.name:
        peer.name = f"{peer.name}_peer"
    inputs = keras.Input(first.input_shape[1:], dtype=first.inputs[0].dtype, name="images")
    summed = (keras.ops.cast(first(inputs), "float32")
              + keras.ops.cast(peer(inputs), "float32"))
    return keras.Model(inputs, summed, name="dividemix_ensemble")


def split_after_first_layer(network):
    """(head, body): the network's first layer after its input (x/255 or Caffe's
    preprocessing: uint8 in, floats out) and the rest, so mixed floats can enter the body;
    body(head(x)) = network(x), the same layers and weights."""
    first = network.layers[1]
    return (keras.Model(network.inputs, first.output),
            keras.Model(first.output, network.outputs))


class DivideMixModel(model.TwoNetworkModel):
    """DivideMix of `classifier` (network 1) and `peer` (network 2) (module docstring).

    `classifier` is the two networks' `ensemble`; `network` and `peer` are the two.
    `clean_tables`: two `tables.ExampleTable`s [N], network k's w (set each epoch by
    `CoDivide`). `warming_up` (a Python bool, set by `CoDivide`, which rebuilds the train
    function when it changes): both networks on cross-entropy, else MixMatch.

    Batches (`data.codivide`): {"x1", "u1", "x2", "u2"}, network k's labelled and
    unlabelled rows, each {"image", "image2"} (two augmentations), "x" with "label"
    and "index". Warm-up uses "x1"/"x2"'s "image" only.

    Training logs: loss (the two networks' summed loss), accuracy (network 1's training
    prediction of its x rows against their observed labels), lx, lu, penalty (summed
    over the networks), lambda_u (λ_u·ramp of the step).
    """

    method = "DivideMix"

    def __init__(self, classifier, peer, steps_per_epoch, warmup_epochs, num_examples,
                 lambda_u=25.0, temperature=0.5, alpha=4.0, rampup_epochs=16,
                 confidence_penalty=False, seed=0, weight_decay=0.0, **kwargs):
        super().__init__(classifier, peer, weight_decay=weight_decay,
                         inference=ensemble(classifier, peer), **kwargs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = int(warmup_epochs)
        self.lambda_u, self.temperature, self.alpha = float(lambda_u), float(temperature), float(alpha)
        self.rampup_epochs = float(rampup_epochs)
        self.use_confidence_penalty = bool(confidence_penalty)
        self.seed = int(seed)
        self.warming_up = True
        self.clean_tables = [tables.ExampleTable(self, f"clean_probability_{k}", (num_examples,), 1.0)
                             for k in (1, 2)]
        self._split = [split_after_first_layer(n) for n in (classifier, peer)]
        self.lx_tracker = keras.metrics.Mean(name="lx")
        self.lu_tracker = keras.metrics.Mean(name="lu")
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self.lambda_tracker = keras.metrics.Mean(name="lambda_u")

    @property
    def networks(self):
        return (self.network, self.peer)

    @property
    def metrics(self):
        return super().metrics + [self.lx_tracker, self.lu_tracker, self.penalty_tracker,
                                  self.lambda_tracker]

    def train_step(self, batch):
        replicas = model.replica_count()
        step = tf.cast(self.optimizer.iterations, tf.int64)
        with tf.GradientTape() as tape:
            if self.warming_up:
                losses, parts, logits1 = self._warmup_losses(batch)
            else:
                losses, parts, logits1 = self._mixmatch_losses(batch, step)
            loss = tf.add_n(losses)
            scaled = loss / replicas
        variables = self.trainable_variables
        grads, _ = model.gradients(tape, self.optimizer, scaled, variables)
        model.apply_update(self.optimizer, grads, variables, self.weight_decay / replicas, loss)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(batch["x1"]["label"], logits1)
        for tracker, value in zip((self.lx_tracker, self.lu_tracker, self.penalty_tracker,
                                   self.lambda_tracker), parts):
            tracker.update_state(value)
        return self._logs({m.name: m.result() for m in self.metrics})

    def _warmup_losses(self, batch):
        """Both networks' mean CE on their x rows (+ the confidence penalty if asked)."""
        losses, ce_sum, penalty_sum, logits1 = [], 0.0, 0.0, None
        for net, key in zip(self.networks, ("x1", "x2")):
            logits = tf.cast(net(batch[key]["image"], training=True), tf.float32)
            labels = tf.cast(batch[key]["label"], tf.int32)
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            penalty = confidence_penalty(logits) if self.use_confidence_penalty else 0.0
            losses.append(ce + penalty)
            ce_sum, penalty_sum = ce_sum + ce, penalty_sum + penalty
            logits1 = logits if logits1 is None else logits1
        zero = tf.constant(0.0)
        return losses, (ce_sum, zero, zero + penalty_sum, zero), logits1

    def _mixmatch_losses(self, batch, step):
        """Each network's MixMatch loss on its batch, the other network co-guessing."""
        ramp = linear_rampup(tf.cast(step, tf.float32) / self.steps_per_epoch,
                             self.warmup_epochs, self.lambda_u, self.rampup_epochs)
        losses, lx_sum, lu_sum, pen_sum, logits1 = [], 0.0, 0.0, 0.0, None
        for k, (net, other) in enumerate((self.networks, self.networks[::-1])):
            x, u = batch[f"x{k + 1}"], batch[f"u{k + 1}"]
            # Network k trains on the other network's split: its w.
            w = self.clean_tables[1 - k].gather(tf.cast(x["index"], tf.int64))
            seed = step_seed(self.seed, step, k)
            lx, lu, penalty, own = self._one_network(k, net, other, x, u, w, seed)
            losses.append(lx + ramp * lu + penalty)
            lx_sum, lu_sum, pen_sum = lx_sum + lx, lu_sum + lu, pen_sum + penalty
            logits1 = own if logits1 is None else logits1
        return losses, (lx_sum, lu_sum, pen_sum, ramp), logits1

    def _one_network(self, k, net, other, x, u, w, seed):
        """(L_x, L_u, prior penalty, logits of its first x augmentation) of network k."""
        def probs(network, images, training):
            return tf.nn.softmax(tf.cast(network(images, training=training), tf.float32))

        logits_x1 = tf.cast(net(x["image"], training=True), tf.float32)
        # The targets: no gradient (the authors compute them under torch.no_grad()).
        one_hot = tf.one_hot(tf.cast(x["label"], tf.int32), tf.shape(logits_x1)[-1])
        targets_x = tf.stop_gradient(co_refine(one_hot, w, tf.nn.softmax(logits_x1),
                                               probs(net, x["image2"], True), self.temperature))
        targets_u = tf.stop_gradient(co_guess(
            [probs(net, u["image"], True), probs(net, u["image2"], True),
             probs(other, u["image"], False), probs(other, u["image2"], False)],
            self.temperature))
        head, body = self._split[k]
        inputs = tf.concat([tf.cast(head(v, training=True), tf.float32) for v in
                            (x["image"], x["image2"], u["image"], u["image2"])], 0)
        targets = tf.concat([targets_x, targets_x, targets_u, targets_u], 0)
        lam, permutation = mix_draws(seed, tf.shape(inputs)[0], self.alpha)
        mixed, mixed_targets = mixup(inputs, targets, lam, permutation)
        logits = tf.cast(body(mixed, training=True), tf.float32)
        labelled = 2 * tf.shape(x["image"])[0]
        lx, lu = mixmatch_losses(logits[:labelled], mixed_targets[:labelled],
                                 logits[labelled:], mixed_targets[labelled:])
        return lx, lu, uniform_prior_penalty(logits), logits_x1


class CoDivide(keras.callbacks.Callback):
    """The per-epoch co-divide step of `DivideMixModel`, and its warm-up switch.

    At the start of every epoch from `warmup_epochs` (0-based, as Keras counts them, so a
    resumed fit recomputes the split of its first epoch from the restored networks):
    each network's cross-entropy on the un-augmented training `examples` (eval mode, as
    the authors) against the observed `labels` -> `clean_probability` -> the model's
    clean table k; the labelled masks w > `p_threshold` go to `feed` (`data.codivide`),
    which hands each network's batches the other's split. Writes into the epoch's logs
    `labelled_1` and `labelled_2`, the fraction of examples network k puts in its labelled
    set (1.0 during warm-up).
    """

    def __init__(self, feed, examples, labels, batch_size, warmup_epochs, p_threshold=0.5,
                 seed=0):
        super().__init__()
        self.feed, self.examples, self.labels = feed, examples, np.asarray(labels)
        self.batch_size, self.warmup_epochs = int(batch_size), int(warmup_epochs)
        self.p_threshold, self.seed = float(p_threshold), int(seed)
        self.fractions = (1.0, 1.0)

    def on_epoch_begin(self, epoch, logs=None):
        warming_up = epoch < self.warmup_epochs
        if not warming_up:
            masks = []
            for k, net in enumerate(self.model.networks):
                log_probs = model.example_log_probs(net, self.examples, self.batch_size)
                losses = -log_probs[np.arange(len(self.labels)), self.labels]
                w = clean_probability(losses, random_state=gmm_seed(self.seed, epoch, k))
                self.model.clean_tables[k].assign(w)
                masks.append(w > self.p_threshold)
            self.feed.publish(epoch, *masks)
            self.fractions = tuple(float(np.mean(m)) for m in masks)
        else:
            self.fractions = (1.0, 1.0)
        if self.model.warming_up != warming_up:
            self.model.warming_up = warming_up
            self.model.make_train_function(force=True)  # the step is traced for one mode

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["labelled_1"], logs["labelled_2"] = self.fractions


def gmm_seed(seed, epoch, network):
    """The GMM's random_state for (seed, 0-based epoch, network 0 or 1)."""
    return int((int(seed) * 1_000_003 + epoch * 2 + network) % 2**32)
