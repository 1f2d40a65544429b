"""ELR (Liu et al., NeurIPS 2020, "Early-Learning Regularization Prevents Memorization of
Noisy Labels"): cross-entropy plus λ·log(1 − ⟨p, t⟩), t each example's temporal ensemble
of predictions, t ← β t + (1 − β) p̂ (`elr.ELRModel`). One stage, from scratch (no stage 1),
on the recipe's optimiser and schedule; soft_labels.npy holds the final targets t.

β and λ (--elr_beta, --elr_lambda) pass straight into the model; their defaults are the
authors' CIFAR-10 values (config_cifar10.json: β 0.7, λ 3); the CIFAR-100 recipes set the
authors' CIFAR-100 values (config_cifar100.json: β 0.9, λ 7; `config.RECIPES`). Their whole
CIFAR protocol (ResNet-34, SGD lr 0.02,
momentum 0.9, weight decay 1e-3, batch 128, lr ÷100 twice) are in flags/method_elr.cfg and
flags/method_elr_cifar100.cfg. ELR has no schedule of its own (the authors' `begin` is 0:
the regulariser is on from the first step), so nothing is scaled with --epochs.
"""

from idn_tf.errors import check
from idn_tf.methods.base import SOFT_LABEL_ROWS, Method, soft_label_rates


class ELR(Method):
    name = "elr"
    title = "ELR"
    row = "ELR test accuracy"
    about = "early-learning regularisation (Liu et al. 2020)"
    fields = {"elr_beta": 0.7, "elr_lambda": 3.0}
    files = ("soft_labels.npy",)
    rows = SOFT_LABEL_ROWS

    def check(self, c):
        check(0.0 <= c.elr_beta < 1.0, "elr_beta", f"must be in [0, 1), got {c.elr_beta}")
        check(c.elr_lambda >= 0.0, "elr_lambda", f"must be >= 0, got {c.elr_lambda}")

    def needs_stage1(self, config):
        return False

    def describe(self, config):
        return f"elr: β = {config.elr_beta:g}, λ = {config.elr_lambda:g}"

    def build(self, run, inputs):
        from idn_tf import elr, stages
        config = run.config
        return elr.ELRModel(stages.new_classifier(config, run.data), len(run.labels),
                            run.data.num_classes, beta=config.elr_beta, lam=config.elr_lambda,
                            weight_decay=config.weight_decay)

    def finish(self, run, model):
        """soft_labels.npy: the targets t [N, K] at the end, and how their arg max compares
        with the clean labels (an example never visited keeps t = 0, arg max class 0)."""
        from idn_tf import artifacts
        targets = model.targets_table.numpy()
        run.folder.write(artifacts.write_npy, "soft_labels.npy", targets)
        return soft_label_rates(targets, run.labels, run.data.train.clean_labels)


METHOD = ELR()
