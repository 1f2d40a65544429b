"""--jit_compile: the paper's method and a table-based baseline trained with XLA end where
the same runs without it end (η, the soft-label table), and XLA was really used.

The runs are `train.run` of two configurations that differ only in --jit_compile, on
digits for 2 epochs (η updated in both): the numbers compared are both computed here.
XLA's step equals TensorFlow's to float32 rounding, and training makes rounding grow:
at the digits recipe's lr 0.05 the tables end ~1e-2 apart after an epoch, so the runs
here take small steps (lr 1e-3), and a larger ε in Eq. 11 (its η gradient is
∝ 1/(η + ε), which multiplies a difference in η near 0 by up to 1/ε²; docs/run_folder.md,
"XLA"). So the runs take the literal equations (--eta_numerics=literal), whose ε can be
raised: the authors' default divides by max(η, 1e-5), and that fixed floor multiplies
rounding near η = 0 by up to 1e10 (a few examples' η then end ~1e-3 apart).
Where XLA cannot be used (several replicas, --deterministic) `distribution.xla_plan`
decides; its tests are in test_distribution.py.
"""

import os
from unittest import mock

import keras
import numpy as np
import pytest

from idn_tf import config as config_lib, train

pytestmark = pytest.mark.e2e  # four short training runs

EPS = 0.1

SHORT = dict(epochs=2, eta_start_epoch=1, eta_every=1, lr_decay_epochs=(), verbose=0,
             export_dir="", lr=1e-3, eta_eps=EPS, eta_numerics="literal", audit_folds=2)
# What each method's run leaves in its folder to compare: its per-example tables.
TABLES = {"idn": ("eta.npy", "psi.npy"), "elr": ("soft_labels.npy",)}


def run(tmp_path, method, jit_compile):
    """(the run folder, the `jit_compile` of every model Keras fitted in it)."""
    run_dir = tmp_path / f"{method}-{'xla' if jit_compile else 'plain'}"
    cfg = config_lib.Config(method=method, jit_compile=jit_compile, run_dir=str(run_dir),
                            **SHORT)
    compiled, fit = [], keras.Model.fit

    def spy(model, *args, **kwargs):
        compiled.append(model.jit_compile)
        return fit(model, *args, **kwargs)

    with mock.patch.object(keras.Model, "fit", spy):
        train.run(cfg)
    return run_dir, compiled


@pytest.mark.parametrize("method", sorted(TABLES))
def test_xla_run_ends_with_the_tables_of_the_run_without_it(tmp_path, method):
    plain, plain_compiled = run(tmp_path, method, False)
    xla, xla_compiled = run(tmp_path, method, True)
    # idn: stage 1 (CE), stage 2 and the label audit's held-out folds
    stages = 2 + SHORT["audit_folds"] if method == "idn" else 1
    assert plain_compiled == [False] * stages and xla_compiled == [True] * stages
    for name in TABLES[method]:
        without, with_xla = np.load(os.path.join(plain, name)), np.load(os.path.join(xla, name))
        assert without.shape == with_xla.shape and without.dtype == np.float32, name
        np.testing.assert_allclose(with_xla, without, rtol=0, atol=1e-5, err_msg=name)
    if method == "idn":  # η moved by far more than the tolerance: the comparison says something
        eta = np.load(os.path.join(plain, "eta.npy"))
        assert np.abs(eta - config_lib.Config().eta_init).max() > 100 * 1e-5
