"""--method=sop end to end on digits: the cell of conftest.py's comparison of every method
(`method_comparison`, --deterministic), a run killed after its second epoch and started
again (killed.py) that ends exactly where the uninterrupted cell ends, TensorBoard, and
the resumed run's export served by a process without idn_tf (test_export.py's script)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from idn_tf import artifacts, inputs
from idn_tf import config as config_lib
from idn_tf import stages
from idn_tf.methods.sop import cosine_learning_rate

import early
import killed as killed_lib
import tb_events
from conftest import METHOD_COMPARISON
from test_export import LOAD_AND_SERVE
from test_stateful_methods_run import h5_arrays

pytestmark = pytest.mark.e2e  # the CLI, kill and resume, serving

ARGS = ("--deterministic", "--method=sop", "--run_dir=run",
        *(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
          for k, v in METHOD_COMPARISON.items()))


def read(run_dir, name):
    return artifacts.read_json(os.path.join(run_dir, name))




@pytest.fixture(scope="module")
def whole(method_comparison):
    """The comparison's sop cell: an uninterrupted run with ARGS' flags (checked)."""
    cell = method_comparison["sop"]
    cfg = config_lib.resolve({**METHOD_COMPARISON, "method": "sop", "run_dir": str(cell)})
    assert read(cell, "config.json") == json.loads(json.dumps(cfg.semantic_dict()))
    return cell


@early.job("sop_resumed", __name__)
def _sop_resumed(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sop_resumed")
    case = killed_lib.Case(cwd, (*ARGS, "--export_dir=exports"),
                           cwd / "run" / "backup" / "sop" / "epoch-000002")
    resumed, _ = killed_lib.kill_and_resume({"sop": case})
    return cwd / "run", resumed["sop"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """(run folder, killed.Resumed) of a run SIGKILLed once its epoch-2 backup appeared,
    then started again with the same command and an export (started early)."""
    return early.result("sop_resumed", tmp_path_factory)


def test_the_cell_trains_with_the_authors_schedule_and_reports_its_labels(whole):
    res = read(whole, "results.json")
    assert res["method"] == "sop" and res["ce_test_accuracy"] is None
    assert not os.path.exists(whole / "stage1.json")  # trains from scratch
    epochs = METHOD_COMPARISON["epochs"]
    np.testing.assert_allclose(res["method_history"]["learning_rate"],
                               [cosine_learning_rate(e, 0.05, epochs) for e in range(epochs)],
                               rtol=1e-6)
    for key in ("sop_labels_corrected", "sop_labels_kept"):
        assert 0.0 <= res[key] <= 1.0
    assert res["sop_labels_kept"] > 0.9
    assert res["method_test_accuracy"] > 0.5
    tags = {value.tag for _, value in tb_events.summaries(whole / "tb" / "sop" / "train")}
    assert {"epoch_loss", "epoch_learning_rate"} <= tags, tags


def test_killed_run_resumes_and_matches_an_uninterrupted_one(whole, resumed):
    run_dir, result = resumed
    assert result.killed, "the run ended before it could be killed"
    assert result.returncode == 0, result.output[-3000:]
    assert "resuming sop after epoch 2" in result.output
    assert not os.path.exists(run_dir / "backup" / "sop")
    res, res_whole = read(run_dir, "results.json"), read(whole, "results.json")
    for key in ("method_test_accuracy", "method_history", "method_monitor",
                "sop_labels_corrected", "sop_labels_kept"):
        assert res[key] == res_whole[key], key
    weights = h5_arrays(run_dir / "classifier.weights.h5")
    expected = h5_arrays(whole / "classifier.weights.h5")
    assert weights.keys() == expected.keys()
    for name in weights:
        np.testing.assert_array_equal(weights[name], expected[name], err_msg=name)


def test_the_export_serves_without_idn_tf(resumed, tmp_path):
    run_dir, _ = resumed
    cfg = config_lib.resolve({**METHOD_COMPARISON, "method": "sop", "run_dir": str(run_dir)})
    data = inputs.load_data(cfg)
    classifier = stages.new_classifier(cfg, data)
    classifier.load_weights(run_dir / "classifier.weights.h5")
    images = data.dataset.test.images[:16]
    np.savez(tmp_path / "images.npz", images=images)
    # results.json names it relative to the run's working directory.
    saved = str(run_dir.parent / read(run_dir, "results.json")["saved_model"])
    subprocess.run([sys.executable, "-c", LOAD_AND_SERVE, saved, str(tmp_path / "images.npz"),
                    str(tmp_path / "outputs.npz"), "16"], cwd=tmp_path, check=True)
    outputs = np.load(tmp_path / "outputs.npz")
    logits = classifier.predict(images, verbose=0).astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(outputs["probabilities_16"], probs / probs.sum(-1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["classes_16"], logits.argmax(-1))
