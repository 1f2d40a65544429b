"""Callbacks: the η-update schedule of stage 2 (PGA), per-epoch label monitoring, the
clean test evaluation, model selection on the validation split, the exact backup, and
the progress line."""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from idn_tf import artifacts, plots, posterior, report
from idn_tf.model import example_log_probs
from idn_tf.data import views


def pga_schedule(start_epoch, every):
    """The paper's η schedule: on in epoch `start_epoch` and every `every`-th after.

    Epochs are 1-based as the paper counts them (CIFAR: 35, 40, 45, …;
    Clothing1M: start 2, every 1). Returns a function epoch -> bool.
    """
    if start_epoch < 1 or every < 1:
        raise ValueError(f"need start_epoch >= 1 and every >= 1, got {start_epoch}, {every}")

    def schedule(epoch):
        return epoch >= start_epoch and (epoch - start_epoch) % every == 0

    return schedule


class PGACallback(keras.callbacks.Callback):
    """Switches the model's η updates on or off at the start of every epoch.

    Args:
      schedule: function of the 1-based epoch number returning a bool (e.g.
        `pga_schedule(35, 5)`); the model must have a boolean variable
        `eta_update_enabled` (`IDNModel`).
      verbose: 1 prints a line whenever updates switch on.

    Writes `eta_update` (1.0 or 0.0) into the epoch's logs so History and
    TensorBoard see it, as LearningRateScheduler does for the learning rate.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        enabled = self.schedule(epoch + 1)
        if not isinstance(enabled, (bool, np.bool_)):
            raise ValueError(
                f"the η schedule must return a bool, got {enabled!r} for epoch {epoch + 1}")
        self.model.eta_update_enabled.assign(bool(enabled))
        if enabled and self.verbose:
            print(f"\nEpoch {epoch + 1}: η updates on.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["eta_update"] = float(bool(self.model.eta_update_enabled.numpy()))


class EveryEpochs(keras.callbacks.Callback):
    """A callback that acts every `every`-th epoch and after the last (`due`), writing
    summaries to its own file writer in `log_dir` (None: no writer) while fit runs."""

    def __init__(self, log_dir, every):
        super().__init__()
        self.log_dir = log_dir
        self.every = every
        self._writer = None

    def due(self, epoch):
        """Whether 0-based `epoch` is an `every`-th one or the last."""
        return (epoch + 1) % self.every == 0 or epoch + 1 == self.params.get("epochs")

    def on_train_begin(self, logs=None):
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MonitorCallback(EveryEpochs):
    """Per-epoch label monitoring for TensorBoard: the data of the paper's Fig. 4 and 5.

    At the end of every `every`-th epoch (and of the last one) it predicts the
    un-augmented training `images` with the model's classifier and writes to a
    summary writer in `log_dir`:

      accuracy/train_observed  accuracy against the observed `labels`
      accuracy/test            the epoch's test accuracy (logs["test_accuracy"],
                               `TestEvaluation`; not written in an epoch without one)

    and, for a model with η and ψ tables (`IDNModel`), from the posterior q
    (Eq. 8) of the current classifier, η and ψ:

      eta/mean, eta/above_half   mean of η and of 1{η > 0.5} over the table
      eta/histogram              histogram of η
      labels/wrong_corrected     wrong labels whose argmax q is the clean label  } where some
      labels/right_kept          right labels whose argmax q keeps the label     } clean labels
      labels/eta_auroc           AUROC of η as a detector of wrong labels        } are known
      labels/highest_eta         image: the `top_k` examples with the highest η,
                                 captioned with observed and estimated labels

    `images` is a uint8 array [N, ...] or a data view (`data.views`: `unaugmented` and
    `images` of the training examples, e.g. streamed from files). With more η rows
    than `labels` (clean examples mixed in, rows N..), only the first N are monitored.

    Steps are 0-based epochs, as Keras's TensorBoard callback counts them.
    `history` keeps the scalars of every monitored epoch (with "epoch" 1-based)
    for the plots and results.json.
    """

    def __init__(self, log_dir, images, labels, clean_labels=None, class_names=None,
                 batch_size=256, every=1, top_k=16):
        super().__init__(log_dir, every)
        self.examples = views.as_examples(images)
        self.labels = np.asarray(labels)
        # -1 marks an unknown clean label (none known: no label-correction scalars).
        self.clean_labels = (np.full(len(self.labels), -1) if clean_labels is None
                             else np.asarray(clean_labels))
        self.class_names = class_names
        self.batch_size = batch_size
        self.top_k = top_k
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        if not self.due(epoch):
            return
        logs = logs or {}
        if self.model.stop_training or not np.isfinite(logs.get("loss", 0.0)):
            return  # a diverged epoch (NaN loss, maybe NaN η): nothing worth showing
        log_probs = example_log_probs(self.model.classifier, self.examples, self.batch_size)
        scalars = {
            "accuracy/train_observed": float(np.mean(log_probs.argmax(1) == self.labels)),
            "accuracy/test": float(logs.get("test_accuracy", np.nan)),
        }
        with self._writer.as_default(step=epoch):
            if hasattr(self.model, "eta"):
                scalars.update(self._write_label_estimates(log_probs))
            for name, value in scalars.items():
                if value == value:  # NaN: undefined (e.g. no clean labels), not written
                    tf.summary.scalar(name, value)
        self._writer.flush()
        self.history.setdefault("epoch", []).append(epoch + 1)
        for name, value in scalars.items():
            self.history.setdefault(name, []).append(value)

    def _write_label_estimates(self, log_probs):
        """η summaries and how argmax q compares with the labels; returns the scalars."""
        n = len(self.labels)
        eta, psi = self.model.eta.numpy()[:n], self.model.psi.numpy()[:n]
        q = posterior.posterior_from_log_probs(log_probs, self.labels, eta, psi,
                                               self.model.numerics).numpy()
        estimated = q.argmax(1)
        correction = report.label_correction(q, self.labels, self.clean_labels)
        tf.summary.histogram("eta/histogram", eta, buckets=50)
        top = report.ranking(q, eta, self.labels)[:self.top_k]
        known = self.clean_labels[top] >= 0
        figure = plots.highest_eta_figure(
            self.examples.images(top), top, self.labels[top], estimated[top], self.class_names,
            clean=self.clean_labels[top] if known.all() else None, eta=eta[top])
        tf.summary.image("labels/highest_eta", plots.figure_to_array(figure),
                         description=_captions(top, self.labels, estimated, eta,
                                               self.class_names))
        return {
            "eta/mean": float(np.mean(eta)),
            "eta/above_half": float(np.mean(eta > 0.5)),
            "labels/wrong_corrected": correction["wrong_labels_corrected"],
            "labels/right_kept": correction["right_labels_kept"],
            "labels/eta_auroc": report.auroc(eta, self.labels, self.clean_labels),
        }


def _captions(indices, labels, estimated, eta, class_names):
    """Markdown list of the image's examples, for its TensorBoard description."""
    def name(label):
        return str(label) if class_names is None else class_names[label]

    return "\n".join(f"- #{i}: η = {eta[i]:.3f}, observed {name(labels[i])}, "
                      f"estimated {name(estimated[i])}" for i in indices)


