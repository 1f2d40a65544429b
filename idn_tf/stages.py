"""How a stage trains: the classifier, the optimiser and its schedule, `fit` with
backup, TensorBoard and monitoring; stage 1 and row #10's clean fine-tuning.

Stage 1 (docs/method.md §2) trains a classifier with plain cross-entropy on the
observed labels; its test accuracy is the CE baseline and its predictions on the
un-augmented training images give ψ. Each method (`idn_tf.methods`) trains its own
stages with `new_classifier` and `fit`; `finetune` trains a copy of the final
classifier with cross-entropy on a clean training set. Nothing here knows a method.
The data come through a view (`data.views`): arrays in memory or streamed files.
"""

import contextlib
import dataclasses
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from idn_tf import callbacks, distribution, model, posterior, precision, runfolder, transition
from idn_tf.errors import ConfigError
from idn_tf.models import build_classifier
from idn_tf.models.resnet50 import BackboneError
from idn_tf.runfolder import StageResult


def new_classifier(config, data, seed=None):
    """A freshly initialised classifier; both stages start from the same weights
    (those of `seed`, default --seed)."""
    mean, std = data.pixel_statistics()
    if config.normalize == "subtract_mean":
        std = np.ones_like(std)
    try:
        return build_classifier(config.arch, data.input_shape,
                                data.num_classes, mean, std,
                                seed=config.seed if seed is None else seed,
                                backbone_weights=config.backbone_weights)
    except BackboneError as e:
        raise ConfigError(f"--arch={config.arch} --backbone_weights={config.backbone_weights}: "
                          f"{e}") from e


@contextlib.contextmanager
def model_scope(config):
    """Where a stage builds its model: the seed set to --seed (every stage starts from
    the same initial weights) and inside the run's strategy scope."""
    keras.utils.set_random_seed(config.seed)
    with distribution.get_strategy(config.strategy).scope():
        yield


def classifier_in_scope(config, data):
    """A new classifier built in the run's strategy scope (to load saved weights into)."""
    with distribution.get_strategy(config.strategy).scope():
        return new_classifier(config, data)


def learning_rate(config, steps_per_epoch):
    """lr, × lr_decay_factor after each epoch in lr_decay_epochs: a float or a schedule.

    The optimizer evaluates the schedule at its step count before the update
    (0-based), and PiecewiseConstantDecay switches *after* a boundary, so the
    last step of epoch e is step e·steps_per_epoch − 1.
    """
    boundaries = [e * steps_per_epoch - 1 for e in config.lr_decay_epochs if e < config.epochs]
    if not boundaries:
        return config.lr
    values = [config.lr * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config, steps_per_epoch):
    """SGD with momentum and the step-decay learning rate.

    Keras's momentum is v ← μv − lr·g, w ← w + v: the same as PyTorch's while
    lr is constant; just after a decay it still carries velocity gathered at
    the old lr. Under --precision=mixed_float16 it is wrapped for loss scaling.
    """
    return precision.wrap(keras.optimizers.SGD(learning_rate=learning_rate(config, steps_per_epoch),
                                               momentum=config.momentum), config.precision)


def monitoring(config, data, labels, stage, resuming):
    """The evaluation and TensorBoard callbacks of one stage, in the order they run.

    Under <run_dir>/tb/<stage>/ (chief only): Keras's TensorBoard writes loss,
    accuracy, learning rate (and η logs) to train/ and validation/ (the validation
    split); `TestEvaluation` the clean test set's to test/ (every --test_every epochs,
    and on every worker: evaluation is collective); `MonitorCallback` the label
    monitoring to monitor/. A stage trained again from its first epoch starts a fresh
    folder, so its curves are not drawn over an earlier attempt's; a resumed stage
    appends. `labels` None: no MonitorCallback (a stage not trained on the noisy labels).
    Returns (callbacks, the MonitorCallback or None).
    """
    test = data.test_dataset(config.batch_size)
    if not distribution.is_chief(config.strategy):
        return [callbacks.TestEvaluation(test, config.test_every)], None
    log_dir = os.path.join(config.run_dir, "tb", stage)
    if not resuming:
        shutil.rmtree(log_dir, ignore_errors=True)
    board = keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0)
    evaluation = callbacks.TestEvaluation(test, config.test_every, os.path.join(log_dir, "test"))
    if labels is None:
        return [board, evaluation], None
    monitor = callbacks.MonitorCallback(
        os.path.join(log_dir, "monitor"), data, labels, data.train.clean_labels,
        data.class_names, config.batch_size, every=config.monitor_every)
    return [board, evaluation, monitor], monitor


