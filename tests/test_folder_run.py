"""--dataset=folder end to end: a class folder of real image files (tests/image_folders.py)
trained through the CLI, its audit, plots and SavedModel, and its restart.

The folder has PNG and JPEG files, RGB and grayscale, four sizes, hidden files and a
corrupt image (left out with --skip_bad_images). The small CNN takes 16x16 crops of
images resized to 20x20. Numbers are checked against recomputations from the saved
weights and the streaming evaluation pipeline.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from idn_tf import config as config_lib, inputs, stages
from idn_tf.data import folder as folder_lib, noise, streaming, views

import cli as cli_lib
import early
import file_runs
import image_folders
import test_label_report

pytestmark = pytest.mark.e2e  # runs of python -m idn_tf.train and stage trainings

TINY = {"arch": "small_cnn", "backbone_weights": "none", "image_size": 16, "resize": 20,
        "batch_size": 8, "verbose": 0, "lr_decay_epochs": (), "monitor_every": 1,
        "epochs": 2, "eta_start_epoch": 1, "val_fraction": 0.2, "audit_folds": 2}
CLASSES = ("cat", "dog", "fox")
CORRUPT = ("dog", 5)


def flags(**values):
    return [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in {**TINY, **values}.items()]


def _make(root):
    image_folders.make_image_folder(str(root / "photos"), classes=CLASSES, per_class=10,
                                    corrupt=CORRUPT, nested=True)


RUN = ("--dataset=folder", "--data_dir=photos", "--run_dir=run", "--export_dir=models",
       "--skip_bad_images")


@early.job("folder_finished", __name__)
def _finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_finished")
    _make(root)
    result = cli_lib.run("idn_tf.train", *RUN, *flags(), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(folder, CompletedProcess) of a two-epoch run on photos/ through the CLI."""
    return early.result("folder_finished", tmp_path_factory)


def _loaded(root):
    return folder_lib.load_folder(str(root / "photos"), skip_bad_images=True, verbose=False)


def _classifier(weights):
    cfg = config_lib.resolve({"dataset": "folder", "data_dir": "x", **TINY})
    data = views.FileData(_loaded_empty(), image_size=16, resize=20)
    classifier = stages.new_classifier(cfg, data)
    classifier.load_weights(weights)
    return classifier


def _loaded_empty():
    from idn_tf.data import dataset
    empty = dataset.empty_file_split()
    return dataset.FileDataset(empty, empty, empty, empty, CLASSES, name="folder")


