"""Callbacks for stage 2: the η-update schedule (PGA) and its logging."""

import keras
import numpy as np


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