def fit(train_model, config, data, labels, stage, extra_callbacks=(), train_data=None):
    """Trains `train_model` for the stage, resuming from its backup if there is one.

    The training batches are `data.train_dataset` of the noisy `labels`, or
    `train_data(initial_epoch)` -> (dataset, steps per epoch) when given (then the
    stage is not monitored against `labels`).

    Keras validates on `data.validation_dataset` (the noisy validation split; none:
    no validation) and `callbacks.BestEpoch` selects the epoch of the best validation
    accuracy: the result's `selection` and `selected_weights` (the classifier of that
    epoch; the model keeps the last epoch's weights). The clean test set is evaluated
    for the curves (`monitoring`) and, once more, for the selected classifier.

    The backup (`RunFolder.backup_dir(stage)`) is left in place: the caller removes it
    once the stage's results are safely written, so a kill in between loses nothing.
    A caller that trains twice in one run folder must remove it in between.
    """
    backup_path = runfolder.RunFolder(config).backup_dir(stage)
    initial_epoch, _ = callbacks.Backup.latest(backup_path)
    if initial_epoch:
        print(f"resuming {stage} after epoch {initial_epoch} from {backup_path}", flush=True)
    evaluation, monitor = monitoring(config, data, None if train_data else labels, stage,
                                     resuming=initial_epoch > 0)
    validation = data.validation_dataset(config.batch_size)
    best = callbacks.BestEpoch() if validation is not None else None
    backup = callbacks.Backup(backup_path, monitor=monitor, best=best,
                              write=distribution.is_chief(config.strategy))
    if train_data is None:
        train_ds = data.train_dataset(labels, config.batch_size, config.seed, config.epochs,
                                      initial_epoch)
        steps_per_epoch = data.steps_per_epoch(labels, config.batch_size)
    else:
        train_ds, steps_per_epoch = train_data(initial_epoch)
    with distribution.get_strategy(config.strategy).scope():
        train_model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                            jit_compile=config.jit_compile)
    # Order matters: PGACallback adds eta_update to the logs before TensorBoard reads
    # them, the test accuracy is in the logs before the monitor and the progress line
    # read it, and Backup saves the monitor's history and the best epoch after they have run.
    train_model.fit(
        train_ds, validation_data=validation, epochs=config.epochs, initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch, verbose=config.verbose,
        shuffle=False,  # the dataset orders each epoch itself, from (seed, epoch)
        callbacks=[keras.callbacks.TerminateOnNaN(), *extra_callbacks, *evaluation,
                   *([best] if best else []), backup, callbacks.Progress()])
    if train_model.stop_training:
        good, _ = callbacks.Backup.latest(backup_path)
        kept = (f"epoch {good}, the last good one, is kept in {backup_path}" if good
                else "no epoch had finished with a finite loss")
        raise FloatingPointError(f"{stage} stopped: the loss became NaN or infinite; {kept} "
                                 "(a smaller --lr or --eta_lr needs --overwrite or another "
                                 "--run_dir)")
    logs = backup.history
    selection = None if best is None else select(train_model, best, logs, data, config)
    return StageResult(test_accuracy=logs["test_accuracy"][-1], history=logs,
                       monitor=None if train_data else monitor.history if monitor else {},
                       selection=selection, selected_weights=best.weights if best else None)


def select(train_model, best, logs, data, config):
    """The selection of a stage (`StageResult.selection`): the best epoch, its validation
    accuracy, and the clean test accuracy of its classifier (from the epoch's logs, or
    evaluated now where --test_every skipped that epoch)."""
    if best.epoch is None:
        return None
    accuracy = logs["test_accuracy"][best.epoch - 1]
    if accuracy != accuracy:  # not evaluated that epoch
        classifier = train_model.classifier
        last = classifier.get_weights()
        classifier.set_weights(best.weights)
        accuracy = float(train_model.evaluate(data.test_dataset(config.batch_size), verbose=0,
                                              return_dict=True)["accuracy"])
        classifier.set_weights(last)
    return {"epoch": best.epoch, "validation_accuracy": best.value["val_accuracy"],
            "test_accuracy": accuracy}


