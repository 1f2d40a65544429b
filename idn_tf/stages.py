"""The method's two training stages (SPEC §2), the baselines' stage, and row #10's
clean fine-tuning.

Stage 1 trains a classifier with plain cross-entropy on the observed labels;
its test accuracy is the CE baseline and its predictions on the un-augmented
training images give ψ. Stage 2 trains a fresh classifier (same backbone,
initialisation, optimiser and data order) as an `IDNModel`. A baseline
(`train_method`) trains in place of stage 2: Forward, Bootstrapping, Co-teaching
(with a second network), PENCIL and Tanaka's two phases a fresh classifier, L_DMI
the stage-1 one. `finetune` trains a copy of the final
classifier with cross-entropy on a clean training set.
The data come through a view (`data.views`): arrays in memory or streamed files.
"""

import dataclasses
import os
import shutil

import keras
import numpy as np

from idn_tf import (baselines, callbacks, coteaching, distribution, model, posterior, soft_labels,
                    transition)
from idn_tf.config import ConfigError
from idn_tf.data import views
from idn_tf.models import build_classifier
from idn_tf.models.resnet50 import BackboneError


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage leaves behind besides its model."""
    test_accuracy: float   # clean test accuracy after the last epoch
    history: dict          # per-epoch logs from keras History
    monitor: dict          # per monitored epoch: callbacks.MonitorCallback.history


# Co-teaching's second network is initialised as new_classifier with --seed + this.
PEER_SEED_OFFSET = 10007


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
    the old lr.
    """
    return keras.optimizers.SGD(learning_rate=learning_rate(config, steps_per_epoch),
                                momentum=config.momentum)


def backup_dir(config, stage):
    """Where a stage's BackupAndRestore keeps its last complete epoch."""
    return os.path.join(config.run_dir, "backup", stage)


def monitoring(config, data, labels, stage, resuming):
    """TensorBoard callbacks of one stage, under <run_dir>/tb/<stage>/ (chief only).

    Keras's TensorBoard writes loss, accuracy, learning rate (and η logs) to
    train/ and validation/; `MonitorCallback` writes the label monitoring to
    monitor/. A stage trained again from its first epoch starts a fresh folder, so
    its curves are not drawn over an earlier attempt's; a resumed stage appends.
    `labels` None: no MonitorCallback (a stage not trained on the noisy labels).
    Returns (callbacks, the MonitorCallback or None).
    """
    if not distribution.is_chief(config.strategy):
        return [], None
    log_dir = os.path.join(config.run_dir, "tb", stage)
    if not resuming:
        shutil.rmtree(log_dir, ignore_errors=True)
    board = keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0)
    if labels is None:
        return [board], None
    monitor = callbacks.MonitorCallback(
        os.path.join(log_dir, "monitor"), data, labels, data.train.clean_labels,
        data.class_names, config.batch_size, every=config.monitor_every)
    return [board, monitor], monitor


def _fit(train_model, config, data, labels, stage, extra_callbacks=(), train_data=None):
    """Trains `train_model` for the stage, resuming from its backup if there is one.

    The training batches are `data.train_dataset` of the noisy `labels`, or
    `train_data(initial_epoch)` -> (dataset, steps per epoch) when given (then the
    stage is not monitored against `labels`).

    The backup (`backup_dir(config, stage)`) is left in place: the caller removes it
    once the stage's results are safely written, so a kill in between loses nothing.
    A caller that trains twice in one run folder must remove it in between.
    """
    backup_path = backup_dir(config, stage)
    initial_epoch, _ = callbacks.Backup.latest(backup_path)
    if initial_epoch:
        print(f"resuming {stage} after epoch {initial_epoch} from {backup_path}", flush=True)
    board, monitor = monitoring(config, data, None if train_data else labels, stage,
                                resuming=initial_epoch > 0)
    backup = callbacks.Backup(backup_path, monitor=monitor,
                              write=distribution.is_chief(config.strategy))
    if train_data is None:
        train_ds = data.train_dataset(labels, config.batch_size, config.seed, config.epochs,
                                      initial_epoch)
        steps_per_epoch = data.steps_per_epoch(labels, config.batch_size)
    else:
        train_ds, steps_per_epoch = train_data(initial_epoch)
    test_ds = data.test_dataset(config.batch_size)
    with distribution.get_strategy(config.strategy).scope():
        train_model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                            jit_compile=config.jit_compile)
    # Order matters: PGACallback adds eta_update to the logs before TensorBoard reads
    # them, and Backup saves the monitor's history after the monitor has run.
    train_model.fit(
        train_ds, validation_data=test_ds, epochs=config.epochs, initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch, verbose=config.verbose,
        shuffle=False,  # the dataset orders each epoch itself, from (seed, epoch)
        callbacks=[keras.callbacks.TerminateOnNaN(), *extra_callbacks, *board, backup])
    if train_model.stop_training:
        good, _ = callbacks.Backup.latest(backup_path)
        kept = (f"epoch {good}, the last good one, is kept in {backup_path}" if good
                else "no epoch had finished with a finite loss")
        raise FloatingPointError(f"{stage} stopped: the loss became NaN or infinite; {kept} "
                                 "(a smaller --lr or --eta_lr needs --overwrite or another "
                                 "--run_dir)")
    logs = backup.history
    return StageResult(test_accuracy=logs["val_accuracy"][-1], history=logs,
                       monitor=monitor.history if monitor is not None else {})


