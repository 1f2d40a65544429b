"""The paper's method (Wang et al., AAAI 2021): stage 2, the IDNModel (docs/method.md §2).

A fresh classifier (the same backbone, initial weights, optimiser and data order as
stage 1) trains against the posterior q of the true label (Eq. 8), computed from the
batch's η and the stage-1 ψ; in the epochs of the η schedule each step takes a
projected gradient-ascent step on its batch's η (Eq. 11, 12). η is the label audit's
score of a wrong label.
"""

import hashlib
import os

from idn_tf.errors import check
from idn_tf.methods.base import Method

# Kept here rather than imported so that checking a configuration never imports
# TensorFlow; a test checks they equal posterior.ETA_RULES.
ETA_RULES = ("paper", "exact")
# posterior.NUMERICS: the authors' floors (their released code) or the equations as printed.
ETA_NUMERICS = ("authors", "literal")
# Where stage 2's ψ comes from (docs/method.md §7.6): stage 1's last epoch (the paper), its
# epoch chosen on the validation split, or K-fold out-of-sample CE classifiers.
PSI_SOURCES = ("final", "selected", "crossval")
# How stage 1's classifier gives ψ (docs/method.md §2): in inference mode on the
# un-augmented images (the paper's text), or in training mode (batch statistics) on one
# epoch of augmented training batches, as the authors' released code does.
PSI_MODES = ("eval", "train")
# Stage 2's learning-rate steps: the recipe's, or only its last one (constant until then).
STAGE2_LR_DECAYS = ("recipe", "late")
# Our options (docs/method.md §7.6), and their paper settings: at those they are left out
# of the configuration a run folder records, so runs made before they existed still match.
OPTIONS = {"psi_source": "final", "psi_folds": 4, "psi_mode": "eval", "q_ensemble": 0.0,
           "stage2_lr_decay": "recipe"}


