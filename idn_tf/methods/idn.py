"""The paper's method (Wang et al., AAAI 2021): stage 2, the IDNModel (docs/method.md §2).

A fresh classifier (the same backbone, initial weights, optimiser and data order as
stage 1) trains against the posterior q of the true label (Eq. 8), computed from the
batch's η and the stage-1 ψ; in the epochs of the η schedule each step takes a
projected gradient-ascent step on its batch's η (Eq. 11, 12). η is the label audit's
score of a wrong label.
"""

import hashlib

from idn_tf.errors import check
from idn_tf.methods.base import Method

# Kept here rather than imported so that checking a configuration never imports
# TensorFlow; a test checks they equal posterior.ETA_RULES.
ETA_RULES = ("paper", "exact")


class IDN(Method):
    name = "idn"
    title = "method (IDN)"
    row = "method test accuracy (stage 2)"
    plot_label = "stage 2: IDN method"
    short = "method"
    mixes_clean = True
    audits_labels = True
    files = ("eta.npy",)
    # The digits recipe's values (docs/method.md §3 has the paper's): α₁ = 0.3 was chosen
    # by benchmark on digits (BENCHMARKS.md); the paper's CIFAR values are 0.5 / 0.7.
    fields = {"eta_init": 0.01, "eta_lr": 0.3, "eta_start_epoch": 3, "eta_every": 2,
              "eta_rule": "paper", "eta_eps": 1e-4, "eta_min": 0.0}

    @property
    def stage_names(self):
        return ("stage2",)

    def uses_stage1_classifier(self, config):
        return False  # ψ only

    def check(self, c):
        check(0.0 <= c.eta_init <= 1.0, "eta_init", f"must be in [0, 1], got {c.eta_init}")
        check(c.eta_lr > 0, "eta_lr", f"must be positive, got {c.eta_lr}")
        check(c.eta_start_epoch >= 1, "eta_start_epoch",
              f"must be >= 1 (epochs count from 1), got {c.eta_start_epoch}")
        check(c.eta_every >= 1, "eta_every", f"must be >= 1, got {c.eta_every}")
        check(c.eta_rule in ETA_RULES, "eta_rule",
              f"unknown rule {c.eta_rule!r}; choose one of {', '.join(ETA_RULES)}")
        check(c.eta_eps > 0, "eta_eps", f"must be positive, got {c.eta_eps}")
        check(0.0 <= c.eta_min <= c.eta_init, "eta_min",
              f"must be in [0, eta_init={c.eta_init}], got {c.eta_min}")

    def train(self, run):
        """Stage 2: eta.npy, classifier.weights.h5 and stage2.json, reused on restart."""
        from idn_tf import artifacts, distribution, runfolder
        config, folder = run.config, run.folder
        psi = run.stage1.value

        def fresh():
            idn, result = fit_model(config, run.data, run.labels, psi)
            return runfolder.Trained(idn.classifier, result, model=idn)

        def save(trained):
            folder.write(artifacts.write_npy, "eta.npy", trained.model.eta.numpy())
            folder.write(artifacts.write_weights, "classifier.weights.h5", trained.classifier)

        def load(result, extra):
            idn = new_model(config, run.data, psi)
            folder.weights_into("classifier.weights.h5", idn.classifier)
            idn.eta.assign(folder.array("eta.npy", run.data.table_size))
            return runfolder.Trained(idn.classifier, result, model=idn)

        trained = folder.stage(
            "stage2", "stage 2", ("eta.npy", "classifier.weights.h5"), fresh, save, load,
            training=f"stage 2: IDN method (η updates from epoch {config.eta_start_epoch} "
                     f"every {config.eta_every})")
        eta = trained.model.eta.numpy()
        print(f"η table: {len(eta)} rows, sha256 {hashlib.sha256(eta.tobytes()).hexdigest()[:16]}"
              f"{distribution.worker_label()}", flush=True)
        return trained


def new_model(config, data, psi):
    """A fresh stage-2 `IDNModel` (same initial classifier weights as stage 1).

    `psi` [N] covers the noisy examples; the view adds the rows of mixed-in clean
    examples (ψ 1, η 0).
    """
    from idn_tf import model, stages
    with stages.model_scope(config):
        return model.IDNModel(
            stages.new_classifier(config, data), psi=data.table_psi(psi),
            eta_init=data.initial_eta(config.eta_init), eta_lr=config.eta_lr,
            eta_rule=config.eta_rule, eta_eps=config.eta_eps, eta_min=config.eta_min,
            weight_decay=config.weight_decay)


def fit_model(config, data, labels, psi):
    """A fresh `IDNModel` trained as stage 2 (the η schedule by `callbacks.PGACallback`):
    (IDNModel, StageResult)."""
    from idn_tf import callbacks, stages
    idn = new_model(config, data, psi)
    schedule = callbacks.pga_schedule(config.eta_start_epoch, config.eta_every)
    return idn, stages.fit(idn, config, data, labels, "stage2", [callbacks.PGACallback(schedule)])


METHOD = IDN()
