"""Co-teaching (Han et al., NeurIPS 2018): two networks, each trained on the other's
small-loss examples, the forget rate rising as R(t) = min(t/T_k·τ, τ)
(`coteaching.CoTeachingModel`, `coteaching.ForgetRateCallback`).

τ (--coteaching_tau): a number as given; `actual`, the measured fraction of wrong
training labels (needs the clean labels); `estimate`, Σ π_i(1 − T_ii) with T
estimated from the stage-1 model as Forward's and π the observed class frequencies;
`auto` (default), `actual` where every clean training label is known (synthetic
noise, CIFAR-N: `clean_labels_known`), else `estimate`.
The τ a stage starts with is kept in coteaching_tau.json for a resumed stage.
Evaluation and export use the first network.
"""

import math

import numpy as np

from idn_tf import two_networks
from idn_tf.data.sources import UNKNOWN_CLEAN_SOURCES
from idn_tf.errors import ConfigError, check
from idn_tf.methods.base import Method

# --coteaching_tau's words (else a number): one of the next two chosen by the data, τ
# estimated from the stage-1 model's T, or the measured fraction of wrong training labels
# (needs the clean training labels).
TAUS = ("auto", "estimate", "actual")
# The largest estimated or measured forget rate it uses (a given one is used as given):
# τ near 1 would leave next to no example to train on.
MAX_FORGET_RATE = 0.95
# The second network's seed offset (`two_networks.networks`), kept here for its callers.
PEER_SEED_OFFSET = two_networks.PEER_SEED_OFFSET


def given_rate(value):
    """--coteaching_tau as a number in [0, 1), or None for estimate/actual; ValueError
    for anything else."""
    if value in TAUS:
        return None
    rate = float(value)
    if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
        raise ValueError(value)
    return rate


class CoTeaching(Method):
    name = "coteaching"
    title = "Co-teaching"
    row = "Co-teaching test accuracy"
    about = "Co-teaching (Han et al. 2018) of two networks"
    fields = {"coteaching_tau": "auto", "coteaching_t_k": 10}
    files = ("coteaching_tau.json",)
    rows = (("Co-teaching forget rate τ", "coteaching_tau"),)

    def canonical(self, field, value):
        if field == "coteaching_tau":
            try:  # a number as its shortest form: "0.40" and "0.4" are the same run
                return repr(float(value))
            except ValueError:
                pass  # a word (checked by `check`)
        return value

    def check(self, c):
        try:
            given_rate(c.coteaching_tau)
        except ValueError:
            raise ConfigError(f"--coteaching_tau: {' or '.join(TAUS)}, or a forget rate in "
                              f"[0, 1), got {c.coteaching_tau!r}") from None
        check(c.coteaching_t_k >= 1, "coteaching_t_k", f"must be >= 1, got {c.coteaching_t_k}")

    def tau_rule(self, config):
        """--coteaching_tau with `auto` resolved: actual, estimate or a number (a string)."""
        if config.coteaching_tau != "auto":
            return config.coteaching_tau
        return "actual" if clean_labels_known(config) else "estimate"

    def needs_stage1(self, config):
        return self.tau_rule(config) == "estimate"  # τ from the stage-1 model's T

    def used_fields(self, config):
        # An estimated τ comes from T, estimated with Forward's percentile.
        return tuple(self.fields) + (("forward_percentile",) if self.needs_stage1(config) else ())

    def preflight(self, config, data):
        """`actual` measures the noise rate: ConfigError now if it cannot."""
        if self.tau_rule(config) == "actual" and not (
                np.asarray(data.train.clean_labels) >= 0).all():
            raise ConfigError(f"--coteaching_tau={config.coteaching_tau}: the clean labels of {config.dataset}'s "
                              "training examples are not known; give τ as a number or use "
                              "estimate")

    def prepare(self, run):
        from idn_tf import artifacts

        def make():
            tau, how = self.forget_rate(run)
            print(f"coteaching: forget rate τ = {tau:.4f} ({how}), reached after "
                  f"{run.config.coteaching_t_k} epochs")
            return {"tau": tau, "how": how}

        def resumed(path):
            saved = artifacts.read_json(path)
            print(f"coteaching: resuming with the forget rate τ = {float(saved['tau']):.4f} "
                  f"of {path}")
            return saved

        saved = run.folder.kept("coteaching_tau.json", self.name, make, resumed,
                                artifacts.write_json)
        return {"tau": float(saved["tau"]), "how": saved.get("how", "")}

    def forget_rate(self, run):
        """(τ, how it was found) for a stage that starts afresh."""
        from idn_tf import stages, transition
        config = run.config
        given = given_rate(config.coteaching_tau)
        if given is not None:
            tau, how = given, "given"
        elif self.tau_rule(config) == "actual":
            tau, how = run.rate, "actual: the measured fraction of wrong training labels"
        else:
            matrix = stages.estimate_transition(run.stage1.classifier, run.data,
                                                config.batch_size, config.forward_percentile)
            prior = np.bincount(run.labels, minlength=run.data.num_classes) / len(run.labels)
            tau = transition.noise_rate_from_transition(matrix, prior)
            how = (f"estimate: Σ π_i (1 − T_ii), T estimated from the stage-1 model (mean diagonal "
                   f"{np.mean(np.diag(matrix)):.3f})")
        if config.coteaching_tau == "auto":
            how = f"auto -> {how}"
        if tau > MAX_FORGET_RATE and given is None:
            print(f"warning: τ = {tau:.4f} is above {MAX_FORGET_RATE}; Co-teaching uses "
                  f"{MAX_FORGET_RATE}", flush=True)
            tau = MAX_FORGET_RATE
        return float(tau), how

    def build(self, run, inputs):
        from idn_tf import coteaching
        classifier, peer = two_networks.networks(run.config, run.data)
        return coteaching.CoTeachingModel(classifier, peer, weight_decay=run.config.weight_decay)

    def callbacks(self, run, inputs):
        from idn_tf import coteaching
        return [coteaching.ForgetRateCallback(inputs["tau"], run.config.coteaching_t_k)]

    def extra(self, run, inputs, model):
        return {"coteaching_tau": inputs["tau"], "coteaching_tau_source": inputs["how"]}


def clean_labels_known(config):
    """Whether every clean training label is known, from the configuration alone (stage 1
    is decided before the data are read): synthetic noise is made from them, and every
    source but those of `UNKNOWN_CLEAN_SOURCES` has them (CIFAR-N with its human labels;
    digits and CIFAR with --noise=none, whose labels are the clean ones)."""
    return config.noise != "none" or config.dataset not in UNKNOWN_CLEAN_SOURCES


METHOD = CoTeaching()
