"""Tanaka et al. (CVPR 2018), "joint optimisation": two phases (`soft_labels`).

Phase 1 (stage "tanaka_labels"): the network and per-example soft labels learned
together at a constant learning rate, half of --lr by default: the authors' first step
runs at half their second step's rate (their code: 0.1 and 0.2), and their loss'
prior and entropy terms give it steps well above cross-entropy's (docs/baselines.md).
From --tanaka_start_epoch each soft label becomes the mean prediction of the last
--tanaka_average_epochs epochs (`TanakaModel`). The final soft labels go to
soft_labels.npy. Phase 2 (stage "tanaka"): a fresh network trained with cross-entropy
on them, with the recipe's schedule (`SoftTargetModel`).
"""

import dataclasses
import os

import numpy as np

from idn_tf.errors import ConfigError, check
from idn_tf.methods.base import SOFT_LABEL_ROWS, Method, soft_label_rates
from idn_tf.methods.forward import sha256_file

# The authors' schedule, as (epochs before the first label update, of the total): after
# epoch 70 of 200 (CIFAR-10).
START = (70, 200)
# The authors' first-step learning rate over their second step's (their code's defaults,
# 0.1 and 0.2): phase 1's constant rate is this fraction of --lr unless --tanaka_lr.
FIRST_STEP_LR = 0.1 / 0.2
# --tanaka_prior besides a file: the authors' uniform p, or the observed class frequencies.
PRIORS = ("uniform", "observed")


def scaled(epochs, before, total):
    """The 1-based epoch after `before` of `total` epochs, scaled to `epochs` (halves up)."""
    return int(epochs * before / total + 0.5) + 1


