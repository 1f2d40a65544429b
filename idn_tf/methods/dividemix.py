"""DivideMix (Li, Socher & Hoi, ICLR 2020): two networks warmed up with cross-entropy,
then each epoch a Gaussian mixture on each network's losses divides the data into a
labelled (clean) and an unlabelled (noisy) set, and each network trains on the other's
division with MixMatch (`dividemix.DivideMixModel`, `dividemix.CoDivide`,
`data.codivide`). Evaluation and export use the sum of the two networks' logits, as the
authors test.

Its own warm-up (both networks, from --seed and --seed + `two_networks.PEER_SEED_OFFSET`)
replaces the pipeline's stage 1, which trains one network: no stage 1. The warm-up and
λ_u's ramp-up lengths are the authors' CIFAR-10 ones (10 and 16 of 300 epochs) scaled to
--epochs unless given; the CIFAR-100 recipes give the authors' CIFAR-100 warm-up (30 of 300, scaled)
and λ_u (150) (`config.RECIPES`). The warm-up's confidence penalty (the authors' for
asymmetric noise) is --dividemix_confidence_penalty (flags/method_dividemix_asym.cfg).
In-memory datasets only (the streamed Clothing1M view has no DivideMix batches yet).
"""

import math

from idn_tf.errors import ConfigError, check
from idn_tf.methods.base import Method

# The authors' CIFAR-10 schedule (Train_cifar.py): warm-up epochs, λ_u's linear ramp-up
# length, of their 300 epochs.
WARMUP = (10, 300)
RAMPUP = (16, 300)


def scaled_length(epochs, length, total):
    """`length` of `total` epochs scaled to `epochs` (halves up), at least 1."""
    return max(1, int(epochs * length / total + 0.5))


class DivideMix(Method):
    name = "dividemix"
    title = "DivideMix"
    row = "DivideMix test accuracy (both networks' summed logits)"
    about = "DivideMix (Li et al. 2020): co-divide and MixMatch of two networks"
    fields = {"dividemix_lambda_u": 25.0, "dividemix_p_threshold": 0.5,
              "dividemix_temperature": 0.5, "dividemix_alpha": 4.0,
              "dividemix_warmup_epochs": 0, "dividemix_rampup_epochs": 0,
              "dividemix_confidence_penalty": False}
    rows = (("DivideMix labelled fraction, network 1 (last epoch)", "dividemix_labelled_1"),
            ("DivideMix labelled fraction, network 2 (last epoch)", "dividemix_labelled_2"))

    def warmup_epochs(self, config):
        return config.dividemix_warmup_epochs or scaled_length(config.epochs, *WARMUP)

    def rampup_epochs(self, config):
        return config.dividemix_rampup_epochs or scaled_length(config.epochs, *RAMPUP)

    def check(self, c):
        def finite(name, ok, why):
            value = getattr(c, name)
            check(math.isfinite(value) and ok(value), name, f"{why}, got {value}")

        finite("dividemix_lambda_u", lambda v: v >= 0, "must be >= 0")
        finite("dividemix_p_threshold", lambda v: 0 < v < 1, "must be in (0, 1)")
        finite("dividemix_temperature", lambda v: v > 0, "must be > 0")
        finite("dividemix_alpha", lambda v: v > 0, "must be > 0")
        check(c.dividemix_warmup_epochs >= 0, "dividemix_warmup_epochs",
              f"must be >= 0 (0: the authors' CIFAR-10 10 of 300 scaled), got "
              f"{c.dividemix_warmup_epochs}")
        check(c.dividemix_rampup_epochs >= 0, "dividemix_rampup_epochs",
              f"must be >= 0 (0: the authors' 16 of 300 scaled), got {c.dividemix_rampup_epochs}")
        if c.method == self.name:
            check(self.warmup_epochs(c) < c.epochs, "dividemix_warmup_epochs",
                  f"must leave an epoch after the warm-up: below --epochs={c.epochs}, got "
                  f"{self.warmup_epochs(c)}")

    def needs_stage1(self, config):
        return False

    def uses_stage1_classifier(self, config):
        return False

    def preflight(self, config, data):
        if getattr(data.train, "images", None) is None:
            raise ConfigError(f"--method=dividemix: {config.dataset}'s training images are "
                              "streamed from files; DivideMix needs an in-memory dataset")
        return None

    def describe(self, config):
        return (f"dividemix: warm-up {self.warmup_epochs(config)} epoch(s), λ_u "
                f"{config.dividemix_lambda_u:g} ramped up over {self.rampup_epochs(config)}, "
                f"τ {config.dividemix_p_threshold:g}, T {config.dividemix_temperature:g}, "
                f"α {config.dividemix_alpha:g}")

    def prepare(self, run):
        from idn_tf.data import codivide
        config, n = run.config, len(run.labels)
        steps = run.data.steps_per_epoch(run.labels, config.batch_size)
        feed = codivide.SplitFeed(n, config.batch_size, steps, config.seed,
                                  self.warmup_epochs(config))
        return {"feed": feed, "steps": steps}

    def new_classifier(self, config, data):
        from idn_tf import dividemix, two_networks
        return dividemix.ensemble(*two_networks.networks(config, data))

    def build(self, run, inputs):
        from idn_tf import dividemix, two_networks
        config = run.config
        classifier, peer = two_networks.networks(config, run.data)
        return dividemix.DivideMixModel(
            classifier, peer, steps_per_epoch=inputs["steps"],
            warmup_epochs=self.warmup_epochs(config), num_examples=len(run.labels),
            lambda_u=config.dividemix_lambda_u, temperature=config.dividemix_temperature,
            alpha=config.dividemix_alpha, rampup_epochs=self.rampup_epochs(config),
            confidence_penalty=config.dividemix_confidence_penalty, seed=config.seed,
            weight_decay=config.weight_decay)

    def callbacks(self, run, inputs):
        from idn_tf import dividemix
        config = run.config
        return [dividemix.CoDivide(inputs["feed"], run.data, run.labels, config.batch_size,
                                   self.warmup_epochs(config), config.dividemix_p_threshold,
                                   seed=config.seed)]

    def batches(self, run, inputs):
        from idn_tf.data import codivide
        config, data = run.config, run.data

        def train_data(initial_epoch):
            return (codivide.dataset(data.train.images, run.labels, inputs["feed"],
                                     augment=config.augment, padding=config.crop_padding,
                                     epochs=config.epochs, initial_epoch=initial_epoch),
                    inputs["steps"])

        return train_data

    def extra(self, run, inputs, model):
        """The warm-up and ramp-up lengths used, and each network's labelled fraction in
        the last epoch (its clean table's w > τ; 1.0 if the run never left the warm-up)."""
        config = run.config
        last = {}
        for k, table in enumerate(model.clean_tables, 1):
            last[f"dividemix_labelled_{k}"] = float((table.numpy() > config.dividemix_p_threshold).mean())
        return {"dividemix_warmup_epochs": self.warmup_epochs(config),
                "dividemix_rampup_epochs": self.rampup_epochs(config), **last}


METHOD = DivideMix()
