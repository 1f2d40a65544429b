"""SOP (Liu et al., ICML 2022): per-example sparse over-parameterised label noise
s_i = u_i² ỹ_i − v_i² ⊙ (1 − ỹ_i) learned with a fresh network (`sop.SOPModel`).

Settings (docs/baselines.md, "sop"), from the authors' code (shengliu66/SOP):
- u, v: SGD at their own rates, no momentum, no weight decay; N(0, 1e-8²) at the start.
  --sop_lr_u / --sop_lr_v 0 (default): their CIFAR-10 rates (10 and 10, batch 128, 300
  epochs) rescaled so that a row moves as far over training as theirs: a row's step is
  lr/B times its gradient, once per epoch, so lr·epochs/B is kept. The CIFAR-100 recipes
  set their CIFAR-100 rates (1 and 10), scaled the same way (`config.RECIPES`).
- the network: --sop_lr_schedule=authors (default), their cosine annealing from --lr to
  --lr/100 over --epochs (CosineAnnealingLR, T_max = epochs, 0.02 → 0.0002); recipe: the
  recipe's step decay.
- --sop_balance: SOP+'s class-balance weight λ_b (their SOP+ 0.1; 0: SOP). SOP+'s
  consistency term needs two augmentations of each image per batch and is not done.
"""

import numpy as np

from idn_tf.errors import check
from idn_tf.methods.base import Method, without_step_decay

# The authors' CIFAR-10 rates of u and v, set for their batch size and epochs.
LR_U, LR_V, BATCH, EPOCHS = 10.0, 10.0, 128, 300
# Their cosine schedule ends at this fraction of the network's rate (0.0002 of 0.02).
LR_MIN_FRACTION = 0.01
LR_SCHEDULES = ("authors", "recipe")
ROWS = (("wrong training labels corrected by SOP's argmax(ỹ − s)", "sop_labels_corrected"),
        ("right training labels kept by SOP's argmax(ỹ − s)", "sop_labels_kept"))


def cosine_learning_rate(epoch, lr, epochs):
    """The network's rate in the 0-based `epoch` under the authors' schedule: cosine
    annealing from `lr` to lr·LR_MIN_FRACTION over `epochs` (torch CosineAnnealingLR
    stepped once per epoch: lr_min + (lr − lr_min)(1 + cos(π·epoch/epochs))/2)."""
    lr_min = lr * LR_MIN_FRACTION
    return float(lr_min + (lr - lr_min) * (1.0 + np.cos(np.pi * epoch / epochs)) / 2.0)


class SOP(Method):
    name = "sop"
    title = "SOP"
    row = "SOP test accuracy"
    about = "SOP (Liu et al. 2022), sparse over-parameterised label noise"
    fields = {"sop_lr_u": 0.0, "sop_lr_v": 0.0, "sop_init_std": 1e-8, "sop_balance": 0.0,
              "sop_lr_schedule": "authors"}
    rows = ROWS

    def rates(self, config):
        """(lr_u, lr_v): the flags, or the authors' rescaled to keep lr·epochs/B."""
        scale = (config.batch_size / BATCH) * (EPOCHS / config.epochs)
        return (config.sop_lr_u or LR_U * scale, config.sop_lr_v or LR_V * scale)

    def check(self, c):
        check(c.sop_lr_schedule in LR_SCHEDULES, "sop_lr_schedule",
              f"one of {', '.join(LR_SCHEDULES)}, got {c.sop_lr_schedule!r}")
        for name in ("sop_lr_u", "sop_lr_v"):
            check(getattr(c, name) >= 0, name, "must be positive (0: the authors' scaled to "
                  f"--batch_size and --epochs), got {getattr(c, name)}")
        check(c.sop_init_std > 0, "sop_init_std", f"must be positive, got {c.sop_init_std}")
        check(c.sop_balance >= 0, "sop_balance", f"must be >= 0, got {c.sop_balance}")

    def needs_stage1(self, config):
        return False

    def describe(self, config):
        lr_u, lr_v = self.rates(config)
        schedule = ("the recipe's learning rates" if config.sop_lr_schedule == "recipe" else
                    f"lr {config.lr:g} cosine-annealed to {config.lr * LR_MIN_FRACTION:g}")
        plus = f"; SOP+ class balance λ_b = {config.sop_balance:g}" if config.sop_balance else ""
        return f"sop: lr_u = {lr_u:g}, lr_v = {lr_v:g}; {schedule}{plus}"

    def stage_config(self, config):
        # The authors' schedule is set epoch by epoch (`callbacks`) on a constant rate.
        return without_step_decay(config) if config.sop_lr_schedule == "authors" else config

    def build(self, run, inputs):
        from idn_tf import sop, stages
        config = run.config
        lr_u, lr_v = self.rates(config)
        return sop.SOPModel(stages.new_classifier(config, run.data), len(run.labels),
                            run.data.num_classes, lr_u=lr_u, lr_v=lr_v,
                            balance=config.sop_balance, init_std=config.sop_init_std,
                            seed=config.seed, weight_decay=config.weight_decay)

    def callbacks(self, run, inputs):
        if run.config.sop_lr_schedule == "recipe":
            return []
        import keras
        config = run.config

        def schedule(epoch, current):  # Keras's (0-based epoch, current rate) signature
            return cosine_learning_rate(epoch, config.lr, config.epochs)

        # Set at each epoch's start from the absolute epoch (a resumed stage gets the same).
        return [keras.callbacks.LearningRateScheduler(schedule)]

    def finish(self, run, model):
        """How SOP's corrected labels argmax(ỹ − s) compare with the clean labels."""
        from idn_tf import report, sop
        labels = np.asarray(run.labels)
        s = sop.noise_estimate(model.u_table.numpy(), model.v_table.numpy(), labels)
        corrected = np.eye(s.shape[1], dtype=np.float32)[labels] - s
        rates = report.label_correction(corrected, labels, run.data.train.clean_labels)
        return {"sop_labels_corrected": rates["wrong_labels_corrected"],
                "sop_labels_kept": rates["right_labels_kept"]}


METHOD = SOP()
