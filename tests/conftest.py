"""Test-wide settings and the runs several test files share.

Settings: quiet TensorFlow start-up (must precede its import), and the checkout under test
first on the path of every command the tests start.

Shared runs (session fixtures, made once and only when a selected test asks for them):

- `digits_run`: one tiny digits run of the method (`train.run`, 3 epochs, exported), read by
  test_train.py, test_audit.py and test_bad_input.py. A test that changes a run folder
  takes `digits_run_copy` instead (its own copy, run folder and export).
- `method_comparison`: one short `python -m idn_tf.compare` of all nine methods on the same
  planted labels (--deterministic), read by test_methods_run.py and
  test_stateful_methods_run.py.

Runs made by commands start in the background at the session's first test (early.py), so
that they run while the tests before them do: the comparison above, test_compare.py's
comparison, test_clothing1m_run.py's finished run, and the kill-and-resume sets of
test_resume.py and test_stateful_methods_run.py (killed.py).

`zygote` (session): a cli.Zygote, for the commands that only refuse their input.

The end-to-end tests are marked `e2e` (setup.cfg); `pytest -m "not e2e"` runs the rest.
"""

import os
import shutil

import pytest

import early

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# `python -m idn_tf.train` in a test's tmp_path would otherwise import whichever idn_tf
# is installed (an editable install may point at another checkout): the commands must run
# the code these tests were collected from, as the in-process tests do.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO])


# ---------------------------------------------------------------------------------------
# The tiny digits run

# A short schedule: η updates in epochs 2 and 3, lr decay after epoch 2 (test_train.TINY,
# test_audit.TINY and test_bad_input.FINISHED say the same, checked there).
DIGITS_RUN = dict(epochs=3, eta_start_epoch=2, eta_every=1, lr_decay_epochs=(2,), verbose=0,
                  audit_folds=2)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """(config, results) of a finished digits run: <tmp>/digits, exported to <tmp>/exports.
    Read it only: tests that change a run folder take `digits_run_copy`."""
    from idn_tf import config as config_lib, train
    root = tmp_path_factory.mktemp("digits_run")
    cfg = config_lib.Config(run_dir=str(root / "digits"), export_dir=str(root / "exports"),
                            **DIGITS_RUN)
    return cfg, train.run(cfg)


@pytest.fixture
def digits_run_copy(digits_run, tmp_path):
    """(config, results) of a copy of `digits_run` in tmp_path, as if the run had been made
    there: the run folder and its export copied (modification times kept), and results.json
    naming the copied SavedModel."""
    import dataclasses
    import json
    cfg, res = digits_run
    root = tmp_path / "digits_run"
    run_dir, export_dir = root / os.path.basename(cfg.run_dir), root / "exports"
    shutil.copytree(cfg.run_dir, run_dir)
    shutil.copytree(cfg.export_dir, export_dir)
    res = json.loads(json.dumps(res))
    res["saved_model"] = str(export_dir / os.path.relpath(res["saved_model"], cfg.export_dir))
    results = run_dir / "results.json"
    saved = json.loads(results.read_text())
    saved["saved_model"] = res["saved_model"]
    results.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    return dataclasses.replace(cfg, run_dir=str(run_dir), export_dir=str(export_dir)), res


# ---------------------------------------------------------------------------------------
# The comparison of every method

# test_methods_run.SHORT and test_stateful_methods_run.SHORT / METHODS in one set of flags
# (each method's own flags concern only it); the fixtures there check each cell's config.
# The whole training split trains (no validation split): those tests count its 1,437 rows.
METHOD_COMPARISON = dict(
    dataset="digits", noise="ccn", noise_rate=0.4, epochs=4, lr_decay_epochs=(3,), val_fraction=0.0,
    eta_start_epoch=2, eta_every=1, verbose=0, monitor_every=1000, dmi_lr=1e-4,
    coteaching_tau="0.3", coteaching_t_k=2, tanaka_start_epoch=2, pencil_joint_start=2,
    pencil_finetune_start=4, pencil_lambda=600.0, audit_folds=2)
# The stateful baselines first, in a fresh process as a `python -m idn_tf.train` run would be.
COMPARED_METHODS = ("coteaching", "tanaka", "pencil", "ce", "idn", "forward", "ldmi",
                    "bootstrap_soft", "bootstrap_hard", "elr", "sop", "dividemix")


@early.job("method_comparison")
def _method_comparison(tmp_path_factory):
    import cli as cli_lib
    root = tmp_path_factory.mktemp("method_comparison")
    flags = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
             for k, v in METHOD_COMPARISON.items()]
    result = cli_lib.run("idn_tf.compare", "--deterministic", *flags, "--seeds=0",
                         f"--methods={','.join(COMPARED_METHODS)}", "--compare_dir=cmp", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return {method: root / "cmp" / f"{method}-0" for method in COMPARED_METHODS}


@pytest.fixture(scope="session")
def method_comparison(tmp_path_factory):
    """{method: cell folder} of one `python -m idn_tf.compare --deterministic` of every
    method with METHOD_COMPARISON, seed 0 (all cells on the same labels; ce, idn, forward
    and ldmi share one stage 1), started early. Read only: copy a cell to change it."""
    return early.result("method_comparison", tmp_path_factory)


# ---------------------------------------------------------------------------------------
# Runs started early (early.py)


@pytest.fixture(scope="session", autouse=True)
def _start_early_runs(request, tmp_path_factory):
    early.start(request.session.items, tmp_path_factory)
    yield
    early.stop()


# ---------------------------------------------------------------------------------------
# Commands that only refuse their input


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """A cli.Zygote: `python -m idn_tf.train` or `idn_tf.compare` in a fork of a process
    that has done their imports once, for the commands that stop at a bad input."""
    import cli as cli_lib
    process = cli_lib.Zygote(tmp_path_factory.mktemp("zygote") / "log")
    yield process
    process.close()
