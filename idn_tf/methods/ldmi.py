"""L_DMI (Xu et al., NeurIPS 2019): −log|det(PᵀỸ / B)| per batch (`baselines.DMIModel`),
trained from the stage-1 cross-entropy model (the authors' warm-up) at the constant
--dmi_lr."""

import dataclasses

from idn_tf.errors import check
from idn_tf.methods.base import Method


class LDMI(Method):
    name = "ldmi"
    title = "L_DMI"
    row = "L_DMI test accuracy"
    about = "L_DMI (Xu et al. 2019) from the stage-1 CE model"
    fields = {"dmi_lr": 1e-6, "dmi_eps": 1e-3}

    def check(self, c):
        check(c.dmi_lr > 0, "dmi_lr", f"must be positive, got {c.dmi_lr}")
        check(c.dmi_eps > 0, "dmi_eps", f"must be positive, got {c.dmi_eps}")

    def stage_config(self, config):
        return dataclasses.replace(config, lr=config.dmi_lr, lr_decay_epochs=())

    def build(self, run, inputs):
        from idn_tf import baselines, stages
        classifier = stages.new_classifier(run.config, run.data)
        classifier.set_weights(run.stage1.classifier.get_weights())
        return baselines.DMIModel(classifier, eps=run.config.dmi_eps,
                                  weight_decay=run.config.weight_decay)


METHOD = LDMI()