class TestEvaluation(EveryEpochs):
    """The clean test set, evaluated for the curves only: it decides nothing.

    At the end of every `every`-th epoch and of the last one, evaluates the model on
    `test_data` (its `test_step`: accuracy against the records' clean labels) and puts
    `test_accuracy` and `test_loss` into the epoch's logs (NaN in the other epochs, so
    that every epoch has the keys); with `log_dir` (the chief) they are also written as
    epoch_accuracy and epoch_loss to a "test" summary folder beside Keras's train/ and
    validation/ ones. Runs on every worker: evaluation is collective.
    """

    def __init__(self, test_data, every=1, log_dir=None):
        super().__init__(log_dir, every)
        self.test_data = test_data

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if not self.due(epoch) or not np.isfinite(logs.get("loss", 0.0)):
            logs.update(test_accuracy=float("nan"), test_loss=float("nan"))
            return
        result = self.model.evaluate(self.test_data, verbose=0, return_dict=True)
        logs.update(test_accuracy=float(result["accuracy"]), test_loss=float(result["loss"]))
        if self._writer is not None:
            with self._writer.as_default(step=epoch):
                tf.summary.scalar("epoch_accuracy", logs["test_accuracy"])
                tf.summary.scalar("epoch_loss", logs["test_loss"])
            self._writer.flush()


class BestEpoch(keras.callbacks.Callback):
    """Model selection on the validation split: keeps the classifier of the best epoch.

    The best epoch has the highest `val_accuracy` (accuracy against the validation
    examples' labels: the observed ones of the noisy split); among equal accuracies,
    the lowest `val_loss`, then the earliest. Epochs with a non-finite loss are
    skipped. Holds a copy of `model.classifier`'s weights of that epoch (`weights`),
    its 1-based `epoch` and its logs (`value`); `Backup` saves and restores them, so a
    kill keeps the best classifier so far. Test accuracy plays no part.
    """

    def __init__(self):
        super().__init__()
        self.epoch = None
        self.value = None
        self.weights = None

    @staticmethod
    def key(logs):
        """What is maximised: (val_accuracy, −val_loss)."""
        return (float(logs["val_accuracy"]), -float(logs.get("val_loss", 0.0)))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if (self.model.stop_training or not np.isfinite(logs.get("loss", 0.0))
                or "val_accuracy" not in logs or not np.isfinite(logs["val_accuracy"])):
            return
        if self.value is None or self.key(logs) > self.key(self.value):
            self.epoch = epoch + 1
            self.value = {"val_accuracy": float(logs["val_accuracy"]),
                          "val_loss": float(logs.get("val_loss", np.nan))}
            self.weights = [np.array(w) for w in self.model.classifier.get_weights()]

    def state(self):
        return {"epoch": self.epoch, "value": self.value}

    def restore(self, state, weights):
        self.epoch, self.value = state["epoch"], state["value"]
        self.weights = weights


