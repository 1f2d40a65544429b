"""PENCIL's learning rate per phase (`methods.pencil`): the authors' schedule, worked by
hand from their code (PENCIL.py, adjust_learning_rate), and what a short run logs."""

import numpy as np
import pytest

from idn_tf import config as config_lib, train
from idn_tf.methods import pencil


def test_authors_schedule_at_their_own_settings():
    # Their CIFAR-10 run: 320 epochs, phase 3 from epoch 201 (1-based), lr 0.06 and 0.2;
    # their 0-based epochs 0-199 at 0.06, 200-239 at 0.2, 240-279 at 0.02, 280-319 at 0.002.
    rates = [pencil.authors_learning_rate(e, 0.06, 201, 320) for e in range(320)]
    expected = [0.06] * 200 + [0.2] * 40 + [0.02] * 40 + [0.002] * 40
    np.testing.assert_allclose(rates, expected, rtol=1e-12)


def test_authors_schedule_without_phase_3_is_constant():
    assert {pencil.authors_learning_rate(e, 0.1, 11, 10) for e in range(10)} == {0.1}


def test_recipe_schedule_keeps_the_step_decay():
    cfg = config_lib.resolve({"method": "pencil", "pencil_lr_schedule": "recipe"})
    assert pencil.METHOD.stage_config(cfg) is cfg
    authors = pencil.METHOD.stage_config(config_lib.resolve({"method": "pencil"}))
    assert authors.lr_decay_epochs == ()  # the callback sets every epoch's rate


@pytest.mark.e2e
def test_a_short_run_logs_the_authors_rates(tmp_path):
    # 6 epochs, phase 3 from epoch 4: 3 phase-3 epochs, one per third.
    lr = 0.05
    cfg = config_lib.resolve(dict(
        dataset="digits", noise="ccn", noise_rate=0.4, method="pencil", epochs=6, lr=lr,
        lr_decay_epochs=(2,), pencil_joint_start=2, pencil_finetune_start=4,
        pencil_lambda=600.0, verbose=0, monitor_every=1000, export_dir="",
        run_dir=str(tmp_path / "run")))
    history = train.run(cfg)["method_history"]
    restart = lr * 0.2 / 0.06
    np.testing.assert_allclose(history["learning_rate"],
                               [lr, lr, lr, restart, restart / 10, restart / 100], rtol=1e-6)
    assert history["pencil_phase"] == [1, 2, 2, 3, 3, 3]