class Tanaka(Method):
    name = "tanaka"
    title = "Tanaka"
    row = "Tanaka test accuracy (second phase)"
    about = "Tanaka et al.'s second phase: a fresh network on the learned soft labels"
    # tanaka_start_epoch 0: the authors' schedule scaled to --epochs (`start`); tanaka_lr 0:
    # FIRST_STEP_LR × --lr (`phase1_lr`).
    fields = {"tanaka_alpha": 1.2, "tanaka_beta": 0.8, "tanaka_start_epoch": 0,
              "tanaka_average_epochs": 10, "tanaka_prior": "uniform", "tanaka_lr": 0.0}
    derived_fields = ("tanaka_prior_sha256",)
    files = ("soft_labels.npy",)
    rows = SOFT_LABEL_ROWS

    @property
    def stage_names(self):
        return ("tanaka_labels", self.name)

    def start(self, config):
        """The first label update (1-based epoch): --tanaka_start_epoch, or the authors'
        (after epoch 70 of 200) scaled to --epochs."""
        return config.tanaka_start_epoch or scaled(config.epochs, *START)

    def phase1_lr(self, config):
        """Phase 1's constant learning rate: --tanaka_lr, or the authors' ratio of --lr."""
        return config.tanaka_lr or FIRST_STEP_LR * config.lr

    def check(self, c):
        for name in ("tanaka_alpha", "tanaka_beta", "tanaka_lr"):
            check(getattr(c, name) >= 0, name, f"must be >= 0, got {getattr(c, name)}")
        check(c.tanaka_average_epochs >= 1, "tanaka_average_epochs",
              f"must be >= 1 (1: each epoch's predictions alone), got {c.tanaka_average_epochs}")
        if c.tanaka_prior not in PRIORS:  # read by --method=tanaka only, but must exist
            check(os.path.isfile(c.tanaka_prior), "tanaka_prior",
                  f"must be {' or '.join(PRIORS)} or a file of K class probabilities; no "
                  f"such file: {c.tanaka_prior}")
        check(c.tanaka_start_epoch >= 0, "tanaka_start_epoch",
              "must be a 1-based epoch, or 0 (scaled from the authors' schedule), got "
              f"{c.tanaka_start_epoch}")
        if c.method == self.name:  # checked against --epochs only where it is used
            check(self.start(c) <= c.epochs, "tanaka_start_epoch",
                  f"must be in [1, --epochs={c.epochs}] (the first epoch whose predictions "
                  f"become the soft labels), got {c.tanaka_start_epoch}")

    def needs_stage1(self, config):
        return False

    def semantic_extra(self, config):
        if config.tanaka_prior in PRIORS:
            return {}
        return {"tanaka_prior_sha256": sha256_file(config.tanaka_prior)}

    def preflight(self, config, data):
        """A --tanaka_prior file, read and checked (float32 [K]), or None."""
        if config.tanaka_prior in PRIORS:
            return None
        return load_prior(config.tanaka_prior, data.num_classes)

    def class_prior(self, config, data, labels, given=None):
        """p [K]: the file's (`given`), uniform, or the observed labels' class frequencies
        over the rows an epoch visits (copies made by --oversample counted: the batch
        means that the prior term compares with p are over those rows)."""
        if given is not None:
            return given
        k = data.num_classes
        if config.tanaka_prior == "uniform":
            return np.full(k, 1.0 / k, np.float32)
        from idn_tf.data import streaming
        rows = streaming.oversample_indices(labels, getattr(data, "oversample", None))
        counts = np.bincount(np.asarray(labels)[rows], minlength=k)
        return (counts / counts.sum()).astype(np.float32)

    def prepare(self, run):
        return {"soft": self.learn_labels(run)}

    def phase1_config(self, config):
        """The configuration phase 1 trains with: the constant `phase1_lr`."""
        return dataclasses.replace(config, lr=self.phase1_lr(config), lr_decay_epochs=())

    def labels_model(self, run):
        """Phase 1's `TanakaModel`, built in the run's scope with the seed set."""
        from idn_tf import soft_labels, stages
        config, data = run.config, run.data
        prior = self.class_prior(config, data, run.labels, run.given)
        with stages.model_scope(config):
            return soft_labels.TanakaModel(
                stages.new_classifier(config, data), run.labels, data.num_classes,
                alpha=config.tanaka_alpha, beta=config.tanaka_beta, prior=prior,
                average_epochs=config.tanaka_average_epochs, weight_decay=config.weight_decay)

    def learn_labels(self, run):
        """Phase 1: the soft labels [N, K] (soft_labels.npy, tanaka_labels.json)."""
        from idn_tf import artifacts, runfolder, soft_labels, stages
        config, folder, data, labels = run.config, run.folder, run.data, run.labels
        phase1 = self.phase1_config(config)

        def fresh():
            model = self.labels_model(run)
            result = stages.fit(model, phase1, data, labels, "tanaka_labels",
                                [soft_labels.TanakaLabelUpdate(self.start(config))])
            soft = model.labels_table.numpy()
            print(f"tanaka, phase 1: test accuracy {100 * result.test_accuracy:.2f}%; the soft "
                  f"labels' arg max differs from the observed label for "
                  f"{np.mean(np.argmax(soft, axis=1) != labels):.2%} of the examples")
            return runfolder.Trained(model.classifier, result, model=model, value=soft,
                                     extra=soft_label_rates(soft, labels, data.train.clean_labels))

        def save(trained):
            folder.write(artifacts.write_npy, "soft_labels.npy", trained.value)

        def load(result, extra):
            soft = folder.array("soft_labels.npy", len(labels), data.num_classes)
            return runfolder.Trained(None, result, extra=extra, value=soft)

        return folder.stage(
            "tanaka_labels", "tanaka, phase 1", ("soft_labels.npy",), fresh, save, load,
            training=f"tanaka_labels: joint optimisation of network and soft labels (Tanaka "
                     f"et al. 2018) at the constant lr {phase1.lr:g}; labels updated from "
                     f"epoch {self.start(config)} to the mean prediction of the last "
                     f"{config.tanaka_average_epochs} epochs; prior {config.tanaka_prior}").value

    def build(self, run, inputs):
        from idn_tf import soft_labels, stages
        return soft_labels.SoftTargetModel(stages.new_classifier(run.config, run.data),
                                           inputs["soft"], run.data.num_classes,
                                           weight_decay=run.config.weight_decay)

    def extra(self, run, inputs, model):
        return soft_label_rates(inputs["soft"], run.labels, run.data.train.clean_labels)


def load_prior(path, num_classes):
    """--tanaka_prior's file (.npy, or text with spaces, commas or one value a line): K
    non-negative numbers summing to 1 (within 1e-3), returned float32 [K] renormalised;
    ConfigError naming the file otherwise."""
    from idn_tf import artifacts
    try:
        prior = np.asarray(artifacts.read_numbers(path), np.float64).reshape(-1)
    except (OSError, ValueError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--tanaka_prior={path}: {why}") from None
    if prior.shape != (num_classes,):
        raise ConfigError(f"--tanaka_prior={path}: needs {num_classes} class probabilities, "
                          f"got {prior.size}")
    if not (np.isfinite(prior).all() and (prior >= 0).all() and abs(prior.sum() - 1) <= 1e-3):
        raise ConfigError(f"--tanaka_prior={path}: must be non-negative and sum to 1, got sum "
                          f"{prior.sum():g}")
    return (prior / prior.sum()).astype(np.float32)


METHOD = Tanaka()
