"""End-to-end checks of `python -m idn_tf.train` and `train.run` on tiny schedules."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from unittest import mock

import keras
import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib, train
from idn_tf.data import sources, tfds_sources, views
from tb_events import summaries

import cli as cli_lib
import early

# A short schedule: η updates in epochs 2 and 3, lr decay after epoch 2.
TINY = dict(epochs=3, eta_start_epoch=2, eta_every=1, lr_decay_epochs=(2,), verbose=0,
            audit_folds=2)
TINY_FLAGS = ["--epochs=3", "--eta_start_epoch=2", "--eta_every=1", "--lr_decay_epochs=2", "--verbose=0"]


def cli(*args, cwd):
    return cli_lib.run("idn_tf.train", *args, cwd=cwd)


@pytest.fixture(scope="module")
def finished_run(digits_run):
    """The tiny digits run of conftest.py (TINY, exported); read only."""
    assert digits_run[0] == config_lib.Config(run_dir=digits_run[0].run_dir,
                                              export_dir=digits_run[0].export_dir, **TINY)
    return digits_run


def event_tags(folder):
    """{(tag, plugin): [steps]} of every summary in the event files of `folder`."""
    tags = {}
    for step, value in summaries(folder):
        tags.setdefault((value.tag, value.metadata.plugin_data.plugin_name), []).append(step)
    return tags


KERAS_TRAIN = {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
KERAS_VALIDATION = {"epoch_loss", "epoch_accuracy", "evaluation_loss_vs_iterations",
                    "evaluation_accuracy_vs_iterations"}
MONITOR = {("accuracy/train_observed", "scalars"), ("accuracy/test", "scalars")}
TEST = {("epoch_accuracy", "scalars"), ("epoch_loss", "scalars")}  # callbacks.TestEvaluation
EXPECTED_TAGS = {
    "stage1/train": {(t, "scalars") for t in KERAS_TRAIN},
    "stage1/validation": {(t, "scalars") for t in KERAS_VALIDATION},
    "stage1/test": TEST,
    "stage1/monitor": MONITOR,
    "stage2/test": TEST,
    "stage2/train": {(t, "scalars") for t in KERAS_TRAIN | {
        "epoch_eta_mean", "epoch_eta_above_half", "epoch_eta_update"}},
    "stage2/validation": {(t, "scalars") for t in KERAS_VALIDATION},
    "stage2/monitor": MONITOR | {
        ("eta/mean", "scalars"), ("eta/above_half", "scalars"), ("eta/histogram", "histograms"),
        ("labels/wrong_corrected", "scalars"), ("labels/right_kept", "scalars"),
        ("labels/eta_auroc", "scalars"), ("labels/highest_eta", "images")},
}
# The label audit's held-out classifiers (conftest.DIGITS_RUN: 2 folds) log as stage 1 does.
for _k in (1, 2):
    EXPECTED_TAGS.update({f"audit_fold{_k}/{part}": EXPECTED_TAGS[f"stage1/{part}"]
                          for part in ("train", "validation", "test", "monitor")})


@pytest.mark.e2e
def test_tensorboard_event_files_hold_exactly_the_expected_tags(finished_run):
    cfg, res = finished_run
    tb = os.path.join(cfg.run_dir, "tb")
    folders = sorted(os.path.relpath(os.path.join(d), tb) for d, _, files in os.walk(tb) if files)
    assert folders == sorted(EXPECTED_TAGS)
    for folder, expected in EXPECTED_TAGS.items():
        tags = event_tags(os.path.join(tb, folder))
        assert set(tags) == expected, folder
        for (tag, _), steps in tags.items():
            if not tag.startswith("evaluation_"):  # those count optimizer steps
                assert steps == [0, 1, 2], (folder, tag)  # one per epoch, 0-based as Keras's
    # The monitor's scalars are the numbers in results.json.
    monitor = res["method_monitor"]
    assert monitor["epoch"] == [1, 2, 3]
    assert monitor["accuracy/test"] == pytest.approx(res["method_history"]["test_accuracy"])
    assert monitor["labels/eta_auroc"][-1] == pytest.approx(res["eta_auroc"])
    assert monitor["eta/mean"][-1] == pytest.approx(res["eta_mean"])


@pytest.mark.e2e
def test_plots_are_images_of_the_stated_size(finished_run):
    from PIL import Image
    from idn_tf import plots
    cfg, _ = finished_run
    for name, size in (("accuracy.png", plots.ACCURACY_SIZE),
                       ("eta_histogram.png", plots.ETA_HISTOGRAM_SIZE),
                       ("highest_eta.png", plots.HIGHEST_ETA_SIZE)):
        path = os.path.join(cfg.run_dir, "plots", name)
        assert os.path.getsize(path) > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size, name
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 0, f"{name} is blank"


@pytest.mark.e2e
def test_the_export_is_a_servable_version_folder(finished_run):
    cfg, res = finished_run
    assert res["saved_model"] == os.path.join(cfg.export_dir, "digits", "1")
    assert os.path.isfile(os.path.join(res["saved_model"], "saved_model.pb"))


@pytest.mark.e2e
def test_run_writes_its_artifacts(finished_run):
    cfg, res = finished_run
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as noisy:
        n = len(noisy["labels"]) - len(noisy["validation_rows"])  # the trained rows
    for name in ("flags.txt", "config.json", "noisy_labels.npz", "psi.npy", "eta.npy",
                 "results.json", "stage1.json", "classifier.weights.h5", "label_audit.csv",
                 "label_issues.html"):
        assert os.path.isfile(os.path.join(cfg.run_dir, name)), name
    assert os.listdir(os.path.join(cfg.run_dir, "label_issues_files"))  # its thumbnails
    assert not [f for f in os.listdir(cfg.run_dir) if f.startswith(".tmp-")]
    saved = artifacts.read_json(os.path.join(cfg.run_dir, "results.json"))
    assert saved == json.loads(json.dumps(res, allow_nan=True))
    for key in ("noise_rate_actual", "ce_test_accuracy", "method_test_accuracy",
                "wrong_labels_corrected", "right_labels_kept", "eta_mean"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert (saved["dataset"], saved["noise"], saved["seed"], saved["epochs"]) == ("digits", "kmeans", 0, 3)
    assert len(saved["method_history"]["val_accuracy"]) == 3
    assert len(saved["method_history"]["test_accuracy"]) == 3
    assert saved["method_history"]["eta_update"] == [0.0, 1.0, 1.0]
    eta, psi = np.load(os.path.join(cfg.run_dir, "eta.npy")), np.load(os.path.join(cfg.run_dir, "psi.npy"))
    assert eta.shape == psi.shape == (n,)
    assert np.all((eta >= 0) & (eta <= 1)) and np.all((psi >= 0) & (psi <= 1))
    assert not np.all(eta == cfg.eta_init), "η never moved although two epochs updated it"
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as noisy:
        trained = np.setdiff1d(np.arange(len(noisy["labels"])), noisy["validation_rows"])
        wrong = np.mean(noisy["labels"][trained] != noisy["clean_labels"][trained])
        assert json.loads(str(noisy["recipe"]))["noise"] == "kmeans"
    np.testing.assert_allclose(saved["noise_rate_actual"], wrong)
    assert 0.25 <= wrong <= 0.35  # the default k-means noise: 25-35% wrong labels


@pytest.mark.e2e
def test_the_validation_rows_are_held_out_of_everything_trained(finished_run):
    import csv
    from idn_tf.data import holdout
    cfg, res = finished_run
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as noisy:
        labels, held = noisy["labels"], noisy["validation_rows"]
    # Stratified by the observed label, as drawn from the labels and the seed alone.
    np.testing.assert_array_equal(held, holdout.validation_rows(labels, cfg.val_fraction, cfg.seed))
    counts = np.bincount(labels, minlength=10)
    np.testing.assert_array_equal(np.bincount(labels[held], minlength=10),
                                  np.floor(cfg.val_fraction * counts + 0.5))
    trained = np.setdiff1d(np.arange(len(labels)), held)
    for name in ("eta.npy", "psi.npy"):
        assert np.load(os.path.join(cfg.run_dir, name)).shape == (len(trained),)
    with open(os.path.join(cfg.run_dir, "label_audit.csv")) as f:
        rows = list(csv.DictReader(f))
    index = np.array([int(r["index"]) for r in rows])
    split = np.array([r["split"] for r in rows])
    # Source rows: the trained ones, and the held-out ones audited as validation rows.
    np.testing.assert_array_equal(np.sort(index[split == "train"]), trained)
    np.testing.assert_array_equal(np.sort(index[split == "validation"]), held)
    assert len(rows) == len(labels)
    observed = np.array([int(r["observed_label"]) for r in rows])
    np.testing.assert_array_equal(observed, labels[index])


@pytest.mark.e2e
def test_the_selected_epoch_is_the_best_validation_epoch_and_is_exported(finished_run):
    import tensorflow as tf
    from idn_tf import callbacks as callbacks_lib, stages
    cfg, res = finished_run
    for prefix, epoch_key, history in (("ce", "ce_selected_epoch", res["ce_history"]),
                                       ("method", "selected_epoch", res["method_history"])):
        val, loss = np.array(history["val_accuracy"]), np.array(history["val_loss"])
        # Highest validation accuracy, then lowest validation loss, then earliest (a loop).
        expected = 0
        for e in range(1, len(val)):
            if (val[e], -loss[e]) > (val[expected], -loss[expected]):
                expected = e
        assert res[epoch_key] == expected + 1, prefix
        assert res[f"{prefix}_validation_accuracy"] == pytest.approx(val[expected])
        assert res[f"{prefix}_test_accuracy_selected"] == pytest.approx(
            history["test_accuracy"][expected])
        assert res[f"{prefix}_test_accuracy_best"] == pytest.approx(max(history["test_accuracy"]))
        assert res[f"{prefix}_test_accuracy"] == history["test_accuracy"][-1]
    # The SavedModel is the selected classifier: the same probabilities on the test images.
    digits = sources.load_digits()
    weights = callbacks_lib.load_weights_list(os.path.join(cfg.run_dir, "stage2.selected.npz"))
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as noisy:
        # The trained rows' view: the classifier standardises with their pixel statistics.
        data, _ = views.from_config(cfg, digits).hold_out(noisy["validation_rows"],
                                                           noisy["labels"])
    classifier = stages.new_classifier(cfg, data)
    classifier.set_weights(weights)
    expected = keras.ops.softmax(classifier(digits.test.images[:50], training=False)).numpy()
    served = tf.saved_model.load(res["saved_model"]).signatures["serving_default"](
        images=tf.constant(digits.test.images[:50]))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    # digits' classes are named by their digits.
    assert [n.decode() for n in served["class_names"].numpy()] == [
        str(k) for k in expected.argmax(1)]


@pytest.mark.e2e
def test_flags_txt_reproduces_the_config(finished_run):
    cfg, _ = finished_run
    from idn_tf import flagdefs
    flagdefs.FLAGS.unparse_flags()
    flagdefs.FLAGS(["train", f"--flagfile={os.path.join(cfg.run_dir, 'flags.txt')}"])
    try:
        assert flagdefs.config_from_flags() == cfg
    finally:
        flagdefs.FLAGS.unparse_flags()


@pytest.mark.e2e
def test_restart_of_a_finished_run_reuses_every_stage_and_the_export(digits_run_copy, capsys):
    cfg, first = digits_run_copy
    kept = ("psi.npy", "eta.npy", "classifier.weights.h5", "stage1.json", "stage2.json")
    mtimes = {n: os.path.getmtime(os.path.join(cfg.run_dir, n)) for n in kept}
    audit = open(os.path.join(cfg.run_dir, "label_audit.csv")).read()
    again = train.run(cfg)
    out = capsys.readouterr().out
    for what in ("noise: reusing", "stage 1: reusing", "stage 2: reusing", "export: reusing"):
        assert what in out, what
    assert {n: os.path.getmtime(os.path.join(cfg.run_dir, n)) for n in kept} == mtimes
    for key in ("ce_test_accuracy", "method_test_accuracy", "noise_rate_actual", "eta_auroc",
                "saved_model", "method_history"):
        assert again[key] == first[key], key
    assert sorted(os.listdir(os.path.dirname(first["saved_model"]))) == ["1"]  # no new version
    assert open(os.path.join(cfg.run_dir, "label_audit.csv")).read() == audit


@pytest.mark.e2e
def test_restart_with_other_class_names_exports_them_as_a_new_version(digits_run_copy, capsys):
    import tensorflow as tf
    cfg, first = digits_run_copy
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    again = train.run(dataclasses.replace(cfg, export_class_names=names))
    out = capsys.readouterr().out
    assert "stage 2: reusing" in out and "export: reusing" not in out
    model_dir = os.path.dirname(first["saved_model"])
    assert again["saved_model"] == os.path.join(model_dir, "2")
    for version, expected in (("1", [str(k) for k in range(10)]), ("2", list(names))):
        with open(os.path.join(model_dir, version, "assets", "class_names.txt")) as f:
            assert f.read().splitlines() == expected, version
    served = tf.saved_model.load(again["saved_model"]).signatures["serving_default"](
        images=tf.constant(sources.load_digits().test.images[:50]))
    classes = served["probabilities"].numpy().argmax(1)
    assert len(set(classes)) > 1
    assert [n.decode() for n in served["class_names"].numpy()] == [names[k] for k in classes]


@pytest.mark.e2e
def test_a_damaged_stage_file_is_one_error_naming_it(finished_run, tmp_path):
    import shutil
    cfg, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(cfg.run_dir, copy)
    (copy / "eta.npy").write_bytes(b"garbage")
    with pytest.raises(artifacts.RunDirError, match="eta.npy is damaged"):
        train.run(dataclasses.replace(cfg, run_dir=str(copy), export_dir=""))


@pytest.mark.e2e
def test_restart_with_other_flags_is_refused(finished_run):
    cfg, _ = finished_run
    before = {f: os.path.getmtime(os.path.join(cfg.run_dir, f)) for f in os.listdir(cfg.run_dir)}
    with pytest.raises(artifacts.RunDirError, match="--epochs"):
        train.run(dataclasses.replace(cfg, epochs=4))
    after = {f: os.path.getmtime(os.path.join(cfg.run_dir, f)) for f in os.listdir(cfg.run_dir)}
    assert after == before


def test_make_optimizer_decays_after_the_named_epochs():
    from idn_tf import stages
    cfg = config_lib.Config(run_dir="unused", epochs=6, lr=1.0, lr_decay_epochs=(2, 4), lr_decay_factor=0.1)
    schedule = stages.learning_rate(cfg, steps_per_epoch=3)
    # The optimizer evaluates the schedule at the 0-based step before updating:
    # epochs 1-2 are steps 0-5, epochs 3-4 steps 6-11, epochs 5-6 steps 12-17.
    lrs = [float(schedule(step)) for step in range(18)]
    np.testing.assert_allclose(lrs, [1.0] * 6 + [0.1] * 6 + [0.01] * 6, rtol=1e-6)


# One epoch per stage, exported to the default --export_dir; read by the two tests below.
CLI_RUN_FLAGS = ("--epochs=1", "--eta_start_epoch=1", "--lr_decay_epochs=", "--verbose=0",
                 "--monitor_every=5")


@early.job("cli_run", __name__)
def _cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_run")
    return root, cli(*CLI_RUN_FLAGS, cwd=root)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """(folder, CompletedProcess) of `python -m idn_tf.train` with the default recipe and
    CLI_RUN_FLAGS in that folder (default --run_dir and --export_dir; started early)."""
    return early.result("cli_run", tmp_path_factory)


@pytest.mark.e2e
def test_cli_default_recipe_with_short_schedule(cli_run):
    folder, result = cli_run
    assert result.returncode == 0, result.stderr
    assert "CE test accuracy" in result.stdout and "method test accuracy" in result.stdout
    assert os.path.isfile(folder / "runs" / "digits-kmeans-0" / "results.json")


@pytest.mark.e2e
def test_cli_npz_dataset(tmp_path):
    digits = sources.load_digits()
    rng = np.random.default_rng(0)
    noisy = digits.train.labels.copy()
    flip = rng.random(len(noisy)) < 0.2
    noisy[flip] = (noisy[flip] + 1) % 10
    np.savez(tmp_path / "mine.npz", x_train=digits.train.images[..., 0], y_train=noisy,
             x_test=digits.test.images[..., 0], y_test=digits.test.labels, clean_train=digits.train.labels)
    result = cli("--dataset=npz", f"--npz_path={tmp_path / 'mine.npz'}", "--noise=none",
                 "--run_dir=out", "--export_dir=", "--epochs=1", "--eta_start_epoch=1",
                 "--lr_decay_epochs=", "--verbose=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    res = artifacts.read_json(tmp_path / "out" / "results.json")
    with np.load(tmp_path / "out" / "noisy_labels.npz") as saved:
        np.testing.assert_array_equal(saved["labels"], noisy)  # --noise=none: the file's
        trained = np.setdiff1d(np.arange(len(noisy)), saved["validation_rows"])
    np.testing.assert_allclose(res["noise_rate_actual"], flip[trained].mean())


@pytest.mark.e2e
def test_dry_run_prints_config_and_touches_nothing(tmp_path):
    result = cli("--dry_run", "--epochs=7", "--noise=ccn", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["epochs"] == 7 and printed["run_dir"] == os.path.join("runs", "digits-ccn0.4-0")
    assert os.listdir(tmp_path) == []


def test_default_flagfile_is_the_default_config():
    from idn_tf import flagdefs
    flagdefs.FLAGS.unparse_flags()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flagdefs.FLAGS(["train", f"--flagfile={os.path.join(root, 'flags', 'default.cfg')}"])
    try:
        assert flagdefs.config_from_flags() == config_lib.Config()
    finally:
        flagdefs.FLAGS.unparse_flags()


# ---------------------------------------------------------------------------------------
# The tensorflow-datasets sources, end to end under tfds.testing.mock_data

MOCK_N = 48
# Each dataset's own recipe (noise, augmentation, normalisation, α₁ ...), with a small CNN and
# one short epoch per stage; the noise generators run for real on the mock images.
MOCK_RUNS = {
    "cifar10": dict(noise_feature_weights="none", noise_feature_size=32, kmeans_clusters=4),
    "cifar100": dict(mlp_hidden_units=8, mlp_epochs=3),
    "cifar10_n": dict(noisy_label_key="random2"),
    "cifar100_n": dict(),
}


@pytest.mark.e2e
@pytest.mark.parametrize("dataset", sorted(MOCK_RUNS))
def test_tfds_dataset_runs_end_to_end_under_mock_data(tmp_path, dataset):
    import tensorflow_datasets as tfds
    cfg = config_lib.resolve(dict(
        dataset=dataset, run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exports"),
        arch="small_cnn", epochs=1,
        batch_size=16, lr_decay_epochs=(), eta_start_epoch=1, eta_every=1, verbose=0,
        data_dir=str(tmp_path / "tfds"), **MOCK_RUNS[dataset]))
    assert cfg.augment == "pad_crop_flip" and cfg.normalize == "subtract_mean"  # recipe kept
    # The mock stands in for the download too: the download host is not probed.
    with tfds.testing.mock_data(num_examples=MOCK_N, policy=tfds.testing.MockPolicy.USE_CODE), \
            mock.patch.object(tfds_sources, "host_reachable", return_value=None):
        train.run(cfg)
        raw = sources.load(dataset, noisy_label_key=cfg.noisy_label_key or None)
    res = artifacts.read_json(tmp_path / "run" / "results.json")
    for key in ("dataset", "noise", "noise_rate_actual", "seed", "epochs", "ce_test_accuracy",
                "method_test_accuracy"):
        assert key in res, key
    assert res["dataset"] == dataset and res["noise"] == cfg.noise
    run = tmp_path / "run"
    eta, psi = np.load(run / "eta.npy"), np.load(run / "psi.npy")
    assert eta.shape == psi.shape == (MOCK_N,)
    assert np.all((eta >= 0) & (eta <= 1))
    # η was updated in every epoch: every row 0..N-1 was reached through its batch's index.
    assert np.all(eta != cfg.eta_init)
    with np.load(run / "noisy_labels.npz") as saved:
        labels, clean = saved["labels"], saved["clean_labels"]
        recipe = json.loads(str(saved["recipe"]))
    assert labels.shape == (MOCK_N,) and np.all((labels >= 0) & (labels < raw.num_classes))
    np.testing.assert_array_equal(clean, raw.train.clean_labels)
    assert recipe["noise"] == cfg.noise
    if cfg.noise == "none":  # CIFAR-N: the human labels are the observed labels
        np.testing.assert_array_equal(labels, raw.train.labels)
    if dataset == "cifar100":
        assert 1 <= recipe["mlp_epochs_run"] <= 3


@pytest.mark.e2e
@pytest.mark.parametrize("download", [True, False])
def test_tfds_dataset_missing_offline_stops_in_seconds_with_one_error_line(tmp_path, download):
    """Offline as seen by tfds: every connection refused (a proxy on a closed port), tfds's
    own download retries (~3.5 minutes) left as they are: the download host's probe
    (tfds_sources.host_reachable) stops the run first, in seconds (issue 19)."""
    proxy = "http://127.0.0.1:9"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HTTP_PROXY=proxy, HTTPS_PROXY=proxy,
               http_proxy=proxy, https_proxy=proxy)
    for variable in ("NO_PROXY", "no_proxy"):
        env.pop(variable, None)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "idn_tf.train", "--dataset=cifar10",
         "--download" if download else "--nodownload", "--data_dir=tfds", "--run_dir=run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "dataset cifar10 is not prepared in tfds " in lines[0]  # --data_dir as given
    assert "tfds build cifar10" in lines[0] and "cifar-10-binary.tar.gz" in lines[0]
    assert ("cannot be reached" if download else "downloading is turned off") in lines[0]
    assert elapsed <= 15, elapsed
    assert os.listdir(tmp_path) == []  # nothing written: no run folder, no tfds folder


@pytest.mark.e2e
def test_run_files_are_not_private(finished_run):
    # Atomic writes go through mkstemp (mode 0600); the final files keep the umask's mode.
    cfg, _ = finished_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "eta.npy", "classifier.weights.h5", "label_audit.csv"):
        assert os.stat(os.path.join(cfg.run_dir, name)).st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.e2e
def test_cli_prints_no_tensorflow_info_lines(cli_run):
    folder, result = cli_run
    assert result.returncode == 0, result.stderr
    assert os.path.isdir(folder / "saved_models" / "digits-kmeans-0" / "1")
    # Python-side absl INFO lines (TensorFlow's C++ start-up lines: test_cli.py).
    info = [line for line in (result.stdout + result.stderr).splitlines()
            if re.match(r"I\d{4} .*\.py:\d+\]", line)]
    assert not info, info[:3]


@pytest.mark.e2e
def test_unwritable_export_dir_stops_before_training(tmp_path):
    (tmp_path / "afile").write_text("")
    result = cli("--export_dir=afile", "--run_dir=run", *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --export_dir=afile: cannot write" in result.stderr
    assert not os.path.exists(tmp_path / "run" / "noisy_labels.npz")


def test_run_dir_dot_names_the_model_after_the_folder(tmp_path):
    cfg = config_lib.Config(run_dir=".")
    assert cfg.model_name == os.path.basename(os.getcwd())


@pytest.mark.e2e
def test_diverging_loss_stops_with_one_line_and_no_results(tmp_path):
    result = cli("--lr=1e30", "--epochs=2", "--lr_decay_epochs=", "--verbose=0", "--export_dir=",
                 "--run_dir=run", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NaN or infinite" in errors[0] and "stage1" in errors[0]
    assert not os.path.exists(tmp_path / "run" / "psi.npy")