def train_cross_entropy(config, data, labels, stage="stage1"):
    """Stage 1: plain CE on the observed `labels`. Returns (classifier, StageResult).

    With clean examples mixed in (`views.FileData`, row #8) they are half of every
    batch here too, so the CE baseline sees the same data as the method. `stage` names
    its backup and TensorBoard folders (a fold of `fold_probs` is trained so too).
    """
    with model_scope(config):
        classifier = new_classifier(config, data)
        ce = model.CrossEntropyModel(classifier, weight_decay=config.weight_decay)
    return classifier, fit(ce, config, data, labels, stage)


def fold_stage(purpose, k):
    """The stage name of fold `k` (1-based) of `fold_probs` for `purpose` ("psi",
    "audit"): its backup and TensorBoard folders."""
    return f"{purpose}_fold{k}"


def fold_probs(config, data, labels, folds, purpose, others=()):
    """Out-of-sample class probabilities, float32 [N + M, K]: the N training rows, then
    the M rows of `others` (`views.AuditedSplit`s, in order: the validation and test rows
    the label audit checks, on which no fold trains).

    The N rows are split into `folds` folds stratified by the observed label
    (`holdout.fold_rows`, seeded by --seed). For each fold a classifier is trained as
    stage 1 is (the same recipe, initial weights and validation split) on the other
    folds' rows, and its last epoch predicts the fold's un-augmented rows and `others`:
    no row's probabilities come from a network that saw its label (`out_of_sample`
    combines them). A fold resumes from its backup (`fold_stage(purpose, k)`); the
    caller removes the backups.
    """
    from idn_tf.data import holdout
    n, everything = len(labels), np.arange(len(labels))
    parts = holdout.fold_rows(labels, folds, config.seed)
    held_probs, other_probs = [], []
    for k, rows in enumerate(parts, 1):
        runfolder.banner(f"{purpose} fold {k} of {folds}: cross-entropy on {n - len(rows)} "
                         f"rows, predicting the other {len(rows)}"
                         + (f" and {sum(len(o) for o in others)} more" if others else ""))
        view, fit_labels = data.without(rows, labels)
        classifier, _ = train_cross_entropy(config, view, fit_labels,
                                            stage=fold_stage(purpose, k))
        held, _ = data.without(np.setdiff1d(everything, rows), labels)
        held_probs.append(examples_probs(classifier, [held], config.batch_size,
                                         data.num_classes))
        other_probs.append(examples_probs(classifier, [o.examples for o in others],
                                          config.batch_size, data.num_classes))
    return out_of_sample(parts, held_probs, other_probs)


def out_of_sample(parts, held_probs, other_probs):
    """The table of `fold_probs` [N + M, K] float32 from its folds' predictions: row i < N
    from the classifier of the fold holding i (`held_probs[k]` [len(parts[k]), K], the
    probabilities of the rows `parts[k]` in order), rows N.. the mean over the folds of
    `other_probs[k]` [M, K]. As a loop: for every fold k and j, probs[parts[k][j]] =
    held_probs[k][j]; probs[N + m] = Σ_k other_probs[k][m] / folds."""
    n = sum(len(rows) for rows in parts)
    train = np.zeros((n, held_probs[0].shape[1]), np.float32)
    for rows, probs in zip(parts, held_probs):
        train[rows] = probs
    return np.concatenate([train, np.mean(other_probs, axis=0, dtype=np.float64)]
                          ).astype(np.float32)


def examples_probs(classifier, examples, batch_size, num_classes):
    """softmax of `classifier` on each of `examples` (views' un-augmented examples, in
    order), concatenated: float32 [M, K]."""
    probs = [np.exp(model.example_log_probs(classifier, e, batch_size)) for e in examples]
    return np.concatenate(probs) if probs else np.zeros((0, num_classes), np.float32)


def crossval_psi(config, data, labels, folds):
    """Out-of-sample ψ (--psi_source=crossval, docs/method.md §7.6): float32 [N], each
    row's probability of its observed label by the `fold_probs` classifier that did not
    see it."""
    return observed_probability(fold_probs(config, data, labels, folds, "psi"), labels)


def selected_psi(config, data, labels, weights):
    """ψ of stage 1's classifier with `weights` (the epoch chosen on the validation split:
    --psi_source=selected, docs/method.md §7.6), as --psi_mode says."""
    classifier = new_classifier(config, data)
    classifier.set_weights(weights)
    if config.psi_mode == "train":
        return train_mode_psi(config, data, labels, classifier)
    return estimate_psi(classifier, data, labels, config.batch_size)


