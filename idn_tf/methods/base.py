"""The one interface every method implements, and what the pipeline hands it.

The pipeline (`idn_tf.runner`) never branches on a method's name: it asks the
method's object. A method says

- who it is: `name` (its --method value), `title` (how comparison tables name it),
  `row` (the closing table's row of its test accuracy), `about` (its stage's banner);
- its configuration: `fields` (its own flags, name -> default; `config.Config` takes
  them), `check` (ConfigError naming the flag), which fields it reads (`used_fields`) and
  which of them decide what it computes (`semantic_fields`, `semantic_extra`),
  `canonical` (one spelling of a value);
- what it needs: `needs_stage1` (the cross-entropy stage 1: ψ, the CE baseline, a
  warm start or an estimate of T), `uses_stage1_classifier`, `preflight` (checks and
  inputs read before anything is written), `mixes_clean` (--clean_train=mix);
- what it trains: `stage_names` (its stages after stage 1, in order; the last one
  trains the final classifier) and `train(run)`, which returns that stage's
  `runfolder.Trained`;
- what it reports: `extra` kept in <stage>.json, `results` (more results.json keys),
  `audits_labels` (it learns η: the label audit and the η plots), `files` (the
  run-folder files of its own, besides its stages' <stage>.json and the files every
  run writes, `artifacts.RUN_RESULTS`).

`Method.train` is the usual case, one stage named after the method: `prepare` what
the stage needs, `build` the Keras model, `fit` it on `training_data` (or on `batches`
of its own making) with `callbacks` under `stage_config`, then `finish` (e.g. write the
learned soft labels). `new_classifier` is the kind of classifier the stage returns (a
reused stage's weights and the exported epoch's go into one).
TensorFlow is imported inside the functions, so that checking a configuration does
not start it.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Run:
    """What the pipeline hands a method's `train`.

    labels: the observed labels [N]; rate: the measured fraction of wrong ones (NaN if
    unknown); folder: the `runfolder.RunFolder`; stage1: stage 1's `Trained` (its
    `value` is ψ [N]) or None; given: what the method's `preflight` returned.
    """
    config: object
    data: object
    labels: np.ndarray
    rate: float
    folder: object
    stage1: object = None
    given: object = None


class Method:
    """A training method as the pipeline sees it (module docstring)."""

    name = ""
    title = ""
    row = ""
    about = ""
    fields = {}
    derived_fields = ()
    files = ()
    mixes_clean = False
    audits_labels = False
    rows = ()              # its own rows of the closing table: (name, results.json key)
    plot_label = None      # its curve in plots/accuracy.png (default: name)
    short = None           # the fine-tuning row's prefix in the closing table (default: name)

    @property
    def stage_names(self):
        return (self.name,)

    def final_stage(self):
        """The stage that trains the run's final classifier ("stage1" for CE itself)."""
        return (("stage1",) + tuple(self.stage_names))[-1]

    def check(self, config):
        """ConfigError naming the flag: the ranges of its fields (checked for every run,
        whatever --method is) and what it needs when it is --method."""

    def canonical(self, field, value):
        """One spelling of a value of its `field` (e.g. "0.40" -> "0.4"), so that runs
        that mean the same have the same configuration."""
        return value

    def needs_stage1(self, config):
        return True

    def uses_stage1_classifier(self, config):
        """Whether it needs stage 1's classifier back, not only ψ (then a restart also
        needs stage1.weights.h5)."""
        return True

    def used_fields(self, config):
        """The methods' configuration fields (its own or others') it reads in `config`."""
        return tuple(self.fields)

    def semantic_fields(self, config):
        """The fields of `used_fields` that decide what it computes (all, by default)."""
        return self.used_fields(config)

    def semantic_extra(self, config):
        """Values derived from the configuration that decide what it computes too (e.g.
        a given file's content), by `derived_fields` name."""
        return {}

    def preflight(self, config, data):
        """Checks that need the data (ConfigError), and inputs read before the run writes
        anything (e.g. a given transition matrix); the result is `Run.given`."""
        return None

    def results(self, run, trained):
        """results.json keys of its own besides `extra` (e.g. the T it used)."""
        return {}

    def audit_probs(self, run):
        """A method that `audits_labels`: the held-out class probabilities [N + M, K] the
        label audit decides from (`audit.audit_columns`): the N training rows, then the M
        rows of `data.audited_splits()`; or None to decide from its posterior."""
        return None

    # The usual method: one stage named after it.

    def prepare(self, run):
        """What its stage needs before training (e.g. T, τ): a dict for `build`,
        `callbacks` and `extra`. Runs only when the stage trains."""
        return {}

    def build(self, run, inputs):
        """Its Keras model around a fresh classifier (called in the strategy's scope, with
        the seed set)."""
        raise NotImplementedError

    def callbacks(self, run, inputs):
        return []

    def batches(self, run, inputs):
        """None (the data view's shuffled batches), or `stages.fit`'s `train_data`: a
        function initial_epoch -> (dataset, steps per epoch) of batches of its own."""
        return None

    def new_classifier(self, config, data):
        """A new classifier of the kind its final stage returns (`stages.new_classifier`;
        the selected epoch's weights go into it for the export)."""
        from idn_tf import stages
        return stages.new_classifier(config, data)

    def final_classifier(self, config, data):
        """`new_classifier` built in the run's strategy scope (a reused stage's saved
        weights are loaded into it)."""
        from idn_tf import distribution
        with distribution.get_strategy(config.strategy).scope():
            return self.new_classifier(config, data)

    def training_data(self, run):
        """The data view its stage trains on (e.g. with batches of its own making)."""
        return run.data

    def stage_config(self, config):
        """The configuration its stage trains with (e.g. a constant learning rate)."""
        return config

    def extra(self, run, inputs, model):
        """Its own results of a stage just trained, kept in <stage>.json ({}: none)."""
        return {}

    def finish(self, run, model):
        """After training, before the classifier is written (e.g. write soft labels);
        returns more `extra`."""
        return {}

    def describe(self, config):
        """A line printed under its stage's banner (None: none)."""
        return None

    def train(self, run):
        from idn_tf import artifacts, runfolder, stages
        config, folder, stage = run.config, run.folder, self.final_stage()

        def fresh():
            inputs = self.prepare(run)
            runfolder.banner(f"{stage}: {self.about}")
            if self.describe(config):
                print(self.describe(config))
            with stages.model_scope(config):
                model = self.build(run, inputs)
            result = stages.fit(model, self.stage_config(config), self.training_data(run),
                                run.labels, stage, self.callbacks(run, inputs),
                                train_data=self.batches(run, inputs))
            extra = {**self.extra(run, inputs, model), **self.finish(run, model)}
            print(f"{self.name} test accuracy {100 * result.test_accuracy:.2f}%")
            return runfolder.Trained(model.classifier, result, extra=extra, model=model)

        def save(trained):
            folder.write(artifacts.write_weights, "classifier.weights.h5", trained.classifier)

        def load(result, extra):
            classifier = folder.weights_into("classifier.weights.h5",
                                             self.final_classifier(config, run.data))
            return runfolder.Trained(classifier, result, extra=extra)

        return folder.stage(stage, stage, ("classifier.weights.h5", *self.stage_files()),
                            fresh, save, load)

    def stage_files(self):
        """The files besides classifier.weights.h5 and <stage>.json that its stage must
        have left to be reused on restart."""
        return ()


def without_step_decay(config):
    """`config` without the recipe's step decay: the constant rate a method's own schedule
    (a callback setting the rate epoch by epoch) starts from."""
    return dataclasses.replace(config, lr_decay_epochs=())


# The closing table's rows of a method that learns soft labels (`soft_label_rates`).
SOFT_LABEL_ROWS = (
    ("wrong training labels corrected by the soft labels", "soft_labels_corrected"),
    ("right training labels kept by the soft labels", "soft_labels_kept"))


def soft_label_rates(soft, labels, clean_labels):
    """How the arg max of learned soft labels [N, K] compares with the clean labels
    (`report.label_correction`): soft_labels_corrected, soft_labels_kept."""
    from idn_tf import report
    rates = report.label_correction(soft, labels, clean_labels)
    return {"soft_labels_corrected": rates["wrong_labels_corrected"],
            "soft_labels_kept": rates["right_labels_kept"]}