# What the progress bar and the epoch line show: the training loss and accuracy, and the
# accuracies that choose (validation) and measure (test) the classifier. The other logs
# (val_loss, test_loss, η's, a method's own) are in History, results.json and TensorBoard.
PROGRESS_LOGS = ("loss", "accuracy", "val_accuracy", "test_accuracy")


class Progress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar (fit's verbose=1) and epoch line (verbose=2) of `PROGRESS_LOGS`
    only, so that a line fits in 120 columns. Last in the callbacks, to show the test
    accuracy `TestEvaluation` adds."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self.shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self.shown(logs))

    @staticmethod
    def shown(logs):
        return {key: logs[key] for key in PROGRESS_LOGS if key in (logs or {})}


class Backup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore made exact and atomic, for resuming a stage after a kill.

    At the end of every epoch with a finite loss it saves, as one unit, the model's
    weights (for `IDNModel` that includes the η and ψ tables, and the optimizer's
    state) and `state.json` (epochs done, the stage's per-epoch logs so far, and the
    `monitor`'s history): both go into a temporary folder that is renamed to
    `<backup_dir>/epoch-<n>`, then older epochs are removed. A kill at any moment
    leaves the last complete epoch. An epoch whose loss is not finite is not saved,
    so the last good epoch is what a restart resumes from.

    On train begin the latest complete epoch is restored and fit continues after it.
    `history` holds the logs of every epoch of the stage, restored ones included
    (Keras's History only sees the epochs run in this process). With `write=False`
    (a non-chief worker) it restores but never writes. A `best` (`BestEpoch`) is saved
    and restored with it: its classifier weights in best.npz, its epoch in state.json.
    """

    def __init__(self, backup_dir, monitor=None, write=True, best=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.monitor = monitor
        self.best = best
        self.write = write
        self.history = {}

    @staticmethod
    def latest(backup_dir):
        """(epochs done, folder) of the latest complete backup in `backup_dir`, or (0, None)."""
        done = []
        if os.path.isdir(backup_dir):
            for name in os.listdir(backup_dir):
                folder = os.path.join(backup_dir, name)
                if (name.startswith("epoch-") and name[6:].isdigit()
                        and os.path.isfile(os.path.join(folder, "state.json"))):
                    done.append((int(name[6:]), folder))
        return max(done, default=(0, None))

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        epoch, folder = self.latest(self.backup_dir)
        if folder is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(os.path.join(folder, "model.weights.h5"))
            with open(os.path.join(folder, "state.json")) as f:
                state = json.load(f)
            history, monitor = state["history"], state["monitor"]
            if self.best is not None and state.get("best", {}).get("epoch"):
                self.best.restore(state["best"], load_weights_list(os.path.join(folder, "best.npz")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise artifacts.RunDirError(f"the backup {folder} is damaged ({why}); delete it to "
                                        "redo its stage, or pass --overwrite") from None
        self.history = history
        if self.monitor is not None:
            self.monitor.history = monitor
        self.model._initial_epoch = self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.model.stop_training or not np.isfinite(logs.get("loss", 0.0)):
            return  # keep the last good epoch
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        self._current_epoch = epoch + 1
        if self.write:
            self._save_model()

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        temp = tempfile.mkdtemp(prefix=".tmp-", dir=self.backup_dir)
        try:
            self.model.save_weights(os.path.join(temp, "model.weights.h5"))
            state = {"epoch": self._current_epoch, "history": self.history,
                     "monitor": self.monitor.history if self.monitor is not None else {}}
            if self.best is not None and self.best.epoch:
                save_weights_list(os.path.join(temp, "best.npz"), self.best.weights)
                state["best"] = self.best.state()
            with open(os.path.join(temp, "state.json"), "w") as f:
                json.dump(state, f)
            artifacts.default_mode(temp)
            final = os.path.join(self.backup_dir, f"epoch-{self._current_epoch:06d}")
            shutil.rmtree(final, ignore_errors=True)  # a leftover from an earlier attempt
            os.rename(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        for name in os.listdir(self.backup_dir):
            folder = os.path.join(self.backup_dir, name)
            if folder != final:
                shutil.rmtree(folder, ignore_errors=True)

    def on_train_end(self, logs=None):
        """Kept: the caller removes the backup once the stage's results are written."""


def weights_arrays(weights):
    """A model's weights (a list of arrays, `get_weights()`) as .npz arrays, in order."""
    return {f"w{i:05d}": w for i, w in enumerate(weights)}


def save_weights_list(path, weights):
    np.savez(path, **weights_arrays(weights))


def load_weights_list(path):
    """The list `save_weights_list` saved, for `set_weights`."""
    with np.load(path) as saved:
        return [saved[k] for k in sorted(saved.files)]
