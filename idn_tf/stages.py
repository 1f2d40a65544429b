"""The method's two training stages (SPEC §2) on in-memory data.

Stage 1 trains a classifier with plain cross-entropy on the observed labels;
its test accuracy is the CE baseline and its predictions on the un-augmented
training images give ψ. Stage 2 trains a fresh classifier (same backbone,
initialisation, optimiser and data order) as an `IDNModel`.
"""

import dataclasses
import os
import shutil

import keras
import numpy as np

from idn_tf import callbacks, model, posterior
from idn_tf.data import pipeline
from idn_tf.config import ConfigError
from idn_tf.models import build_classifier, pixel_statistics
from idn_tf.models.resnet50 import BackboneError


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage leaves behind besides its model."""
    test_accuracy: float   # clean test accuracy after the last epoch
    history: dict          # per-epoch logs from keras History
    monitor: dict          # per monitored epoch: callbacks.MonitorCallback.history


def new_classifier(config, dataset):
    """A freshly initialised classifier; both stages start from the same weights."""
    mean, std = pixel_statistics(dataset.train.images)
    if config.normalize == "subtract_mean":
        std = np.ones_like(std)
    try:
        return build_classifier(config.arch, dataset.train.images.shape[1:],
                                dataset.num_classes, mean, std, seed=config.seed,
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


def monitoring(config, dataset, labels, stage):
    """TensorBoard callbacks of one stage, under <run_dir>/tb/<stage>/.

    Keras's TensorBoard writes loss, accuracy, learning rate (and η logs) to
    train/ and validation/; `MonitorCallback` writes the label monitoring to
    monitor/. A stage that is trained again starts a fresh folder, so its
    curves are not drawn over an earlier attempt's.
    """
    log_dir = os.path.join(config.run_dir, "tb", stage)
    shutil.rmtree(log_dir, ignore_errors=True)
    monitor = callbacks.MonitorCallback(
        os.path.join(log_dir, "monitor"), dataset.train.images, labels,
        dataset.train.clean_labels, dataset.class_names, config.batch_size,
        every=config.monitor_every)
    board = keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0)
    return [board, monitor]


def _fit(train_model, config, dataset, labels, extra_callbacks=()):
    train_ds = pipeline.train_dataset(dataset.train.images, labels, dataset.train.clean_labels,
                                      config.batch_size, seed=config.seed,
                                      augment=config.augment, padding=config.crop_padding)
    test_ds = pipeline.eval_dataset(dataset.test.images, dataset.test.labels, config.batch_size)
    steps_per_epoch = -(-len(labels) // config.batch_size)
    train_model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                        jit_compile=config.jit_compile)
    history = train_model.fit(
        train_ds, validation_data=test_ds, epochs=config.epochs, verbose=config.verbose,
        shuffle=False,  # the dataset shuffles itself, seeded
        callbacks=[keras.callbacks.TerminateOnNaN(), *extra_callbacks])
    if train_model.stop_training:
        raise FloatingPointError("training stopped: the loss became NaN or infinite "
                                 "(try a smaller --lr or --eta_lr)")
    logs = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    monitors = [c for c in extra_callbacks if isinstance(c, callbacks.MonitorCallback)]
    return StageResult(test_accuracy=logs["val_accuracy"][-1], history=logs,
                       monitor=monitors[0].history if monitors else {})


def train_cross_entropy(config, dataset, labels):
    """Stage 1: plain CE on the observed `labels`. Returns (classifier, StageResult)."""
    keras.utils.set_random_seed(config.seed)
    classifier = new_classifier(config, dataset)
    result = _fit(model.CrossEntropyModel(classifier, weight_decay=config.weight_decay),
                  config, dataset, labels, monitoring(config, dataset, labels, "stage1"))
    return classifier, result


def train_idn(config, dataset, labels, psi):
    """Stage 2: `IDNModel` with the PGA schedule. Returns (IDNModel, StageResult)."""
    keras.utils.set_random_seed(config.seed)
    idn = model.IDNModel(
        new_classifier(config, dataset), psi=psi, eta_init=config.eta_init,
        eta_lr=config.eta_lr, eta_rule=config.eta_rule, eta_eps=config.eta_eps,
        eta_min=config.eta_min, weight_decay=config.weight_decay)
    schedule = callbacks.pga_schedule(config.eta_start_epoch, config.eta_every)
    # PGACallback first: it adds eta_update to the epoch's logs before TensorBoard reads them.
    result = _fit(idn, config, dataset, labels,
                  [callbacks.PGACallback(schedule), *monitoring(config, dataset, labels, "stage2")])
    return idn, result


def estimate_psi(classifier, images, labels, batch_size):
    """ψ_i = softmax(h⁰(x_i))[ỹ_i] on un-augmented training images, float32 [N]."""
    log_probs = model.predict_log_probs(classifier, images, batch_size)
    psi = np.exp(log_probs[np.arange(len(labels)), labels]).astype(np.float32)
    # exp() can underflow to 0; with η_i = 1, ψ_i = 0 would give every class weight
    # 0 in Eq. 8 (q = 0/0). The smallest normal float32 keeps q defined.
    return np.maximum(psi, np.finfo(np.float32).tiny)


def posterior_table(classifier, images, labels, eta, psi, batch_size):
    """q for every training example (Eq. 8) from the final classifier, η and ψ: [N, K]."""
    log_probs = model.predict_log_probs(classifier, images, batch_size)
    return posterior.posterior_from_log_probs(log_probs, labels, eta, psi).numpy()