def train_cross_entropy(config, data, labels):
    """Stage 1: plain CE on the observed `labels`. Returns (classifier, StageResult).

    With clean examples mixed in (`views.FileData`, row #8) they are half of every
    batch here too, so the CE baseline sees the same data as the method.
    """
    keras.utils.set_random_seed(config.seed)
    with distribution.get_strategy(config.strategy).scope():
        classifier = new_classifier(config, data)
        ce = model.CrossEntropyModel(classifier, weight_decay=config.weight_decay)
    return classifier, _fit(ce, config, data, labels, "stage1")


def new_idn_model(config, data, psi):
    """A fresh stage-2 `IDNModel` (same initial classifier weights as stage 1).

    `psi` [N] covers the noisy examples; the view adds the rows of mixed-in clean
    examples (ψ 1, η 0).
    """
    keras.utils.set_random_seed(config.seed)
    with distribution.get_strategy(config.strategy).scope():
        return model.IDNModel(
            new_classifier(config, data), psi=data.table_psi(psi),
            eta_init=data.initial_eta(config.eta_init), eta_lr=config.eta_lr,
            eta_rule=config.eta_rule, eta_eps=config.eta_eps, eta_min=config.eta_min,
            weight_decay=config.weight_decay)


def train_idn(config, data, labels, psi):
    """Stage 2: `IDNModel` with the PGA schedule. Returns (IDNModel, StageResult)."""
    idn = new_idn_model(config, data, psi)
    schedule = callbacks.pga_schedule(config.eta_start_epoch, config.eta_every)
    return idn, _fit(idn, config, data, labels, "stage2", [callbacks.PGACallback(schedule)])


def method_config(config):
    """The configuration of a baseline's stage: L_DMI trains at the constant --dmi_lr."""
    if config.method == "ldmi":
        return dataclasses.replace(config, lr=config.dmi_lr, lr_decay_epochs=())
    return config


def tanaka_labels_config(config):
    """Tanaka's first phase: --epochs at the constant --lr (the authors' "high learning
    rate", which keeps the network from fitting the noisy labels before they change)."""
    return dataclasses.replace(config, lr_decay_epochs=())


def new_method_model(config, data, labels=None, transition=None, warm=None, soft=None):
    """The Keras model of --method (a baseline), around a fresh classifier.

    forward needs `transition` (T [K, K]); ldmi starts from the weights of `warm`
    (the stage-1 CE classifier); tanaka and pencil need the observed `labels` [N]
    (their tables' rows); tanaka with `soft` [N, K] is its second phase
    (`soft_labels.SoftTargetModel`: cross-entropy on those soft labels). The others start from the
    same initial weights as stage 1; Co-teaching's second network from other ones.
    """
    keras.utils.set_random_seed(config.seed)
    with distribution.get_strategy(config.strategy).scope():
        classifier = new_classifier(config, data)
        wd, k = config.weight_decay, data.num_classes
        if config.method == "forward":
            return baselines.ForwardModel(classifier, transition, weight_decay=wd)
        if config.method in ("bootstrap_soft", "bootstrap_hard"):
            hard = config.method == "bootstrap_hard"
            beta = config.bootstrap_hard_beta if hard else config.bootstrap_soft_beta
            return baselines.BootstrapModel(classifier, beta, hard, weight_decay=wd)
        if config.method == "ldmi":
            classifier.set_weights(warm.get_weights())
            return baselines.DMIModel(classifier, eps=config.dmi_eps, weight_decay=wd)
        if config.method == "coteaching":
            peer = new_classifier(config, data, seed=config.seed + PEER_SEED_OFFSET)
            return coteaching.CoTeachingModel(classifier, peer, weight_decay=wd)
        if config.method == "tanaka" and soft is not None:
            return soft_labels.SoftTargetModel(classifier, soft, k, weight_decay=wd)
        if config.method == "tanaka":
            return soft_labels.TanakaModel(classifier, labels, k, alpha=config.tanaka_alpha,
                                           beta=config.tanaka_beta, weight_decay=wd)
        if config.method == "pencil":
            return soft_labels.PencilModel(classifier, labels, k, alpha=config.pencil_alpha,
                                           beta=config.pencil_beta,
                                           label_lr=config.pencil_step(), weight_decay=wd)
    raise ValueError(f"not a baseline with a stage of its own: {config.method!r}")


