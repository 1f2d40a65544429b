"""One run's folder: where each stage's files go, and the one way a stage is reused or trained.

Every stage of a run (stage 1, a method's stages, the fine-tuning) goes through
`RunFolder.stage`: when a finished run left the stage's files and its <stage>.json,
they are loaded; else the stage is trained, its files are written (atomically, on the
chief only), then <stage>.json, and only then its backup is deleted, so a kill at any
point loses at most the epoch in progress. A value a stage trains with and must keep
when it resumes (Forward's T, Co-teaching's τ) goes through `RunFolder.kept`.
Other workers of a multi-worker run write nothing. TensorFlow is imported only where
a stage needs it, so that bad flags or data fail before it starts.
"""

import dataclasses
import os
import shutil

import numpy as np

from idn_tf import artifacts, distribution

# Row #10's fine-tuning continues a finished run in its folder: changing only these flags
# keeps the other stages and redoes the fine-tuning, the report and the export.
FINETUNE_FIELDS = ("finetune_clean_epochs", "finetune_lr")
FINETUNE_RESULTS = ("finetune.json", "finetuned.weights.h5", "finetune.selected.npz",
                    "results.json", "backup/finetune", "tb/finetune")


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage leaves behind besides its model.

    selection: the epoch chosen on the validation split (`callbacks.BestEpoch`):
    {"epoch" (1-based), "validation_accuracy", "test_accuracy" (of that epoch's
    classifier)}, or None without a validation split; selected_weights: that
    classifier's weights (only while the stage is in memory: the run folder keeps them
    in <stage>.selected.npz).
    """
    test_accuracy: float   # clean test accuracy after the last epoch
    history: dict          # per-epoch logs from keras History
    monitor: dict          # per monitored epoch: callbacks.MonitorCallback.history
    selection: dict = None
    selected_weights: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def best_test_accuracy(self):
        """The highest clean test accuracy of any evaluated epoch: an optimistic figure
        (choosing it looks at the test set), the paper's Table 3 protocol."""
        values = np.asarray(self.history.get("test_accuracy", [self.test_accuracy]),
                            np.float64)
        return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")


@dataclasses.dataclass
class Trained:
    """A trained (or reloaded) stage.

    classifier: the stage's classifier (the inference model); model: the Keras model it
    trained as (e.g. an `IDNModel`; None when reloaded or when it is the classifier);
    extra: the method's own results, kept in <stage>.json under "extra" (None: no key);
    value: anything else the stage yields (ψ, soft labels, η ...).
    """
    classifier: object
    result: StageResult
    extra: dict = None
    model: object = None
    value: object = None


def banner(text):
    print(f"\n== {text}", flush=True)


def load_array(path, *shape, older=()):
    """An array of `shape` saved with np.save (e.g. ψ [N], or the T [K, K] a run used), or
    of one of the shapes `older` (the file's layout in runs made before it grew)."""
    array = np.load(path)
    if array.shape != shape and array.shape not in older:
        raise ValueError(f"shape {array.shape}, expected {shape}")
    return array


