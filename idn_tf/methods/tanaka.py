"""Tanaka et al. (CVPR 2018), "joint optimisation": two phases (`soft_labels`).

Phase 1 (stage "tanaka_labels"): the network and per-example soft labels learned
together at the constant --lr (the authors' high learning rate, which keeps the
network from fitting the noisy labels before they change); from --tanaka_start_epoch
each epoch's mean prediction becomes the soft label (`TanakaModel`). The final soft
labels go to soft_labels.npy. Phase 2 (stage "tanaka"): a fresh network trained
with cross-entropy on them, with the recipe's schedule (`SoftTargetModel`).
"""

import dataclasses

import numpy as np

from idn_tf.errors import check
from idn_tf.methods.base import SOFT_LABEL_ROWS, Method, soft_label_rates

# The authors' schedule, as (epochs before the first label update, of the total): after
# epoch 70 of 200 (CIFAR-10).
START = (70, 200)


def scaled(epochs, before, total):
    """The 1-based epoch after `before` of `total` epochs, scaled to `epochs` (halves up)."""
    return int(epochs * before / total + 0.5) + 1


class Tanaka(Method):
    name = "tanaka"
    title = "Tanaka"
    row = "Tanaka test accuracy (second phase)"
    about = "Tanaka et al.'s second phase: a fresh network on the learned soft labels"
    # tanaka_start_epoch 0: the authors' schedule scaled to --epochs (`start`).
    fields = {"tanaka_alpha": 1.2, "tanaka_beta": 0.8, "tanaka_start_epoch": 0}
    files = ("soft_labels.npy",)
    rows = SOFT_LABEL_ROWS

    @property
    def stage_names(self):
        return ("tanaka_labels", self.name)

    def start(self, config):
        """The first label update (1-based epoch): --tanaka_start_epoch, or the authors'
        (after epoch 70 of 200) scaled to --epochs."""
        return config.tanaka_start_epoch or scaled(config.epochs, *START)

    def check(self, c):
        for name in ("tanaka_alpha", "tanaka_beta"):
            check(getattr(c, name) >= 0, name, f"must be >= 0, got {getattr(c, name)}")
        check(c.tanaka_start_epoch >= 0, "tanaka_start_epoch",
              "must be a 1-based epoch, or 0 (scaled from the authors' schedule), got "
              f"{c.tanaka_start_epoch}")
        if c.method == self.name:  # checked against --epochs only where it is used
            check(self.start(c) <= c.epochs, "tanaka_start_epoch",
                  f"must be in [1, --epochs={c.epochs}] (the first epoch whose predictions "
                  f"become the soft labels), got {c.tanaka_start_epoch}")

    def needs_stage1(self, config):
        return False

    def prepare(self, run):
        return {"soft": self.learn_labels(run)}

    def learn_labels(self, run):
        """Phase 1: the soft labels [N, K] (soft_labels.npy, tanaka_labels.json)."""
        from idn_tf import artifacts, runfolder, soft_labels, stages
        config, folder, data, labels = run.config, run.folder, run.data, run.labels
        phase1 = dataclasses.replace(config, lr_decay_epochs=())  # the constant --lr

        def fresh():
            with stages.model_scope(config):
                model = soft_labels.TanakaModel(
                    stages.new_classifier(config, data), labels, data.num_classes,
                    alpha=config.tanaka_alpha, beta=config.tanaka_beta,
                    weight_decay=config.weight_decay)
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
                     f"et al. 2018) at the constant lr {config.lr:g}; labels updated from "
                     f"epoch {self.start(config)}").value

    def build(self, run, inputs):
        from idn_tf import soft_labels, stages
        return soft_labels.SoftTargetModel(stages.new_classifier(run.config, run.data),
                                           inputs["soft"], run.data.num_classes,
                                           weight_decay=run.config.weight_decay)

    def extra(self, run, inputs, model):
        return soft_label_rates(inputs["soft"], run.labels, run.data.train.clean_labels)


METHOD = Tanaka()
