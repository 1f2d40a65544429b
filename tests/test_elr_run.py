"""--method=elr end to end on digits (ccn r = 0.4): the cell of conftest.py's comparison of
every method (`python -m idn_tf.compare --deterministic`, 4 epochs), read only.

Checked against what the run cannot have made up: the training set's size (every row
visited once per epoch from t = 0, so Σ_k t_ik = 1 − β^epochs), the clean labels (the
soft-label rates recomputed here), the TensorBoard events read back, and the saved
classifier exported and served by a process without idn_tf.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib
from idn_tf.data import sources

from conftest import METHOD_COMPARISON

pytestmark = pytest.mark.e2e  # reads the comparison's cell; exports and serves a classifier


@pytest.fixture(scope="module")
def cell(method_comparison):
    return method_comparison["elr"]


def config(cell):
    """The cell's configuration, checked against the config.json it wrote."""
    cfg = config_lib.resolve({**METHOD_COMPARISON, "method": "elr", "run_dir": str(cell)})
    assert artifacts.read_json(cell / "config.json") == json.loads(
        json.dumps(cfg.semantic_dict()))
    return cfg


def test_elr_trains_from_scratch_and_keeps_its_targets(cell):
    res = artifacts.read_json(cell / "results.json")
    cfg = config(cell)
    assert res["method"] == "elr" and cfg.elr_beta == 0.7 and cfg.elr_lambda == 3.0
    assert not os.path.exists(cell / "stage1.json") and res["ce_test_accuracy"] is None
    digits = sources.load("digits")
    targets = np.load(cell / "soft_labels.npy")
    assert targets.shape == (len(digits.train), 10)
    np.testing.assert_allclose(targets.sum(axis=1), 1 - 0.7 ** cfg.epochs, rtol=1e-5)
    with np.load(cell / "noisy_labels.npz") as saved:
        labels, clean = saved["labels"], saved["clean_labels"]
    wrong, guess = labels != clean, targets.argmax(axis=1)
    assert res["soft_labels_corrected"] == pytest.approx(np.mean(guess[wrong] == clean[wrong]))
    assert res["soft_labels_kept"] == pytest.approx(np.mean(guess[~wrong] == clean[~wrong]))
    assert res["method_test_accuracy"] > 0.6
    assert len(res["method_history"]["loss"]) == cfg.epochs


def test_elr_writes_tensorboard_events(cell):
    from tb_events import summaries
    tags = {v.tag for _, v in summaries(cell / "tb" / "elr" / "train")}
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= tags, tags
    assert {v.tag for _, v in summaries(cell / "tb" / "elr" / "test")} >= {"epoch_accuracy"}


def test_elr_classifier_exports_and_serves_without_idn_tf(cell, tmp_path):
    from test_export import LOAD_AND_SERVE, softmax

    from idn_tf import export, stages
    from idn_tf.data import views
    cfg = config(cell)
    digits = sources.load("digits")
    classifier = stages.new_classifier(cfg, views.from_config(cfg, digits))
    classifier.load_weights(str(cell / "classifier.weights.h5"))
    path = export.export_saved_model(classifier, tmp_path / "export", "elr")
    images = digits.test.images[:7]
    np.savez(tmp_path / "images.npz", images=images)
    subprocess.run([sys.executable, "-c", LOAD_AND_SERVE, str(path), str(tmp_path / "images.npz"),
                    str(tmp_path / "outputs.npz"), "7"], cwd=tmp_path, check=True)
    served = np.load(tmp_path / "outputs.npz")["probabilities_7"]
    logits = np.asarray(classifier(images, training=False), np.float64)
    np.testing.assert_allclose(served, softmax(logits), rtol=1e-5, atol=1e-6)
