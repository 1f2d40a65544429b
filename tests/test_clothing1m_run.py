"""--dataset=clothing1m end to end on a tiny folder of real JPEG files (issue 6).

The folder (`clothing1m.make_fake_clothing1m`) has images of several sizes, one grayscale
and one CMYK; the backbone is the small CNN on 16x16 crops of images resized to 20x20.
The numbers are checked against independent recomputations: test accuracy and ψ from
the saved weights and the streaming evaluation pipeline, the SavedModel against the
Keras classifier.
"""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import artifacts, callbacks, config as config_lib, inputs, stages, train
from idn_tf.methods import idn as idn_method
from idn_tf.data import clothing1m, views

import early
import file_runs
import test_label_report

pytestmark = pytest.mark.e2e  # runs of python -m idn_tf.train and stage trainings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = {"noisy": 24, "clean_train": 8, "clean_val": 4, "clean_test": 6}
TINY = {"arch": "small_cnn", "backbone_weights": "none", "image_size": 16, "resize": 20,
        "batch_size": 8, "verbose": 0, "lr_decay_epochs": (), "monitor_every": 1,
        "audit_folds": 2}


def cli(cwd, *args):
    result = subprocess.run([sys.executable, "-m", "idn_tf.train", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    return result


def flags(**values):
    return [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in {**TINY, **values}.items()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("c1m")
    clothing1m.make_fake_clothing1m(str(root / "data"), counts=COUNTS)
    return root


@early.job("finished", __name__)
def _finished(tmp_path_factory):
    # Not mktemp: in one full run (2026-12-08) its check that the name stays inside the
    # base folder failed here, in the early-start thread ("c1m_finished is not a normalized
    # and relative path"), and not again; a plain temporary folder there needs no check.
    root = pathlib.Path(tempfile.mkdtemp(prefix="c1m_finished",
                                         dir=tmp_path_factory.getbasetemp()))
    clothing1m.make_fake_clothing1m(str(root / "data"), counts=COUNTS)
    result = cli(root, "--dataset=clothing1m", "--data_dir=data", "--run_dir=run",
                 "--export_dir=models", "--epochs=1", "--eta_start_epoch=1",
                 *flags(oversample="auto"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(folder, CompletedProcess) of a one-epoch run (row #7's flow) through the CLI, with
    its SavedModel: folder/data (as `folder`), folder/run, folder/models (started early)."""
    return early.result("finished", tmp_path_factory)


def _classifier(weights):
    """The tiny run's classifier with the saved `weights`."""
    cfg = config_lib.resolve({"dataset": "clothing1m", "data_dir": "x", **TINY})
    data = views.from_config(cfg, clothing1m.Clothing1M(*[_EMPTY] * 4))
    classifier = stages.new_classifier(cfg, data)
    classifier.load_weights(weights)
    return classifier


_EMPTY = clothing1m.FileSplit(np.array([], "U1"), *[np.array([], np.int64)] * 3)


def test_one_epoch_run_writes_its_results(finished):
    folder, result = finished
    run = folder / "run"
    res = json.loads((run / "results.json").read_text())
    data = clothing1m.load_clothing1m(str(folder / "data"), verbose=False)
    n = len(data.noisy)
    assert n == COUNTS["noisy"]
    for name in ("ce_test_accuracy", "method_test_accuracy"):
        assert 0.0 <= res[name] <= 1.0
    assert len(res["method_history"]["loss"]) == 1
    assert np.load(run / "eta.npy").shape == (n,) and np.load(run / "psi.npy").shape == (n,)
    with np.load(run / "noisy_labels.npz") as saved:  # the web labels, in list order
        np.testing.assert_array_equal(saved["labels"], data.noisy.labels)
    with open(run / "label_audit.csv") as f:
        assert len(list(csv.DictReader(f))) == n
    for name in ("accuracy.png", "eta_histogram.png", "highest_eta.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    assert "η table:" not in result.stdout  # internals only under multi_worker

    # Test accuracy: the stage-2 weights on the clean test set, evaluated independently.
    test = data.clean_test
    for weights, key in (("classifier.weights.h5", "method_test_accuracy"),
                         ("stage1.weights.h5", "ce_test_accuracy")):
        probs = file_runs.eval_probs(_classifier(run / weights), test.paths, test.labels)
        assert res[key] == pytest.approx(np.mean(probs.argmax(1) == test.labels), abs=1e-6)
    # Validation on the clean validation list (nothing held out of the noisy split): one
    # epoch, so that epoch is selected; its validation accuracy, evaluated independently.
    assert res["selected_epoch"] == 1 and res["ce_selected_epoch"] == 1
    val = data.clean_val
    probs = file_runs.eval_probs(_classifier(run / "classifier.weights.h5"), val.paths, val.labels)
    assert res["method_validation_accuracy"] == pytest.approx(
        np.mean(probs.argmax(1) == val.labels), abs=1e-6)
    # ψ: the stage-1 classifier's probability of the observed label, on the un-augmented
    # noisy images in index order.
    probs = file_runs.eval_probs(_classifier(run / "stage1.weights.h5"), data.noisy.paths,
                        data.noisy.labels)
    np.testing.assert_allclose(np.load(run / "psi.npy"),
                               probs[np.arange(n), data.noisy.labels], rtol=1e-5, atol=1e-7)


def test_saved_model_takes_photos_of_any_size_as_the_evaluation_crops_them(finished):
    folder, _ = finished
    run = folder / "run"
    saved = json.loads((run / "results.json").read_text())["saved_model"]
    assert os.path.isfile(os.path.join(folder, saved, "saved_model.pb"))
    test = clothing1m.load_clothing1m(str(folder / "data"), verbose=False).clean_test
    sizes = {tf.io.decode_image(tf.io.read_file(p)).shape[:2] for p in test.paths}
    assert len(sizes) > 1  # several photo sizes
    served = file_runs.serve(os.path.join(folder, saved), list(test.paths))
    expected = file_runs.eval_probs(_classifier(run / "classifier.weights.h5"), test.paths, test.labels)
    np.testing.assert_allclose([served[p]["probabilities"] for p in test.paths], expected,
                               rtol=1e-5, atol=1e-6)
    assert [served[p]["class_names"] for p in test.paths] == [
        clothing1m.CLASS_NAMES[k] for k in expected.argmax(1)]


def test_audit_cli_rebuilds_the_audit_of_a_clothing1m_run(finished, tmp_path, monkeypatch):
    from idn_tf import audit, flagdefs
    folder, _ = finished
    shutil.copytree(folder / "run", tmp_path / "run")
    shutil.copytree(folder / "data", tmp_path / "data")
    before = (tmp_path / "run" / "label_audit.csv").read_bytes()
    page_before = (tmp_path / "run" / "label_issues.html").read_bytes()
    (tmp_path / "run" / "label_audit.csv").unlink()
    (tmp_path / "run" / "label_issues.html").unlink()
    shutil.rmtree(tmp_path / "run" / "label_issues_files")
    # `python -m idn_tf.audit --run_dir=run` in tmp_path, its two steps in this process (the
    # command itself: test_audit.py): its flags, the others from the run's flags.txt (the
    # data folder relative to where it runs), then its main.
    monkeypatch.chdir(tmp_path)
    try:
        argv = audit.parse_flags(["idn_tf.audit", "--run_dir=run"])
        assert audit.main(argv) == 0
    finally:
        flagdefs.FLAGS.unparse_flags()
    assert (tmp_path / "run" / "label_audit.csv").read_bytes() == before
    assert (tmp_path / "run" / "label_issues.html").read_bytes() == page_before
    # The audit names each example's file (relative to the data folder) and its classes;
    # the page's rows are the flagged, then each class's; its thumbnails and links exist.
    # Only the noisy training rows: Clothing1M's validation and test lists are clean.
    with open(tmp_path / "run" / "label_audit.csv") as f:
        rows = list(csv.DictReader(f))
    data = clothing1m.load_clothing1m(str(tmp_path / "data"), verbose=False)
    assert {r["split"] for r in rows} == {"train"}
    for r in rows:
        i = int(r["index"])
        assert r["path"] == os.path.relpath(data.noisy.paths[i], tmp_path / "data")
        assert r["observed_class"] == clothing1m.CLASS_NAMES[int(r["observed_label"])]
        assert r["estimated_class"] == clothing1m.CLASS_NAMES[int(r["estimated_label"])]
    page = test_label_report.parse(tmp_path / "run" / "label_issues.html")
    test_label_report._check_against_csv(str(tmp_path / "run"), page, 14)
    for shown in [page.flagged, *page.sections.values()]:
        for row in shown:
            target = test_label_report.linked_file(str(tmp_path / "run"), row["href"])
            assert os.path.samefile(target, data.noisy.paths[int(row["attrs"]["data-index"])])


def test_finetuning_continues_a_finished_run_in_its_folder(finished, tmp_path, capsys):
    # In-process (`train.run`, as the CLI calls it): what is checked is the run folder's
    # reuse, which the CLI's flag parsing does not change (the CLI's own paths are the
    # finished run's here, and its one-line errors test_bad_input.py's).
    folder, _ = finished
    shutil.copytree(folder / "run", tmp_path / "run")
    shutil.copytree(folder / "data", tmp_path / "data")
    run = tmp_path / "run"
    kept = {name: (run / name).stat().st_mtime_ns for name in
            ("stage1.json", "psi.npy", "stage2.json", "eta.npy", "classifier.weights.h5")}
    base = {"dataset": "clothing1m", "data_dir": str(tmp_path / "data"), "run_dir": str(run),
            "export_dir": str(tmp_path / "models"), "epochs": 1, "eta_start_epoch": 1,
            **TINY, "oversample": "auto"}
    capsys.readouterr()
    train.run(config_lib.resolve({**base, "finetune_clean_epochs": 2, "finetune_lr": 0.01}))
    out = capsys.readouterr().out
    assert "stage 2: reusing" in out and "fine-tuning on the clean" in out
    assert {name: (run / name).stat().st_mtime_ns for name in kept} == kept
    res = json.loads((run / "results.json").read_text())
    assert len(res["finetune_history"]["loss"]) == 2
    # The fine-tuned classifier's last epoch is the accuracy reported; its epoch chosen on
    # the clean validation list is the one exported.
    test = clothing1m.load_clothing1m(str(tmp_path / "data"), verbose=False).clean_test
    probs = file_runs.eval_probs(_classifier(run / "finetuned.weights.h5"), test.paths, test.labels)
    assert res["finetuned_test_accuracy"] == pytest.approx(
        np.mean(probs.argmax(1) == test.labels), abs=1e-6)
    assert res["finetuned_selected_epoch"] in (1, 2)
    selected = _classifier(run / "finetuned.weights.h5")
    selected.set_weights(callbacks.load_weights_list(run / "finetune.selected.npz"))
    probs = file_runs.eval_probs(selected, test.paths, test.labels)
    assert res["finetuned_test_accuracy_selected"] == pytest.approx(
        np.mean(probs.argmax(1) == test.labels), abs=1e-6)
    served = file_runs.serve(os.path.join(tmp_path, res["saved_model"]), list(test.paths))
    np.testing.assert_allclose([served[p]["probabilities"] for p in test.paths], probs,
                               rtol=1e-5, atol=1e-6)
    assert [served[p]["class_names"] for p in test.paths] == [
        clothing1m.CLASS_NAMES[k] for k in probs.argmax(1)]
    # It trained: the fine-tuned weights differ from the stage-2 weights they started from.
    stage2 = _classifier(run / "classifier.weights.h5").get_weights()
    tuned = _classifier(run / "finetuned.weights.h5").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(stage2, tuned))

    # Another fine-tuning lr redoes only the fine-tuning; another η lr is another run.
    capsys.readouterr()
    train.run(config_lib.resolve({**base, "finetune_clean_epochs": 1, "finetune_lr": 0.01}))
    assert "stage 2: reusing" in capsys.readouterr().out
    assert len(json.loads((run / "results.json").read_text())["finetune_history"]["loss"]) == 1
    with pytest.raises(artifacts.RunDirError, match="--eta_lr") as refused:
        train.run(config_lib.resolve({**base, "finetune_clean_epochs": 1, "eta_lr": 0.5}))
    assert "\n" not in str(refused.value)  # the CLI's one error line (cli.USER_ERRORS)


class _CleanRowsStayZero(keras.callbacks.Callback):
    """Records, after every batch, whether the clean rows (N..) of η are all exactly 0."""

    def __init__(self, n):
        super().__init__()
        self.n, self.checks = n, []

    def on_train_batch_end(self, batch, logs=None):
        self.checks.append(bool(np.all(self.model.eta.numpy()[self.n:] == 0.0)))


def test_mixed_batches_are_half_clean_and_clean_eta_stays_exactly_zero(folder, tmp_path):
    cfg = config_lib.resolve({"dataset": "clothing1m", "data_dir": str(folder / "data"),
                              "run_dir": str(tmp_path / "run"), "clean_train": "mix",
                              "epochs": 3, "eta_start_epoch": 1, "eta_lr": 0.5,
                              **TINY, "oversample": "auto"})
    data = inputs.load_data(cfg)
    noisy, clean = data.data.noisy, data.data.clean_train
    n, c = len(noisy), len(clean)
    assert data.table_size == n + c
    labels = noisy.labels

    batches = list(data.train_dataset(labels, cfg.batch_size, cfg.seed, 1))
    assert len(batches) == data.steps_per_epoch(labels, cfg.batch_size)
    clean_labels_of = dict(zip(n + clean.index, clean.labels))
    for batch in batches:
        is_clean = batch["is_clean"].numpy()
        index = batch["index"].numpy()
        assert is_clean.sum() * 2 == len(is_clean)  # half clean
        assert (index[is_clean] >= n).all() and (index[~is_clean] < n).all()
        for i, label in zip(index[is_clean], batch["label"].numpy()[is_clean]):
            assert clean_labels_of[i] == label  # a clean example carries its clean label

    psi = np.full(n, 0.5, np.float32)
    idn = idn_method.new_model(cfg, data, psi)
    eta0 = idn.eta.numpy()
    assert (eta0[n:] == 0).all() and np.allclose(eta0[:n], 0.01)
    np.testing.assert_array_equal(idn.psi.numpy(), np.r_[psi, np.ones(c, np.float32)])
    check = _CleanRowsStayZero(n)
    schedule = callbacks.pga_schedule(cfg.eta_start_epoch, cfg.eta_every)
    stages.fit(idn, cfg, data, labels, "stage2", [callbacks.PGACallback(schedule), check])
    assert len(check.checks) == 3 * len(batches) and all(check.checks)
    eta = idn.eta.numpy()
    assert (eta[n:] == 0.0).all()
    assert np.abs(eta[:n] - 0.01).max() > 1e-3  # the noisy rows did move


def test_skip_bad_images_leaves_them_out_and_lists_them(tmp_path, capsys):
    # In-process (`train.run`): the CLI adds nothing to what is checked here.
    fake = clothing1m.make_fake_clothing1m(str(tmp_path / "data"), counts=COUNTS, corrupt=True)
    missing = (tmp_path / "data" / "clean_test_key_list.txt").read_text().splitlines()[2]
    (tmp_path / "data" / missing).unlink()
    cfg = config_lib.resolve({"dataset": "clothing1m", "data_dir": str(tmp_path / "data"),
                              "run_dir": str(tmp_path / "run"), "export_dir": "", "epochs": 1,
                              "skip_bad_images": True, **TINY})
    capsys.readouterr()
    train.run(cfg)
    assert "2 images left out" in capsys.readouterr().out
    with open(tmp_path / "run" / "excluded_images.csv") as f:
        rows = list(csv.DictReader(f))
    root = tmp_path / "data"
    assert [(r["path"], r["listed_at"]) for r in rows] == [
        (str(root / fake.corrupt_key), f"{root / 'noisy_train_key_list.txt'}, line 13"),
        (str(root / missing), f"{root / 'clean_test_key_list.txt'}, line 3")]
    assert "damaged" in rows[0]["reason"] and "not found" in rows[1]["reason"]
    # The corrupt image has no η row: 23 noisy examples, numbered 0..22 after it is left out.
    assert np.load(tmp_path / "run" / "eta.npy").shape == (COUNTS["noisy"] - 1,)
    with np.load(tmp_path / "run" / "noisy_labels.npz") as saved:
        assert saved["labels"].shape == (COUNTS["noisy"] - 1,)

    # Another image goes bad and the first is mended: as many rows, but row i would be
    # another image from row 13 on, so the run folder's η and ψ must not be reused.
    (root / fake.corrupt_key).write_bytes((root / _noisy_key(root, 2)).read_bytes())
    (root / _noisy_key(root, 20)).unlink()
    with pytest.raises(artifacts.RunDirError, match="was made for other training images") as e:
        train.run(cfg)
    assert "\n" not in str(e.value)  # the CLI's one error line (cli.USER_ERRORS)


def _noisy_key(root, line):
    return (root / "noisy_train_key_list.txt").read_text().splitlines()[line - 1]