def method_callbacks(config, forget_rate=None):
    """The callbacks that drive a baseline's schedule: Co-teaching's R(t) (to
    `forget_rate` τ), Tanaka's label updates, PENCIL's phases."""
    if config.method == "coteaching":
        return [coteaching.ForgetRateCallback(forget_rate, config.coteaching_t_k)]
    if config.method == "tanaka":
        return [soft_labels.TanakaLabelUpdate(config.tanaka_start())]
    if config.method == "pencil":
        return [soft_labels.PencilPhase(*config.pencil_phases())]
    return []


def train_method(config, data, labels, transition=None, warm=None, forget_rate=None,
                 soft=None):
    """A baseline's stage, named after it (backup, TensorBoard): (model, StageResult).

    Tanaka's second phase is this with its `soft` labels; its first is `train_tanaka_labels`.
    """
    trained = new_method_model(config, data, labels=labels, transition=transition, warm=warm,
                               soft=soft)
    extra = method_callbacks(config, forget_rate) if soft is None else []
    return trained, _fit(trained, method_config(config), data, labels, config.method, extra)


def train_tanaka_labels(config, data, labels):
    """Tanaka's first phase (stage "tanaka_labels"): the network and the soft labels
    learned jointly. Returns (TanakaModel, StageResult); its `labels_table` holds the
    final soft labels."""
    trained = new_method_model(config, data, labels=labels)
    return trained, _fit(trained, tanaka_labels_config(config), data, labels, "tanaka_labels",
                         method_callbacks(config))


def soft_label_table(trained):
    """The soft labels [N, K] a Tanaka or PENCIL model ends with (PENCIL: softmax of ỹ)."""
    if isinstance(trained, soft_labels.PencilModel):
        logits = trained.label_table.numpy().astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    return trained.labels_table.numpy()


def estimate_transition(classifier, examples, batch_size, percentile):
    """Forward's T estimated from `classifier`'s probabilities on the un-augmented
    training examples (`transition.estimate_transition_matrix`)."""
    probs = np.exp(views.as_examples(examples).log_probs(classifier, batch_size))
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
    keras.utils.set_random_seed(config.seed)
    with distribution.get_strategy(config.strategy).scope():
        classifier = new_classifier(config, data)
        classifier.set_weights(trained.get_weights())
        ce = model.CrossEntropyModel(classifier, weight_decay=config.weight_decay)

    def clean_batches(initial_epoch):
        return (data.clean_train_dataset(ft.batch_size, ft.seed, ft.epochs, initial_epoch),
                data.clean_steps_per_epoch(ft.batch_size))

    return classifier, _fit(ce, ft, data, None, "finetune", train_data=clean_batches)


def estimate_psi(classifier, examples, labels, batch_size):
    """ψ_i = softmax(h⁰(x_i))[ỹ_i] on un-augmented training examples, float32 [N].

    `examples`: the training images (uint8 [N, ...]) or a data view (`data.views`).
    """
    log_probs = views.as_examples(examples).log_probs(classifier, batch_size)
    psi = np.exp(log_probs[np.arange(len(labels)), labels]).astype(np.float32)
    # exp() can underflow to 0; with η_i = 1, ψ_i = 0 would give every class weight
    # 0 in Eq. 8 (q = 0/0). The smallest normal float32 keeps q defined.
    return np.maximum(psi, np.finfo(np.float32).tiny)


def posterior_table(classifier, examples, labels, eta, psi, batch_size):
    """q for every training example (Eq. 8) from the final classifier, η and ψ: [N, K].

    `examples` as in `estimate_psi`; `eta` and `psi` are the N examples' rows.
    """
    log_probs = views.as_examples(examples).log_probs(classifier, batch_size)
    return posterior.posterior_from_log_probs(log_probs, labels, eta, psi).numpy()
