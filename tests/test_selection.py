"""Model selection looks at the validation split only: runs whose test labels are permuted
choose the same epoch and train the same classifier; without a validation split nothing is
selected and the last epoch is exported."""

import os

import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib, train
from idn_tf.data import sources

pytestmark = pytest.mark.e2e

SHORT = dict(method="ce", epochs=4, lr_decay_epochs=(), verbose=0, deterministic=True,
             noise="ccn", export_dir="")


def _npz(path, test_labels):
    digits = sources.load_digits()
    np.savez(path, x_train=digits.train.images, y_train=digits.train.labels,
             x_test=digits.test.images, y_test=test_labels, clean_train=digits.train.labels)
    return str(path)


def test_permuting_the_test_labels_leaves_the_selection_unchanged(tmp_path):
    digits = sources.load_digits()
    permuted = np.random.default_rng(0).permutation(digits.test.labels)
    assert np.mean(permuted == digits.test.labels) < 0.3
    results = []
    for name, labels in (("true", digits.test.labels), ("permuted", permuted)):
        cfg = config_lib.Config(dataset="npz", npz_path=_npz(tmp_path / f"{name}.npz", labels),
                                run_dir=str(tmp_path / name), **SHORT)
        results.append(train.run(cfg))
    true, shuffled = results
    assert true["selected_epoch"] == shuffled["selected_epoch"]
    assert true["method_history"]["val_accuracy"] == shuffled["method_history"]["val_accuracy"]
    # The test figures do differ: the test set was read, but decided nothing.
    assert true["method_test_accuracy"] != shuffled["method_test_accuracy"]
    a, b = (np.load(tmp_path / n / "stage1.selected.npz") for n in ("true", "permuted"))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_without_a_validation_split_nothing_is_selected(tmp_path):
    cfg = config_lib.Config(run_dir=str(tmp_path / "run"), val_fraction=0.0,
                            **{**SHORT, "epochs": 2})
    res = train.run(cfg)
    assert res["selected_epoch"] is None and res["method_test_accuracy_selected"] is None
    assert res["method_test_accuracy_best"] == max(res["method_history"]["test_accuracy"])
    assert "val_accuracy" not in res["method_history"]
    assert not os.path.exists(os.path.join(cfg.run_dir, "stage1.selected.npz"))
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as saved:
        assert saved["validation_rows"].shape == (0,)
    assert np.load(os.path.join(cfg.run_dir, "psi.npy")).shape == (len(sources.load_digits().train),)
    assert artifacts.read_json(os.path.join(cfg.run_dir, "stage1.json")).get("selection") is None
