"""A run killed with SIGKILL and started again resumes where it stopped and ends exactly
as an uninterrupted run (BackupAndRestore, (seed, epoch) data order, --deterministic)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from idn_tf import artifacts

FLAGS = ["--deterministic", "--epochs=8", "--eta_start_epoch=2", "--eta_every=1",
         "--lr_decay_epochs=5", "--verbose=2", "--monitor_every=4", "--export_dir=",
         "--augment=pad_crop_flip", "--crop_padding=1"]


def command(run_dir):
    return [sys.executable, "-m", "idn_tf.train", *FLAGS, f"--run_dir={run_dir}"]


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run(run_dir, cwd):
    result = subprocess.run(command(run_dir), cwd=cwd, env=env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def kill_when(run_dir, cwd, stage, epoch):
    """Starts the run and SIGKILLs it once `stage` has a backup of `epoch` epochs."""
    marker = os.path.join(run_dir, "backup", stage, f"epoch-{epoch:06d}")
    process = subprocess.Popen(command(run_dir), cwd=cwd, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.isdir(marker):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    run(str(root / "run"), root)
    return root / "run"


def outcome(run_dir):
    res = artifacts.read_json(os.path.join(run_dir, "results.json"))
    return np.load(os.path.join(run_dir, "eta.npy")), res


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_killed_run_resumes_and_matches_an_uninterrupted_one(uninterrupted, tmp_path, stage):
    run_dir = str(tmp_path / "run")
    kill_when(run_dir, tmp_path, stage, epoch=3)
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    out = run(run_dir, tmp_path)
    assert f"resuming {stage} after epoch 3" in out
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
