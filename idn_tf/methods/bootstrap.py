"""Bootstrapping (Reed et al., ICLR 2015), soft and hard: targets β·ỹ + (1 − β)·p or
β·ỹ + (1 − β)·onehot(argmax p), the model's own prediction p (`baselines.BootstrapModel`)."""

from idn_tf.errors import check
from idn_tf.methods.base import Method


class Bootstrap(Method):
    """One of the two losses; `hard` picks argmax p. β is the flag <name>_beta."""

    def __init__(self, hard, beta):
        self.hard = hard
        kind = "hard" if hard else "soft"
        self.name = f"bootstrap_{kind}"
        self.title = f"Bootstrapping ({kind})"
        self.row = f"Bootstrapping ({kind}) test accuracy"
        self.about = f"{kind} bootstrapping (Reed et al. 2015)"
        self.beta_field = f"{self.name}_beta"
        self.fields = {self.beta_field: beta}

    def check(self, c):
        beta = getattr(c, self.beta_field)
        check(0.0 <= beta <= 1.0, self.beta_field, f"must be in [0, 1], got {beta}")

    def needs_stage1(self, config):
        return False

    def build(self, run, inputs):
        from idn_tf import baselines, stages
        return baselines.BootstrapModel(stages.new_classifier(run.config, run.data),
                                        getattr(run.config, self.beta_field), self.hard,
                                        weight_decay=run.config.weight_decay)


# The paper's β: 0.95 (soft) and 0.8 (hard).
SOFT = Bootstrap(hard=False, beta=0.95)
HARD = Bootstrap(hard=True, beta=0.8)