class IDN(Method):
    name = "idn"
    title = "method (IDN)"
    row = "method test accuracy (stage 2)"
    plot_label = "stage 2: IDN method"
    short = "method"
    mixes_clean = True
    audits_labels = True
    files = ("eta.npy", "psi_folds.npy", "psi_folds.json", "audit_probs.npy", "audit_folds.json")
    # The digits recipe's values (docs/method.md §3 has the paper's): α₁ = 0.3 was chosen
    # by benchmark on digits (BENCHMARKS.md); the paper's CIFAR values are 0.5 / 0.7.
    fields = {"eta_init": 0.01, "eta_lr": 0.3, "eta_start_epoch": 3, "eta_every": 2,
              "eta_rule": "paper", "eta_numerics": "authors", "eta_eps": 1e-4, "eta_min": 0.0,
              "audit_folds": 5, **OPTIONS}

    @property
    def stage_names(self):
        return ("stage2",)

    def uses_stage1_classifier(self, config):
        return config.psi_mode == "train" and config.psi_source == "final"  # else ψ only

    def check(self, c):
        check(0.0 <= c.eta_init <= 1.0, "eta_init", f"must be in [0, 1], got {c.eta_init}")
        check(c.eta_lr > 0, "eta_lr", f"must be positive, got {c.eta_lr}")
        check(c.eta_start_epoch >= 1, "eta_start_epoch",
              f"must be >= 1 (epochs count from 1), got {c.eta_start_epoch}")
        check(c.eta_every >= 1, "eta_every", f"must be >= 1, got {c.eta_every}")
        check(c.eta_rule in ETA_RULES, "eta_rule",
              f"unknown rule {c.eta_rule!r}; choose one of {', '.join(ETA_RULES)}")
        check(c.eta_numerics in ETA_NUMERICS, "eta_numerics",
              f"unknown numerics {c.eta_numerics!r}; choose one of {', '.join(ETA_NUMERICS)}")
        check(c.eta_eps > 0, "eta_eps", f"must be positive, got {c.eta_eps}")
        check(0.0 <= c.eta_min <= c.eta_init, "eta_min",
              f"must be in [0, eta_init={c.eta_init}], got {c.eta_min}")
        check(c.psi_source in PSI_SOURCES, "psi_source",
              f"unknown source {c.psi_source!r}; choose one of {', '.join(PSI_SOURCES)}")
        check(c.psi_folds >= 2, "psi_folds", f"must be >= 2, got {c.psi_folds}")
        check(c.psi_mode in PSI_MODES, "psi_mode",
              f"unknown mode {c.psi_mode!r}; choose one of {', '.join(PSI_MODES)}")
        check(c.psi_mode == "eval" or c.psi_source != "crossval", "psi_mode",
              "train (the authors' batch statistics) applies to stage 1's classifier; with "
              "--psi_source=crossval ψ comes from the fold classifiers: use eval")
        check(c.audit_folds == 0 or c.audit_folds >= 2, "audit_folds",
              f"must be 0 (no held-out audit) or >= 2, got {c.audit_folds}")
        check(0.0 <= c.q_ensemble < 1.0, "q_ensemble", f"must be in [0, 1), got {c.q_ensemble}")
        check(c.stage2_lr_decay in STAGE2_LR_DECAYS, "stage2_lr_decay",
              f"unknown schedule {c.stage2_lr_decay!r}; choose one of "
              f"{', '.join(STAGE2_LR_DECAYS)}")
        if c.method == self.name:
            check(c.psi_source != "selected" or c.has_validation(), "psi_source",
                  "selected takes ψ from stage 1's epoch chosen on the validation split, and "
                  "this run has none; give --val_fraction > 0, or use final or crossval")

    def preflight(self, config, data):
        """--psi_source=crossval: every fold must get rows (ConfigError before any training)."""
        if config.method != self.name:
            return
        n = len(data.train)
        if config.psi_source == "crossval":
            check(config.psi_folds <= n, "psi_folds",
                  f"{config.psi_folds} folds of {n} training examples; at most one per example")
        check(config.audit_folds <= n, "audit_folds",
              f"{config.audit_folds} folds of {n} training examples; at most one per example")

    def used_fields(self, c):
        """Its fields (--psi_folds only with --psi_source=crossval)."""
        return tuple(f for f in self.fields if f != "psi_folds" or c.psi_source == "crossval")

    def semantic_fields(self, c):
        """The paper's fields, and our options where they differ from the paper's setting
        (--psi_folds wherever it is used)."""
        return tuple(f for f in self.used_fields(c) if f not in OPTIONS or f == "psi_folds"
                     or getattr(c, f) != OPTIONS[f])

    def stage_config(self, config):
        """Stage 2's configuration: --stage2_lr_decay=late keeps the rate constant until the
        recipe's last step, then takes that one step (×lr_decay_factor)."""
        if config.stage2_lr_decay == "recipe" or not config.lr_decay_epochs:
            return config
        import dataclasses
        return dataclasses.replace(config, lr_decay_epochs=(max(config.lr_decay_epochs),))

    def psi(self, run):
        """Stage 2's ψ [N] from --psi_source (docs/method.md §7.6); crossval's is the stage
        psi_folds (psi_folds.npy, reused on restart)."""
        from idn_tf import stages
        config, folder, stage1 = run.config, run.folder, run.stage1
        if config.psi_source == "final" and config.psi_mode == "eval":
            return stage1.value
        if config.psi_source == "final":
            psi = stages.train_mode_psi(config, run.data, run.labels, stage1.classifier)
            print(f"ψ in training mode on augmented batches (the authors' code): mean "
                  f"{psi.mean():.3f}", flush=True)
            return psi
        if config.psi_source == "selected":
            weights = stage1.result.selected_weights
            if weights is None:
                weights = folder.selected_weights("stage1")
            psi = stages.selected_psi(config, run.data, run.labels, weights)
            epoch = (stage1.result.selection or {}).get("epoch")
            print(f"ψ from stage 1's epoch {epoch} (chosen on validation): mean {psi.mean():.3f}",
                  flush=True)
            return psi

        def crossval():
            if config.psi_folds == config.audit_folds:  # the same folds: trained once
                trained_rows = self.audit_probs(run)[:len(run.labels)]  # not val/test's
                psi = stages.observed_probability(trained_rows, run.labels)
            else:
                psi = stages.crossval_psi(config, run.data, run.labels, config.psi_folds)
            print(f"ψ out of {config.psi_folds} folds: mean {psi.mean():.3f}", flush=True)
            return psi

        return fold_stage(run, "psi", "ψ folds", config.psi_folds, "psi_folds.npy",
                          (len(run.labels),), crossval,
                          f"ψ from {config.psi_folds} folds: out-of-sample cross-entropy "
                          "classifiers")

    def audit_probs(self, run):
        """The label audit's held-out probabilities [N + M, K] (docs/own_data.md, "The
        label audit"): `stages.fold_probs` of --audit_folds CE classifiers on the training
        rows and the M rows of `data.audited_splits()`; the stage audit_folds
        (audit_probs.npy, reused on restart; one of a run made before the M rows were
        audited has N rows). None with --audit_folds=0."""
        from idn_tf import stages
        config, data, n = run.config, run.data, len(run.labels)
        if not config.audit_folds:
            return None
        others = data.audited_splits()
        shape = (n + sum(len(s) for s in others), data.num_classes)
        return fold_stage(run, "audit", "audit folds", config.audit_folds, "audit_probs.npy",
                          shape, lambda: stages.fold_probs(config, data, run.labels,
                                                           config.audit_folds, "audit", others),
                          f"label audit: {config.audit_folds} held-out cross-entropy "
                          "classifiers", older=((n, data.num_classes),))

    def train(self, run):
        """Stage 2: eta.npy, classifier.weights.h5 and stage2.json, reused on restart."""
        from idn_tf import artifacts, distribution, runfolder
        config, folder = run.config, run.folder
        psi = self.psi(run)

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
        if config.strategy == "multi_worker":  # the workers' tables must agree: say it
            eta = trained.model.eta.numpy()
            print(f"η table: {len(eta)} rows, sha256 "
                  f"{hashlib.sha256(eta.tobytes()).hexdigest()[:16]}"
                  f"{distribution.worker_label()}", flush=True)
        return trained


