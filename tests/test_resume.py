"""A run killed with SIGKILL and started again resumes where it stopped and ends exactly
as an uninterrupted run (BackupAndRestore, (seed, epoch) data order, --deterministic)."""

import os

import numpy as np
import pytest

from idn_tf import artifacts

import early
import killed as killed_lib

pytestmark = pytest.mark.e2e

FLAGS = ["--deterministic", "--epochs=6", "--eta_start_epoch=2", "--eta_every=1",
         "--lr_decay_epochs=4", "--verbose=2", "--monitor_every=4", "--export_dir=",
         "--augment=pad_crop_flip", "--crop_padding=1"]
STAGES = ["stage1", "stage2"]
KILL_AFTER = 3  # epochs


@early.job("resume_runs", __name__)
def _resume_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cases = {}
    for stage in STAGES:
        (root / stage).mkdir()
        cases[stage] = killed_lib.Case(
            root / stage, (*FLAGS, "--run_dir=run"),
            root / stage / "run" / "backup" / stage / f"epoch-{KILL_AFTER:06d}")
    (root / "whole").mkdir()
    resumed, whole = killed_lib.kill_and_resume(
        cases, alongside={"whole": (root / "whole", (*FLAGS, "--run_dir=run"))})
    code, out = whole["whole"]
    assert code == 0, out[-3000:]
    return root / "whole" / "run", {stage: (root / stage / "run", resumed[stage])
                                    for stage in STAGES}


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    """(the uninterrupted run's folder, {stage: (run folder, killed_lib.Resumed)}): one run
    SIGKILLed once `stage` has a backup of 3 epochs, then started again, for each stage;
    the uninterrupted run alongside (started early)."""
    return early.result("resume_runs", tmp_path_factory)


def outcome(run_dir):
    res = artifacts.read_json(os.path.join(run_dir, "results.json"))
    return np.load(os.path.join(run_dir, "eta.npy")), res


@pytest.mark.parametrize("stage", STAGES)
def test_killed_run_resumes_and_matches_an_uninterrupted_one(resume_runs, stage):
    uninterrupted, cases = resume_runs
    run_dir, resumed = cases[stage]
    assert resumed.killed, "the run ended before it could be killed"
    assert resumed.returncode == 0, resumed.output[-3000:]
    out = resumed.output
    assert f"resuming {stage} after epoch {KILL_AFTER}" in out
    if stage == "stage2":
        assert "stage 1: reusing" in out  # stage 1 is not redone
    assert not os.path.exists(os.path.join(run_dir, "backup", stage))  # removed once done

    eta, res = outcome(run_dir)
    eta_whole, res_whole = outcome(uninterrupted)
    assert np.max(np.abs(eta - eta_whole)) <= 1e-6
    assert res["method_test_accuracy"] == res_whole["method_test_accuracy"]
    assert res["ce_test_accuracy"] == res_whole["ce_test_accuracy"]
    # The histories cover every epoch, the restored ones included.
    assert res["method_history"] == res_whole["method_history"]
    assert res["ce_history"] == res_whole["ce_history"]
    assert res["method_monitor"] == res_whole["method_monitor"]
    # The same epochs are selected and their classifiers kept, the killed stage's included
    # (its best epoch so far is in the backup: callbacks.BestEpoch).
    for prefix, key in (("ce", "ce_selected_epoch"), ("method", "selected_epoch")):
        assert res[key] == res_whole[key] is not None
        assert res[f"{prefix}_test_accuracy_selected"] == res_whole[f"{prefix}_test_accuracy_selected"]
    for name in ("stage1.selected.npz", "stage2.selected.npz"):
        with np.load(os.path.join(run_dir, name)) as a, np.load(os.path.join(uninterrupted, name)) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_allclose(a[key], b[key], atol=1e-6)
