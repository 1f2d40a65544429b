"""PENCIL (Yi & Wu, CVPR 2019): label logits learned with the network, in three phases
(`soft_labels.PencilModel`, `soft_labels.PencilPhase`); soft_labels.npy holds
softmax(ỹ) at the end.

The learning rate (--pencil_lr_schedule): `authors`, that of the authors' code
(`authors_learning_rate`), constant through phases 1 and 2 and restarted for phase 3;
`recipe`, the recipe's step decay through every phase.
"""

import numpy as np

from idn_tf.errors import check
from idn_tf.methods.base import SOFT_LABEL_ROWS, Method, soft_label_rates, without_step_decay
from idn_tf.methods.tanaka import scaled

# The authors' schedule (CIFAR-10), as (epochs before the event, of the total): phase 2
# after epoch 70 of 320 and phase 3 after epoch 200, with λ = 600 at batch size 128.
JOINT, FINETUNE = (70, 320), (200, 320)
LAMBDA, BATCH, JOINT_EPOCHS = 600.0, 128, 130
# The authors' learning rates (PENCIL.py, adjust_learning_rate): 0.06 until phase 3, which
# restarts at 0.2 and divides it by 10 after each third of its epochs. Here phases 1-2 run
# at --lr and phase 3 restarts at --lr × 0.2 / 0.06.
LR, LR2 = 0.06, 0.2
LR_SCHEDULES = ("authors", "recipe")


def authors_learning_rate(epoch, lr, finetune_start, epochs):
    """The learning rate of the 0-based `epoch` under the authors' schedule: `lr` before
    the 1-based epoch `finetune_start` (phases 1 and 2); in phase 3, of L = epochs −
    finetune_start + 1 epochs, lr·LR2/LR for its first L // 3 epochs, a tenth of that until
    epoch 2L // 3 of the phase, a hundredth after (the authors' integer thirds: 40, 40 and
    40 of their 120)."""
    into = epoch + 1 - finetune_start  # 0-based epoch within phase 3 (< 0: before it)
    if into < 0:
        return float(lr)
    length = epochs - finetune_start + 1
    restart = lr * LR2 / LR
    if into < length // 3:
        return float(restart)
    return float(restart / 10 if into < 2 * length // 3 else restart / 100)


class Pencil(Method):
    name = "pencil"
    title = "PENCIL"
    row = "PENCIL test accuracy"
    about = "PENCIL (Yi & Wu 2019), three phases"
    # 0 for λ and the phase starts: the authors' values scaled (`phases`, `step`).
    fields = {"pencil_alpha": 0.4, "pencil_beta": 0.1, "pencil_lambda": 0.0,
              "pencil_joint_start": 0, "pencil_finetune_start": 0,
              "pencil_lr_schedule": "authors"}
    files = ("soft_labels.npy",)
    rows = SOFT_LABEL_ROWS

    def phases(self, config):
        """(first epoch of phase 2, of phase 3), 1-based: the flags, or the authors' (after
        epochs 70 and 200 of 320) scaled to --epochs."""
        joint = config.pencil_joint_start or scaled(config.epochs, *JOINT)
        return joint, config.pencil_finetune_start or max(joint,
                                                          scaled(config.epochs, *FINETUNE))

    def step(self, config):
        """λ: --pencil_lambda, or the authors' 600 at batch 128 over 130 phase-2 epochs
        rescaled so that a row's label logits move as far over phase 2 as theirs: each
        epoch moves a row by λ/B × its gradient, so λ·(phase-2 epochs)/B is kept."""
        if config.pencil_lambda:
            return config.pencil_lambda
        joint, finetune = self.phases(config)
        return LAMBDA * (config.batch_size / BATCH) * (JOINT_EPOCHS / max(finetune - joint, 1))

    def check(self, c):
        check(c.pencil_lr_schedule in LR_SCHEDULES, "pencil_lr_schedule",
              f"one of {', '.join(LR_SCHEDULES)}, got {c.pencil_lr_schedule!r}")
        for name in ("pencil_alpha", "pencil_beta"):
            check(getattr(c, name) >= 0, name, f"must be >= 0, got {getattr(c, name)}")
        check(c.pencil_lambda >= 0, "pencil_lambda",
              f"must be positive (0: scaled from the authors'), got {c.pencil_lambda}")
        for name in ("pencil_joint_start", "pencil_finetune_start"):
            check(getattr(c, name) >= 0, name, "must be a 1-based epoch, or 0 (scaled from "
                  f"the authors' schedule), got {getattr(c, name)}")
        if c.method == self.name:  # checked against --epochs only where they are used
            joint, finetune = self.phases(c)
            check(joint <= c.epochs + 1, "pencil_joint_start",
                  f"must be in [1, --epochs + 1 = {c.epochs + 1}], got {c.pencil_joint_start}")
            check(joint <= finetune <= c.epochs + 1, "pencil_finetune_start",
                  f"must be in [the first epoch of phase 2 ({joint}), --epochs + 1 = "
                  f"{c.epochs + 1}], got {c.pencil_finetune_start}")

    def needs_stage1(self, config):
        return False

    def describe(self, config):
        joint, finetune = self.phases(config)
        rates = ("the recipe's learning rates" if config.pencil_lr_schedule == "recipe" else
                 f"lr {config.lr:g} until phase 3, then {config.lr * LR2 / LR:g} ÷10 after "
                 "each third of it (the authors')")
        return (f"pencil: phase 2 from epoch {joint}, phase 3 from epoch {finetune}; "
                f"λ = {self.step(config):g}; {rates}")

    def stage_config(self, config):
        # The authors' schedule is set epoch by epoch (`callbacks`) on a constant rate.
        return without_step_decay(config) if config.pencil_lr_schedule == "authors" else config

    def build(self, run, inputs):
        from idn_tf import soft_labels, stages
        config = run.config
        return soft_labels.PencilModel(stages.new_classifier(config, run.data), run.labels,
                                       run.data.num_classes, alpha=config.pencil_alpha,
                                       beta=config.pencil_beta, label_lr=self.step(config),
                                       weight_decay=config.weight_decay)

    def callbacks(self, run, inputs):
        import keras

        from idn_tf import soft_labels
        config = run.config
        phase = [soft_labels.PencilPhase(*self.phases(config))]
        if config.pencil_lr_schedule == "recipe":
            return phase
        finetune = self.phases(config)[1]

        def schedule(epoch, current):  # Keras's (0-based epoch, current rate) signature
            return authors_learning_rate(epoch, config.lr, finetune, config.epochs)

        # Sets the rate at each epoch's start (from the absolute epoch: a resumed stage
        # gets the same) and logs it as learning_rate.
        return phase + [keras.callbacks.LearningRateScheduler(schedule)]

    def finish(self, run, model):
        """soft_labels.npy: softmax of the learned label logits, and how they compare."""
        from idn_tf import artifacts
        soft = soft_label_table(model.label_table.numpy())
        run.folder.write(artifacts.write_npy, "soft_labels.npy", soft)
        return soft_label_rates(soft, run.labels, run.data.train.clean_labels)


def soft_label_table(logits):
    """softmax of label logits [N, K], in float64 then float32 (PENCIL's y^d)."""
    logits = np.asarray(logits, np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


METHOD = Pencil()
