"""Checks of the η schedule and PGACallback."""

import keras
import numpy as np
import pytest

from idn_tf import callbacks


def test_paper_cifar_schedule():
    schedule = callbacks.pga_schedule(start_epoch=35, every=5)
    on = [e for e in range(1, 161) if schedule(e)]
    assert on == list(range(35, 161, 5))


def test_clothing1m_schedule_every_epoch_from_second():
    schedule = callbacks.pga_schedule(start_epoch=2, every=1)
    assert [schedule(e) for e in range(1, 6)] == [False, True, True, True, True]


@pytest.mark.parametrize("start, every", [(0, 5), (3, 0)])
def test_schedule_rejects_bad_arguments(start, every):
    with pytest.raises(ValueError):
        callbacks.pga_schedule(start, every)


class FakeModel:
    def __init__(self):
        self.eta_update_enabled = keras.Variable(False, dtype="bool", trainable=False)


def test_callback_sets_flag_and_logs_it():
    callback = callbacks.PGACallback(callbacks.pga_schedule(2, 3))
    callback.set_model(FakeModel())
    seen = []
    for epoch in range(7):  # 0-based as Keras counts
        callback.on_epoch_begin(epoch)
        logs = {}
        callback.on_epoch_end(epoch, logs)
        seen.append(logs["eta_update"])
    assert seen == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_callback_rejects_non_bool_schedule():
    callback = callbacks.PGACallback(lambda epoch: 1)
    callback.set_model(FakeModel())
    with pytest.raises(ValueError, match="bool"):
        callback.on_epoch_begin(0)
    callback = callbacks.PGACallback(lambda epoch: np.bool_(True))
    callback.set_model(FakeModel())
    callback.on_epoch_begin(0)
    assert bool(callback.model.eta_update_enabled.numpy())