def fold_stage(run, purpose, title, folds, file_name, shape, compute, training, older=()):
    """The stage <purpose>_folds of held-out classifiers (`stages.fold_probs`): the array
    compute() returns [shape], saved in `file_name` and reused on restart (also when of a
    shape in `older`); the folds' backups (`stages.fold_stage(purpose, k)`) are removed
    once it is saved."""
    from idn_tf import artifacts, runfolder, stages
    folder = run.folder

    def train():
        return runfolder.Trained(None, runfolder.StageResult(float("nan"), {}, {}),
                                 value=compute())

    def save(trained):
        folder.write(artifacts.write_npy, file_name, trained.value)

    def load(result, extra):
        return runfolder.Trained(None, result, value=folder.array(file_name, *shape,
                                                                  older=older))

    value = folder.stage(f"{purpose}_folds", title, (file_name,), train, save, load,
                         training=training).value
    folder.remove([os.path.join("backup", stages.fold_stage(purpose, k))
                   for k in range(1, folds + 1)])
    return value


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
            eta_rule=config.eta_rule, eta_numerics=config.eta_numerics,
            eta_eps=config.eta_eps, eta_min=config.eta_min,
            weight_decay=config.weight_decay, q_ensemble=config.q_ensemble)


def fit_model(config, data, labels, psi):
    """A fresh `IDNModel` trained as stage 2 (the η schedule by `callbacks.PGACallback`):
    (IDNModel, StageResult)."""
    from idn_tf import callbacks, stages
    idn = new_model(config, data, psi)
    schedule = callbacks.pga_schedule(config.eta_start_epoch, config.eta_every)
    return idn, stages.fit(idn, METHOD.stage_config(config), data, labels, "stage2",
                           [callbacks.PGACallback(schedule)])


METHOD = IDN()