def train_mode_psi(config, data, labels, classifier):
    """ψ as the authors' code estimates it (--psi_mode=train): `classifier` in training
    mode (batch statistics, dropout on) over one epoch of augmented, shuffled training
    batches (`data.train_dataset`, the first epoch's order of --seed), float32 [N].

    The call updates the moving statistics of batch normalisation; they are restored, so
    `classifier` is unchanged. Rows drawn twice in the epoch (oversampling) keep their
    last draw; mixed-in clean rows (index ≥ N) are not ψ rows.
    """
    n = len(labels)
    psi = np.full(n, np.nan, np.float32)
    saved = [w.numpy() for w in classifier.non_trainable_weights]
    forward = tf.function(lambda x: tf.nn.log_softmax(
        tf.cast(classifier(x, training=True), tf.float32)))
    try:
        for batch in data.train_dataset(labels, config.batch_size, config.seed, epochs=1):
            ids = batch["index"].numpy()
            keep = ids < n
            probs = np.exp(forward(batch["image"]).numpy())
            psi[ids[keep]] = observed_probability(probs[keep], labels[ids[keep]])
    finally:
        for weight, value in zip(classifier.non_trainable_weights, saved):
            weight.assign(value)
    if np.isnan(psi).any():
        raise ValueError(f"{int(np.isnan(psi).sum())} training rows were not in the epoch")
    return psi


def estimate_transition(classifier, examples, batch_size, percentile):
    """Forward's T estimated from `classifier`'s probabilities on the un-augmented
    training examples (`transition.estimate_transition_matrix`)."""
    probs = np.exp(model.example_log_probs(classifier, examples, batch_size))
    return transition.estimate_transition_matrix(probs, percentile).astype(np.float32)


def finetune_config(config):
    """The configuration of the clean fine-tuning: its epochs, at a constant learning rate."""
    return dataclasses.replace(config, epochs=config.finetune_clean_epochs,
                               lr=config.finetune_lr, lr_decay_epochs=())


def finetune(config, data, trained):
    """Row #10: cross-entropy on the clean training set, from `trained`'s weights.

    Trains a new classifier (`trained` is left as it is, for the label audit) on
    `data.clean_train_dataset` with the recipe's optimiser, weight decay and batch size,
    for --finetune_clean_epochs epochs at the constant --finetune_lr. Returns
    (classifier, StageResult).
    """
    ft = finetune_config(config)
    with model_scope(config):
        classifier = new_classifier(config, data)
        classifier.set_weights(trained.get_weights())
        ce = model.CrossEntropyModel(classifier, weight_decay=config.weight_decay)

    def clean_batches(initial_epoch):
        return (data.clean_train_dataset(ft.batch_size, ft.seed, ft.epochs, initial_epoch),
                data.clean_steps_per_epoch(ft.batch_size))

    return classifier, fit(ce, ft, data, None, "finetune", train_data=clean_batches)


def validation_right(classifiers, data, batch_size):
    """[bool [n] per classifier]: whether each of `classifiers`' arg max is the observed
    label of each image of the validation split (`data.validation_dataset`, in its
    order), its images read once."""
    batches = data.validation_dataset(batch_size).cache()
    labels = np.concatenate([batch["label"].numpy() for batch in batches])
    return [model.predict_log_probs_dataset(c, batches).argmax(axis=1) == labels
            for c in classifiers]


def estimate_psi(classifier, examples, labels, batch_size):
    """ψ_i = softmax(h⁰(x_i))[ỹ_i] on un-augmented training examples, float32 [N].

    `examples`: the training images (uint8 [N, ...]) or a data view (`data.views`).
    """
    log_probs = model.example_log_probs(classifier, examples, batch_size)
    return observed_probability(np.exp(log_probs), labels)


def observed_probability(probs, labels):
    """ψ_i = probs[i, ỹ_i] [N] float32, floored at the smallest normal float32: exp() can
    underflow to 0, and with η_i = 1, ψ_i = 0 would give every class weight 0 in Eq. 8
    (q = 0/0)."""
    psi = np.asarray(probs)[np.arange(len(labels)), labels].astype(np.float32)
    return np.maximum(psi, np.finfo(np.float32).tiny)


def posterior_table(classifier, examples, labels, eta, psi, batch_size, numerics):
    """q for every training example (Eq. 8) from the final classifier, η and ψ: [N, K].

    `examples` as in `estimate_psi`; `eta` and `psi` are the N examples' rows;
    `numerics`: --eta_numerics (`posterior.NUMERICS`).
    """
    log_probs = model.example_log_probs(classifier, examples, batch_size)
    return posterior.posterior_from_log_probs(log_probs, labels, eta, psi, numerics).numpy()