class RunFolder:
    """The run folder of `config` (config.run_dir), as its stages use it.

    `final_stage`: the stage that trains the run's final classifier; training it again
    deletes the fine-tuning's files (they were made from the previous one).
    """

    def __init__(self, config, final_stage=None):
        self.config = config
        self.dir = config.run_dir
        self.final_stage = final_stage
        self.is_chief = distribution.is_chief(config.strategy)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, write, name, *args, **kwargs):
        """artifacts.<write>(<run_dir>/<name>, ...) on the chief; other workers write nothing."""
        if self.is_chief:
            write(self.path(name), *args, **kwargs)

    def remove(self, names):
        """Deletes `names` (relative to the folder) on the chief."""
        if self.is_chief:
            artifacts.remove(self.dir, names)

    def has(self, *names):
        """Whether all of `names` exist (and --overwrite does not discard them)."""
        return not self.config.overwrite and all(os.path.isfile(self.path(n)) for n in names)

    def reuse(self, name, load):
        """load() of a run-folder file, or a one-line RunDirError if the file is damaged."""
        try:
            return load()
        except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
            if isinstance(e, artifacts.RunDirError):
                raise
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise artifacts.RunDirError(f"{self.path(name)} is damaged ({why}); delete it to "
                                        "recompute it, or pass --overwrite") from None

    def array(self, name, *shape, older=()):
        """The np.save'd array `name` of `shape` (or of an `older` one, `load_array`);
        RunDirError if it is damaged."""
        return self.reuse(name, lambda: load_array(self.path(name), *shape, older=older))

    def weights_into(self, name, classifier):
        """Loads the weights file `name` into `classifier`; returns it."""
        self.reuse(name, lambda: classifier.load_weights(self.path(name)))
        return classifier

    def backup_dir(self, stage):
        """Where a stage's BackupAndRestore keeps its last complete epoch."""
        return os.path.join(self.dir, "backup", stage)

    def resuming(self, stage):
        """Whether `stage` has a backup of a finished epoch to resume from."""
        from idn_tf import callbacks  # TensorFlow: only once a run is under way
        return (not self.config.overwrite
                and callbacks.Backup.latest(self.backup_dir(stage))[0] > 0)

    def stage(self, name, title, files, train, save, load, training=None,
              optional_monitor=False):
        """The stage `name`: reused when its `files` and <name>.json exist, else trained.

        `title` heads the "reusing" line, `training` the banner of a stage that trains
        (None: train() prints its own, e.g. after preparing its inputs). train() -> Trained; save(trained) writes `files` (with `self.write`), then
        <name>.json gets the test accuracy, history, monitoring and `extra`, and the
        stage's backup is removed. load(result, extra) -> Trained rebuilds the stage from
        `files` (`result`, `extra`: read back from <name>.json). `optional_monitor`: a
        <name>.json may lack "monitor" (written before monitoring existed).
        """
        json_name = f"{name}.json"
        if self.has(*files, json_name):
            banner(f"{title}: reusing {' and '.join(self.path(f) for f in files)}")
            saved = self.reuse(json_name, lambda: artifacts.read_json(self.path(json_name)))
            result = self.reuse(json_name, lambda: StageResult(
                saved["test_accuracy"], saved["history"],
                saved.get("monitor", {}) if optional_monitor else saved["monitor"],
                selection=saved.get("selection")))
            if result.selection:
                self.has_selected(name)  # RunDirError if damaged
            return load(result, saved.get("extra", {}))
        # A <name>.json left by an earlier attempt would mark files written now as done.
        self.remove([json_name])
        if name == self.final_stage:  # a fine-tuning of an earlier classifier must not be reused
            self.remove(FINETUNE_RESULTS)
        if training:
            banner(training)
        trained = train()
        save(trained)
        if trained.result.selected_weights is not None:
            from idn_tf import callbacks
            self.write(artifacts.write_npz, self.selected_name(name),
                       **callbacks.weights_arrays(trained.result.selected_weights))
        stage = {"test_accuracy": trained.result.test_accuracy,
                 "history": trained.result.history}
        if trained.result.selection is not None:
            stage["selection"] = trained.result.selection
        if trained.result.monitor is not None:
            stage["monitor"] = trained.result.monitor
        if trained.extra is not None:
            stage["extra"] = trained.extra
        self.write(artifacts.write_json, json_name, stage)
        if self.is_chief:
            shutil.rmtree(self.backup_dir(name), ignore_errors=True)
        return trained

    @staticmethod
    def selected_name(stage):
        return f"{stage}.selected.npz"

    def has_selected(self, stage):
        """Whether <stage>.selected.npz is there; RunDirError if <stage>.json says it
        should be and it is not (it is written before the json)."""
        path = self.path(self.selected_name(stage))
        if not os.path.isfile(path):
            raise artifacts.RunDirError(f"{path} is missing though {self.path(stage + '.json')} "
                                        "has a selected epoch; delete that json to retrain the "
                                        "stage, or pass --overwrite")
        return True

    def selected_weights(self, stage):
        """The weights list of `stage`'s selected classifier, from the run folder."""
        from idn_tf import callbacks
        name = self.selected_name(stage)
        return self.reuse(name, lambda: callbacks.load_weights_list(self.path(name)))

    def kept(self, name, stage, make, load, save):
        """A value `stage` trains with and must keep across a restart (Forward's T,
        Co-teaching's τ): loaded from `name` when the stage resumes from a backup,
        else make(), written with save(path, value) (chief only)."""
        if os.path.isfile(self.path(name)) and self.resuming(stage):
            return self.reuse(name, lambda: load(self.path(name)))
        value = make()
        self.write(save, name, value)
        return value
