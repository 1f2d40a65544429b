"""L_DMI (Xu et al., NeurIPS 2019): −log|det(PᵀỸ / B)| per batch (`baselines.DMIModel`),
trained from the stage-1 cross-entropy model (the authors' warm-up) at the constant
--dmi_lr.

A batch without some class has zero gradient. --dmi_batches=cover (default) gives every
batch an example of every observed class (`data.covering`); random is the usual
shuffle. Either way the share of zero-gradient steps is logged (`dead_steps`) and
reported (results.json `dmi_dead_steps`).
"""

import dataclasses

import numpy as np

from idn_tf.errors import ConfigError, check
from idn_tf.methods.base import Method

BATCHES = ("cover", "random")


class LDMI(Method):
    name = "ldmi"
    title = "L_DMI"
    row = "L_DMI test accuracy"
    about = "L_DMI (Xu et al. 2019) from the stage-1 CE model"
    fields = {"dmi_lr": 1e-6, "dmi_eps": 1e-3, "dmi_batches": "cover"}
    rows = (("L_DMI steps with zero gradient (a batch without some class)", "dmi_dead_steps"),)

    def check(self, c):
        check(c.dmi_lr > 0, "dmi_lr", f"must be positive, got {c.dmi_lr}")
        check(c.dmi_eps > 0, "dmi_eps", f"must be positive, got {c.dmi_eps}")
        check(c.dmi_batches in BATCHES, "dmi_batches",
              f"one of {', '.join(BATCHES)}, got {c.dmi_batches!r}")

    def preflight(self, config, data):
        """Covering batches need room for every class, and the data in memory."""
        if config.dmi_batches != "cover":
            return None
        check(config.batch_size >= data.num_classes, "batch_size",
              f"must be at least the {data.num_classes} classes for --dmi_batches=cover "
              f"(one example of each in every batch), got {config.batch_size}")
        if not hasattr(data.train, "images"):
            raise ConfigError(f"--dmi_batches=cover: {config.dataset} is streamed from files, "
                              "where class-covering batches are not made; pass "
                              "--dmi_batches=random with a batch that holds every class (Xu et "
                              "al. train Clothing1M at --batch_size=256)")
        return None

    def stage_config(self, config):
        return dataclasses.replace(config, lr=config.dmi_lr, lr_decay_epochs=())

    def describe(self, config):
        return ("ldmi: every batch holds an example of every observed class" if
                config.dmi_batches == "cover" else "ldmi: shuffled batches")

    def training_data(self, run):
        if run.config.dmi_batches == "random":
            return run.data
        from idn_tf.data import covering
        return covering.CoveringView(run.data)

    def build(self, run, inputs):
        from idn_tf import baselines, stages
        classifier = stages.new_classifier(run.config, run.data)
        classifier.set_weights(run.stage1.classifier.get_weights())
        return baselines.DMIModel(classifier, eps=run.config.dmi_eps,
                                  weight_decay=run.config.weight_decay)

    def results(self, run, trained):
        """dmi_dead_steps: the share of the stage's steps with zero gradient (every epoch
        has the same number of steps: the mean of the epochs' shares)."""
        dead = float(np.mean(trained.result.history["dead_steps"]))
        print(f"ldmi: {100 * dead:.1f}% of the steps had zero gradient "
              f"(--dmi_batches={run.config.dmi_batches})")
        return {"dmi_dead_steps": dead}


METHOD = LDMI()