def test_run_trains_audits_and_plots_with_file_paths_and_class_names(finished):
    root, result = finished
    run = root / "run"
    data = _loaded(root)
    with np.load(run / "noisy_labels.npz") as saved:
        labels, held = saved["labels"], saved["validation_rows"]
    # --noise=none: the observed labels are the folder's, in index (sorted path) order.
    np.testing.assert_array_equal(labels, data.noisy.labels)
    trained = np.setdiff1d(np.arange(len(labels)), held)
    assert len(held) > 0 and np.load(run / "eta.npy").shape == (len(trained),)
    bad = str(root / "photos" / CORRUPT[0] / f"img{CORRUPT[1]:03d}.jpg")
    with open(run / "excluded_images.csv") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [bad]
    with open(run / "label_audit.csv") as f:
        rows = list(csv.DictReader(f))
    # Every image of the folder has a row: trained, held out for validation, or test.
    test = data.clean_test
    assert sorted((r["split"], int(r["index"])) for r in rows) == sorted(
        [("train", int(i)) for i in trained] + [("validation", int(i)) for i in held]
        + [("test", i) for i in range(len(test))])
    assert len(rows) == len(data.noisy) + len(test) == 29  # 30 written, the corrupt one out
    for r in rows:
        i = int(r["index"])
        split = test if r["split"] == "test" else data.noisy
        assert int(r["observed_label"]) == split.labels[i]
        if r["split"] != "test":
            assert int(r["observed_label"]) == labels[i]
        assert r["clean_label"] == ""  # unknown: the folder's labels are the observed ones
        assert r["path"] == os.path.relpath(split.paths[i], root / "photos")
        assert (r["eta"] == "") == (r["split"] != "train")
    for r in rows:
        assert "path" in r and r["observed_class"] == CLASSES[int(r["observed_label"])]
    # The rows the method did not train on: 1 − the mean over the two fold classifiers'
    # probabilities of the observed label (audit_probs.npy: trained, validation, test rows).
    probs = np.load(run / "audit_probs.npy")
    order = [("train", i) for i in trained] + [("validation", i) for i in held] + [
        ("test", i) for i in range(len(test))]
    position = {key: p for p, key in enumerate(order)}
    assert probs.shape == (len(rows), len(CLASSES))
    for r in rows:
        p = position[r["split"], int(r["index"])]
        np.testing.assert_allclose(float(r["issue_score"]),
                                   1 - probs[p, int(r["observed_label"])], atol=1e-6)
    assert (f"({len(trained)} training, {len(held)} validation, {len(test)} test images "
            "checked)") in result.stdout
    # The HTML report: the flagged rows, then each class; its images and links exist.
    page = test_label_report.parse(run / "label_issues.html")
    test_label_report._check_against_csv(str(run), page, len(CLASSES))
    for shown in [page.flagged, *page.sections.values()]:
        assert all(os.path.isfile(test_label_report.linked_file(str(run), r["href"]))
                   for r in shown)
    for name in ("accuracy.png", "eta_histogram.png", "highest_eta.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    res = json.loads((run / "results.json").read_text())
    test = data.clean_test
    probs = file_runs.eval_probs(_classifier(run / "classifier.weights.h5"), test.paths, test.labels)
    assert res["method_test_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == test.labels),
                                                        abs=1e-6)
    # Validation on the held-out rows' observed labels (the last epoch's, from its weights).
    probs = file_runs.eval_probs(_classifier(run / "classifier.weights.h5"), data.noisy.paths[held],
                        labels[held])
    assert res["method_history"]["val_accuracy"][-1] == pytest.approx(
        np.mean(probs.argmax(1) == labels[held]), abs=1e-6)
    assert res["selected_epoch"] in (1, 2)


def test_saved_model_serves_photos_of_two_sizes_without_idn_tf(finished):
    root, _ = finished
    res = json.loads((root / "run" / "results.json").read_text())
    test = _loaded(root).clean_test
    by_size = {}
    for path, label in zip(test.paths, test.labels):
        shape = tf.io.decode_image(tf.io.read_file(path), channels=3).shape[:2]
        by_size.setdefault(tuple(shape), (path, label))
    assert len(by_size) >= 2
    paths = [p for p, _ in by_size.values()]
    served = file_runs.serve(os.path.join(root, res["saved_model"]), paths, cwd=str(root),
                             env={**cli_lib.env(), "PYTHONPATH": ""})
    expected = file_runs.eval_probs(_classifier(root / "run" / "classifier.weights.h5"), paths,
                           [l for _, l in by_size.values()])
    np.testing.assert_allclose([served[p]["probabilities"] for p in paths], expected, rtol=1e-5,
                               atol=1e-6)
    # The classes are named by their folders, in the sorted order that numbers them.
    assert [served[p]["class_names"] for p in paths] == [CLASSES[k] for k in expected.argmax(1)]
    names = root / res["saved_model"] / "assets" / "class_names.txt"
    assert names.read_text(encoding="utf-8") == "cat\ndog\nfox\n"


def test_restart_reuses_every_stage(finished, tmp_path):
    root, _ = finished
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "photos", tmp_path / "photos")
    shutil.copytree(root / "models", tmp_path / "models")
    run = tmp_path / "run"
    kept = {name: (run / name).stat().st_mtime_ns for name in
            ("noisy_labels.npz", "stage1.json", "psi.npy", "stage2.json", "eta.npy",
             "classifier.weights.h5")}
    result = cli_lib.run("idn_tf.train", *RUN, *flags(verbose=1), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("noise: reusing", "stage 1: reusing", "stage 2: reusing", "export: reusing"):
        assert stage in result.stdout, stage
    assert {name: (run / name).stat().st_mtime_ns for name in kept} == kept


def test_synthetic_noise_on_a_folder_starts_from_its_labels(tmp_path):
    _make(tmp_path)
    for kind, extra in (("symmetric", {"noise_rate": 0.5}), ("kmeans", {"kmeans_clusters": 2})):
        cfg = config_lib.resolve({"dataset": "folder", "data_dir": str(tmp_path / "photos"),
                                  "skip_bad_images": True, "noise": kind, **TINY, **extra})
        data = inputs.load_data(cfg)
        arrays = inputs.new_noisy_labels(cfg, data)
        folder_labels = data.train.labels
        np.testing.assert_array_equal(arrays["clean_labels"], folder_labels)
        if kind == "symmetric":
            expected = noise.symmetric_noise(folder_labels, 3, 0.5, cfg.seed)
        else:  # k-means on the PCA of the un-augmented crops, read independently here
            paths = data.train.paths
            crops = np.concatenate([b["image"].numpy() for b in streaming.eval_dataset(
                paths, folder_labels, 7, image_size=16, resize=20)])
            features = noise.features_for_noise(crops, "pca", cfg.noise_feature_dims, cfg.seed)
            expected = noise.kmeans_noise(features, folder_labels, 2, cfg.seed)
        np.testing.assert_array_equal(arrays["labels"], expected)


def test_class_names_label_outside_stops_with_one_line_and_writes_nothing(tmp_path):
    image_folders.make_image_folder(str(tmp_path / "photos"), per_class=3)
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    before = sorted(os.listdir(tmp_path))
    result = cli_lib.run("idn_tf.train", "--dataset=folder", "--data_dir=photos",
                         "--class_names=names.txt", *flags(), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'fox'" in lines[0]
    assert sorted(os.listdir(tmp_path)) == before


def test_changed_folder_says_what_changed_and_how_to_go_on(finished, tmp_path):
    """The fix-and-retrain loop: after moving, adding and removing files, the same command
    stops with one line counting each change, and the run folder is left as it was."""
    root, _ = finished
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "photos", tmp_path / "photos")
    photos, run = tmp_path / "photos", tmp_path / "run"
    with open(run / "label_audit.csv") as f:
        trained = [r["path"] for r in csv.DictReader(f)]
    # Class folders reuse file names: cat's img005 moved into dog, replacing dog's corrupt
    # img005 (which --skip_bad_images left out, `CORRUPT`).
    moved = f"cat/img{CORRUPT[1]:03d}.jpg"
    removed = next(p for p in trained if p.startswith("fox/"))
    (photos / "dog" / os.path.basename(moved)).write_bytes((photos / moved).read_bytes())
    (photos / moved).unlink()
    (photos / removed).unlink()
    shutil.copyfile(photos / next(p for p in trained if p not in (moved, removed)),
                    photos / "cat" / "new_one.png")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    result = cli_lib.run("idn_tf.train", *RUN, *flags(), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    name = moved.split("/", 1)[1]
    assert "1 image changed class, 1 added, 1 removed" in lines[0]
    assert f"{name}: cat -> dog" in lines[0]
    assert "--overwrite" in lines[0] and "--run_dir=run-2" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_folder_changes_are_counted_by_file_name_within_the_class():
    identity = folder_lib.file_identity
    assert identity("cat/a.png", "cat") == "a.png"
    assert identity("train/cat/x/a.png", "cat") == "train/x/a.png"
    assert identity("cat/cat/a.png", "cat") == "cat/a.png"  # only the class folder goes
    before = [("a.png", "cat"), ("b.png", "cat"), ("c.png", "dog")]
    after = [("a.png", "dog"), ("b.png", "cat"), ("d.png", "dog")]
    assert folder_lib.changes(before, after) == ([("a.png", "cat", "dog")], ["d.png"], ["c.png"])
    assert folder_lib.changes_text(*folder_lib.changes(before, after)) == (
        "1 image changed class, 1 added, 1 removed (e.g. a.png: cat -> dog; d.png added; "
        "c.png removed)")
    # File names repeated across classes: cat's 1.png moved into dog, which has its own.
    before = [("1.png", "cat"), ("1.png", "dog"), ("1.png", "fox"), ("2.png", "fox")]
    after = [("1.png", "dog"), ("1.png", "dog"), ("1.png", "fox")]
    assert folder_lib.changes(before, after) == ([("1.png", "cat", "dog")], [], ["2.png"])
    assert folder_lib.changes(after, after) == ([], [], [])
    assert folder_lib.changes_text([], [], []) == "0 images changed class, 0 added, 0 removed"
