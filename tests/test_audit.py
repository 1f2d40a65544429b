"""The label audit: its columns and scores by hand and against scikit-learn, the audit of a
finished run recomputed from its exported SavedModel, η and ψ, and `python -m idn_tf.audit`."""

import csv
import io
import os
import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from idn_tf import artifacts, audit, config as config_lib, confident_learning
from idn_tf.data import sources, views

import cli as cli_lib

TINY = dict(epochs=3, eta_start_epoch=2, eta_every=1, lr_decay_epochs=(2,), verbose=0,
            audit_folds=2)


def read_csv(path_or_text):
    text = open(path_or_text).read() if os.path.isfile(path_or_text) else path_or_text
    rows = list(csv.DictReader(io.StringIO(text)))
    return rows


Q = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.7, 0.3], [0.3, 0.7]])
ETA = np.array([0.5, 0.9, 0.5, 0.1, 1.0, 1.0], dtype=np.float32)
PSI = np.array([0.7, 0.2, 0.6, 0.9, 0.5, 0.4], dtype=np.float32)
LABELS = np.array([0, 0, 1, 1, 0, 1])
CLEAN = np.array([0, 1, -1, 1, 1, 1])


def test_held_out_probabilities_decide_the_order_the_estimate_and_the_flag():
    held_out = np.array([[0.8, 0.2], [0.35, 0.65], [0.5, 0.5], [0.9, 0.1], [0.6, 0.4],
                         [0.2, 0.8]])
    rows = read_csv(audit.csv_text(audit.audit_columns(Q, ETA, PSI, LABELS, CLEAN, held_out,
                                                       class_names=("ant", "b,ee"))))
    assert list(rows[0]) == [c for c in audit.COLUMNS if c != "path"]  # arrays: no files
    # 1 − held-out p of the observed label: .2, .65, .5, .9, .4, .2 -> rows 3, 1, 2, 4, then
    # the tie at .2 in index order (0, 5).
    assert [int(r["index"]) for r in rows] == [3, 1, 2, 4, 0, 5]
    np.testing.assert_allclose([float(r["issue_score"]) for r in rows],
                               [0.9, 0.65, 0.5, 0.4, 0.2, 0.2], rtol=1e-6)
    assert [int(r["observed_label"]) for r in rows] == [1, 0, 1, 0, 0, 1]
    # argmax of the held-out p (a tie at .5/.5 goes to the first class, as np.argmax)
    assert [int(r["estimated_label"]) for r in rows] == [0, 1, 0, 0, 0, 1]
    # Confident learning (t0 = .5833, t1 = .4667; joint [[2, 1], [1, 2]]): one flag per
    # label, the largest margin: #1 (label 0, p1 − p0 = .3) and #3 (label 1, p0 − p1 = .8);
    # #2's tie keeps its label (argmax 0, but p of its label is as high).
    assert [int(r["is_label_issue"]) for r in rows] == [1, 1, 0, 0, 0, 0]
    assert [r["observed_class"] for r in rows] == ["b,ee", "ant", "b,ee", "ant", "ant", "b,ee"]
    assert [r["estimated_class"] for r in rows] == ["ant", "b,ee", "ant", "ant", "ant", "b,ee"]
    assert [r["clean_label"] for r in rows] == ["1", "1", "", "1", "0", "1"]  # unknown -> empty
    # The method's own columns stay: q of the observed label, η, ψ.
    np.testing.assert_allclose([float(r["q_observed"]) for r in rows],
                               [0.7, 0.2, 0.4, 0.7, 0.9, 0.7])
    np.testing.assert_allclose([float(r["eta"]) for r in rows], [0.1, 0.9, 0.5, 1, 0.5, 1],
                               rtol=1e-6)
    np.testing.assert_allclose([float(r["psi"]) for r in rows], [0.9, 0.2, 0.6, 0.5, 0.7, 0.4],
                               rtol=1e-6)


def test_without_held_out_probabilities_q_decides():
    rows = read_csv(audit.csv_text(audit.audit_columns(Q, ETA, PSI, LABELS, CLEAN)))
    # 1 − q of the observed label: .1, .8, .6, .3, .3, .3 -> 1, 2, the tie (3, 4, 5), 0.
    assert [int(r["index"]) for r in rows] == [1, 2, 3, 4, 5, 0]
    assert [int(r["estimated_label"]) for r in rows] == [1, 0, 1, 0, 1, 0]
    assert [int(r["is_label_issue"]) for r in rows] == [1, 1, 0, 0, 0, 0]


def test_validation_and_test_rows_have_no_eta_psi_or_q_and_are_flagged_with_the_rest():
    # Two training rows of Q's first (eta, psi, q), then two validation and two test rows.
    held_out = np.array([[0.8, 0.2], [0.35, 0.65], [0.5, 0.5], [0.9, 0.1], [0.6, 0.4],
                         [0.2, 0.8]])
    split = np.array(["train", "train", "validation", "validation", "test", "test"])
    index = np.array([4, 7, 2, 9, 0, 1])  # source rows; the test split counts its own
    columns = audit.audit_columns(Q[:2], ETA[:2], PSI[:2], LABELS, CLEAN, held_out, index,
                                  split=split)
    rows = read_csv(audit.csv_text(columns))
    assert list(rows[0]) == [c for c in audit.COLUMNS if c != "path"]
    # The order of test_held_out_probabilities_decide_the_order_the_estimate_and_the_flag:
    # positions 3, 1, 2, 4, 0, 5.
    assert [(r["split"], int(r["index"])) for r in rows] == [
        ("validation", 9), ("train", 7), ("validation", 2), ("test", 0), ("train", 4),
        ("test", 1)]
    assert [r["eta"] == r["psi"] == r["q_observed"] == "" for r in rows] == [
        True, False, True, True, False, True]  # empty cells, not "nan"
    np.testing.assert_allclose([float(rows[1][c]) for c in ("eta", "psi", "q_observed")],
                               [0.9, 0.2, 0.2], rtol=1e-6)  # row 1: η, ψ, q of label 0
    # One confident-learning estimate over all six rows: the flags of the six together.
    flagged = confident_learning.prune_by_noise_rate(held_out, LABELS)
    assert [int(r["is_label_issue"]) for r in rows] == list(flagged[[3, 1, 2, 4, 0, 5]])


def test_audited_rows_are_the_training_rows_then_the_held_out_ones():
    rng = np.random.default_rng(2)
    n, k = 30, 3
    images = rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    labels, clean = rng.integers(0, k, n), rng.integers(0, k, n)
    clean[5] = -1
    split = sources.Split(images, labels, clean)
    full = views.ArrayData(sources.Dataset("npz", split, split, k, ("a", "b", "c")))
    held = np.array([2, 5, 17])
    observed = (labels + 1) % k  # the run's noisy labels
    data, train_labels = full.hold_out(held, observed)
    trained = np.setdiff1d(np.arange(n), held)
    rows = audit.audited_rows(train_labels, data, n)
    assert list(rows.split) == ["train"] * 27 + ["validation"] * 3
    np.testing.assert_array_equal(rows.index, np.concatenate([trained, held]))
    np.testing.assert_array_equal(rows.labels, observed[rows.index])
    np.testing.assert_array_equal(rows.clean_labels, clean[rows.index])
    assert rows.paths is None
    only = audit.audited_rows(train_labels, data, 27)  # an older audit_probs.npy: [N, K]
    assert list(only.split) == ["train"] * 27 and list(only.index) == list(trained)
    with pytest.raises(ValueError, match="29 audited rows"):
        audit.audited_rows(train_labels, data, 29)
    from idn_tf import label_report
    assert label_report.checked(rows.split) == "27 training, 3 validation"


def test_detection_counts_validation_rows_and_eta_the_training_rows():
    rng = np.random.default_rng(1)
    n, m, k = 150, 50, 3
    clean = rng.integers(0, k, n + m)
    labels = np.where(rng.random(n + m) < 0.3, (clean + 1) % k, clean)
    clean[n + m - 5:] = -1  # e.g. test rows: unknown
    held_out = rng.dirichlet(np.ones(k), n + m)
    q, eta = rng.dirichlet(np.ones(k), n), rng.random(n)
    scores = audit.detection(q, eta, labels, clean, held_out)
    known = clean >= 0
    wrong = labels[known] != clean[known]
    flagged = confident_learning.prune_by_noise_rate(held_out, labels)[known]
    assert scores["label_issue_precision"] == pytest.approx(
        np.sum(wrong & flagged) / np.sum(flagged))
    assert scores["label_issue_recall"] == pytest.approx(np.sum(wrong & flagged) / np.sum(wrong))
    score = 1 - held_out[np.arange(n + m), labels][known]
    assert scores["issue_score_auroc"] == pytest.approx(roc_auc_score(wrong, score))
    assert scores["eta_auroc"] == pytest.approx(
        roc_auc_score(labels[:n] != clean[:n], eta))


def test_without_folds_the_final_classifier_scores_the_validation_rows(tmp_path, capsys):
    # --audit_folds=0: the training rows by q, the held-out rows by the classifier's softmax
    # (a linear map with known weights, its probabilities computed here with numpy).
    import keras
    rng = np.random.default_rng(5)
    n, k = 40, 3
    images = rng.integers(0, 256, (n, 2, 2, 1), dtype=np.uint8)
    labels = rng.integers(0, k, n)
    split = sources.Split(images, labels, labels.copy())
    full = views.ArrayData(sources.Dataset("npz", split, split, k, ("a", "b", "c")))
    held = np.array([0, 13, 22, 39])
    data, train_labels = full.hold_out(held, labels)
    kernel, bias = rng.normal(size=(4, k)), rng.normal(size=k)
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(k)(x))
    classifier.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    logits = images[held].reshape(len(held), -1) / 255 @ kernel + bias
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = n - len(held)
    q = rng.dirichlet(np.ones(k), m)
    eta, psi = rng.random(m).astype(np.float32), rng.random(m).astype(np.float32)
    scores = audit.report(str(tmp_path), q, eta, psi, train_labels, data, None, classifier, 8)
    assert "(36 training, 4 validation images checked)" in capsys.readouterr().out
    rows = {(r["split"], int(r["index"])): r for r in read_csv(str(tmp_path / "label_audit.csv"))}
    assert len(rows) == n
    for j, i in enumerate(held):
        row = rows["validation", i]
        np.testing.assert_allclose(float(row["issue_score"]), 1 - p[j, labels[i]], rtol=1e-5)
        assert int(row["estimated_label"]) == p[j].argmax()
        assert row["is_label_issue"] == str(int(p[j].argmax() != labels[i]))
    trained = np.setdiff1d(np.arange(n), held)
    for j, i in enumerate(trained):
        np.testing.assert_allclose(float(rows["train", i]["issue_score"]),
                                   1 - q[j, labels[i]], rtol=1e-6)
    assert scores["eta_auroc"] != scores["eta_auroc"]  # no wrong label: undefined


def test_detection_scores_by_hand_and_against_sklearn():
    rng = np.random.default_rng(0)
    n, k = 200, 4
    clean = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.3, (clean + 1) % k, clean)
    clean[:10] = -1  # unknown clean labels are left out
    q = rng.dirichlet(np.ones(k), n)
    held_out = rng.dirichlet(np.ones(k), n)
    eta = rng.random(n)
    known = clean >= 0
    wrong = labels[known] != clean[known]
    for probs, given in ((q, None), (held_out, held_out)):
        scores = audit.detection(q, eta, labels, clean, given)
        flagged = (probs.argmax(1) != labels if given is None else
                   confident_learning.prune_by_noise_rate(given, labels))[known]
        assert scores["label_issue_precision"] == pytest.approx(
            np.sum(wrong & flagged) / np.sum(flagged))
        assert scores["label_issue_recall"] == pytest.approx(
            np.sum(wrong & flagged) / np.sum(wrong))
        score = 1 - probs[known][np.arange(known.sum()), labels[known]]
        assert scores["issue_score_auroc"] == pytest.approx(roc_auc_score(wrong, score))
        assert scores["eta_auroc"] == pytest.approx(roc_auc_score(wrong, eta[known]))


def test_detection_is_nan_without_clean_labels():
    q = np.eye(3)
    scores = audit.detection(q, np.ones(3), np.array([0, 1, 2]), np.full(3, -1))
    assert all(v != v for v in scores.values())


@pytest.fixture(scope="module")
def finished_run(digits_run):
    """The tiny digits run of conftest.py (TINY, exported); read only."""
    assert digits_run[0] == config_lib.Config(run_dir=digits_run[0].run_dir,
                                              export_dir=digits_run[0].export_dir, **TINY)
    return digits_run


@pytest.mark.e2e
def test_audit_rows_match_a_recomputation_from_the_saved_model(finished_run):
    import keras
    from idn_tf import stages
    from idn_tf.data import views
    cfg, res = finished_run
    run = cfg.run_dir
    rows = read_csv(os.path.join(run, "label_audit.csv"))
    digits = sources.load_digits()
    with np.load(os.path.join(run, "noisy_labels.npz")) as saved:
        all_labels, all_clean, held = saved["labels"], saved["clean_labels"], saved["validation_rows"]
    # Every training image has a row: the 1,292 trained rows and the 145 held out for
    # validation (digits' test labels are clean: no test rows), indexed as in the source.
    trained = np.setdiff1d(np.arange(len(all_labels)), held)
    n = len(trained)
    assert (n, len(held), len(rows)) == (1292, 145, 1437)
    assert sorted((r["split"], int(r["index"])) for r in rows) == sorted(
        [("train", int(i)) for i in trained] + [("validation", int(i)) for i in held])
    # η, ψ: the trained rows in order; audit_probs.npy: those, then the validation rows.
    position = {("train", row): i for i, row in enumerate(trained)}
    position.update({("validation", row): n + j for j, row in enumerate(held)})
    source_rows = np.concatenate([trained, held])
    labels, clean = all_labels[source_rows], all_clean[source_rows]
    eta, psi = np.load(os.path.join(run, "eta.npy")), np.load(os.path.join(run, "psi.npy"))
    # The audit's classifier is the last epoch's (classifier.weights.h5), built on the view of
    # the trained rows (their pixel statistics).
    data, _ = views.from_config(cfg, digits).hold_out(held, all_labels)
    classifier = stages.new_classifier(cfg, data)
    classifier.load_weights(os.path.join(run, "classifier.weights.h5"))
    all_probs = keras.ops.softmax(classifier(digits.train.images[trained], training=False)).numpy()

    # Sorted by 1 − the held-out probability of the observed label (audit_probs.npy), highest
    # first; the estimate and the flag are the held-out arg max and confident learning on
    # all 1,437 rows together.
    held_out = np.load(os.path.join(run, "audit_probs.npy"))
    assert held_out.shape == (len(rows), all_probs.shape[1])
    np.testing.assert_allclose(held_out.sum(1), 1.0, rtol=1e-5)
    order = np.array([position[r["split"], int(r["index"])] for r in rows])
    score = 1.0 - held_out[np.arange(len(rows)), labels]
    assert np.all(np.diff(score[order]) <= 1e-7)
    np.testing.assert_allclose([float(r["issue_score"]) for r in rows], score[order], atol=1e-6)
    assert [int(r["estimated_label"]) for r in rows] == list(held_out.argmax(1)[order])
    flagged = confident_learning.prune_by_noise_rate(held_out, labels)
    assert [int(r["is_label_issue"]) for r in rows] == list(flagged[order])
    for r in rows:
        i = position[r["split"], int(r["index"])]
        assert (int(r["observed_label"]), int(r["clean_label"])) == (labels[i], clean[i])
        assert (r["eta"] == r["psi"] == r["q_observed"] == "") == (r["split"] == "validation")

    # A few training rows: the top of the audit and some random ones, recomputed with numpy
    # from the exported SavedModel's probabilities and Eq. 8 written out as a loop.
    train_rows = [r for r in rows if r["split"] == "train"]
    picked = train_rows[:5] + [train_rows[i] for i in
                               np.random.default_rng(0).choice(n, 8, replace=False)]
    ids = np.array([position["train", int(r["index"])] for r in picked])
    for row, i, p in zip(picked, ids, all_probs[ids]):
        u = np.array([p[j] * ((1 - eta[i]) * (j == labels[i]) + eta[i] * psi[i])
                      for j in range(len(p))], dtype=np.float64)
        u = np.maximum(u, 1e-5 * p)  # the authors' floor on the likelihood, times p_j
        q = u / u.sum()
        np.testing.assert_allclose(float(row["q_observed"]), q[labels[i]], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(float(row["eta"]), eta[i], rtol=1e-6)
        np.testing.assert_allclose(float(row["psi"]), psi[i], rtol=1e-6)


@pytest.mark.e2e
def test_results_hold_the_detection_scores(finished_run):
    cfg, res = finished_run
    rows = read_csv(os.path.join(cfg.run_dir, "label_audit.csv"))
    # Every row with a known clean label counts, the validation rows too; η the trained rows.
    wrong = np.array([r["observed_label"] != r["clean_label"] for r in rows])
    flagged = np.array([r["is_label_issue"] == "1" for r in rows])
    trained = np.array([r["split"] == "train" for r in rows])
    eta = np.array([float(r["eta"]) for r in rows if r["split"] == "train"])
    score = np.array([float(r["issue_score"]) for r in rows])
    saved = artifacts.read_json(os.path.join(cfg.run_dir, "results.json"))
    assert saved["eta_auroc"] == pytest.approx(roc_auc_score(wrong[trained], eta), abs=1e-6)
    assert saved["issue_score_auroc"] == pytest.approx(roc_auc_score(wrong, score), abs=1e-6)
    assert saved["label_issue_precision"] == pytest.approx((wrong & flagged).sum() / flagged.sum())
    assert saved["label_issue_recall"] == pytest.approx((wrong & flagged).sum() / wrong.sum())


@pytest.mark.e2e
def test_the_html_report_of_a_digits_run_is_the_shortlist_then_each_class(finished_run):
    import test_label_report
    from PIL import Image
    from idn_tf import label_report
    cfg, _ = finished_run
    page = test_label_report.parse(os.path.join(cfg.run_dir, "label_issues.html"))
    rows = test_label_report._check_against_csv(cfg.run_dir, page, 10)
    names = sources.load_digits().class_names
    assert [page.summary[k][0] for k in range(10)] == list(names)
    assert all(r["observed_class"] == names[int(r["observed_label"])] for r in rows)
    assert "path" not in rows[0]  # arrays: no files
    flagged = sum(r["is_label_issue"] == "1" for r in rows)
    assert 0 < len(page.flagged) == min(flagged, label_report.FLAGGED_MAX)
    # The page says how many images of each split it checked.
    assert "1292 training, 145 validation images of digits checked" in open(
        os.path.join(cfg.run_dir, "label_issues.html")).read()
    # The thumbnails: the 8x8 grey digits, 8 times larger, one per image shown.
    shown = {r["img"] for r in page.flagged + sum(page.sections.values(), [])}
    assert any("/validation-" in name for name in shown)
    assert len(os.listdir(os.path.join(cfg.run_dir, label_report.FILES_DIR))) == len(shown)
    with Image.open(os.path.join(cfg.run_dir, page.flagged[0]["img"])) as thumb:
        assert (thumb.mode, thumb.size) == ("L", (64, 64))


def audit_cli(*args, cwd):
    return cli_lib.run("idn_tf.audit", *args, cwd=cwd, timeout=300)


@pytest.mark.e2e
def test_audit_cli_rebuilds_the_same_file(digits_run_copy, tmp_path):
    cfg, _ = digits_run_copy
    path = os.path.join(cfg.run_dir, "label_audit.csv")
    original = open(path).read()
    os.remove(path)
    page = os.path.join(cfg.run_dir, "label_issues.html")
    original_page = open(page).read()
    os.remove(page)
    thumbs = os.path.join(cfg.run_dir, "label_issues_files")
    original_thumbs = {f: open(os.path.join(thumbs, f), "rb").read() for f in os.listdir(thumbs)}
    shutil.rmtree(thumbs)
    result = audit_cli(f"--run_dir={cfg.run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert open(path).read() == original
    assert open(page).read() == original_page  # the HTML report is rebuilt too
    assert {f: open(os.path.join(thumbs, f), "rb").read()
            for f in os.listdir(thumbs)} == original_thumbs  # and its thumbnails
    assert "eta_auroc" in result.stdout


@pytest.mark.e2e
def test_audit_cli_rebuilds_an_older_run_folder_of_training_rows_only(digits_run_copy, tmp_path):
    # A run made before the validation and test rows were audited: audit_probs.npy [N, K].
    cfg, res = digits_run_copy
    path = os.path.join(cfg.run_dir, "audit_probs.npy")
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as saved:
        labels, clean, held = saved["labels"], saved["clean_labels"], saved["validation_rows"]
    trained = np.setdiff1d(np.arange(len(labels)), held)
    probs = np.load(path)[:len(trained)]
    np.save(path, probs)
    result = audit_cli(f"--run_dir={cfg.run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "holds the 1292 training rows only" in result.stdout
    rows = read_csv(os.path.join(cfg.run_dir, "label_audit.csv"))
    assert {r["split"] for r in rows} == {"train"} and len(rows) == len(trained)
    # The training rows decided as before: confident learning on those rows alone.
    flagged = confident_learning.prune_by_noise_rate(probs, labels[trained])
    by_index = {int(r["index"]): r["is_label_issue"] == "1" for r in rows}
    assert [by_index[i] for i in trained] == list(flagged)
    wrong = labels[trained] != clean[trained]
    score = 1 - probs[np.arange(len(trained)), labels[trained]]
    shown = result.stdout.split("issue_score_auroc: ")[1].split()[0]
    assert float(shown) == pytest.approx(roc_auc_score(wrong, score), abs=1e-4)


@pytest.mark.e2e
def test_a_restarted_older_run_folder_reuses_its_training_rows_audit(digits_run_copy, capsys):
    from idn_tf import train
    cfg, first = digits_run_copy
    path = os.path.join(cfg.run_dir, "audit_probs.npy")
    np.save(path, np.load(path)[:1292])  # as a run made before validation rows were audited
    again = train.run(cfg)
    out = capsys.readouterr().out
    assert "audit folds: reusing" in out and "holds the 1292 training rows only" in out
    rows = read_csv(os.path.join(cfg.run_dir, "label_audit.csv"))
    assert len(rows) == 1292 and {r["split"] for r in rows} == {"train"}
    assert again["eta_auroc"] == first["eta_auroc"]


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--run_dir=nowhere"], "not a run folder"),
    (["--epochs=3"], "--epochs: idn_tf.audit takes only"),
])
def test_audit_cli_bad_input_is_one_line(tmp_path, args, message):
    result = audit_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


@pytest.mark.e2e
def test_audit_cli_on_an_unfinished_run_names_the_missing_file(tmp_path):
    cfg = config_lib.Config(run_dir=str(tmp_path / "run"), **TINY)
    artifacts.prepare_run_dir(cfg.run_dir, cfg.semantic_dict(), cfg.to_dict())
    result = audit_cli(f"--run_dir={cfg.run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "noisy_labels.npz is missing" in result.stderr


@pytest.mark.e2e
def test_audit_cli_rejects_damaged_run_files_in_one_line(finished_run, tmp_path):
    cfg, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(cfg.run_dir, copy)
    # flags.txt names the original folder; --run_dir on the command line wins.
    np.save(copy / "eta.npy", np.zeros(5, np.float32))
    result = audit_cli(f"--run_dir={copy}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "eta.npy has shape (5,)" in result.stderr
    # The next damage in-process (`audit.rebuild`, what the CLI calls): a user error
    # (cli.USER_ERRORS: exit 2, no traceback) of one line.
    import dataclasses
    from idn_tf import cli
    shutil.copy(os.path.join(cfg.run_dir, "eta.npy"), copy / "eta.npy")
    (copy / "classifier.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(cli.USER_ERRORS, match="classifier.weights.h5: cannot load it") as error:
        audit.rebuild(dataclasses.replace(cfg, run_dir=str(copy)))
    assert "\n" not in str(error.value)


@pytest.mark.e2e
def test_audit_cli_rejects_positional_arguments(tmp_path):
    result = audit_cli("runs/x", cwd=tmp_path)
    assert result.returncode == 2 and "--run_dir=" in result.stderr


@pytest.mark.e2e
def test_uniform_flips_invert_the_literal_eta_but_not_the_audit(tmp_path):
    """The case of issue 28 on digits: 15% uniformly random wrong labels and a short,
    low-rate recipe (the folder recipe's rates) under which stage 1 has not memorised them
    (mean ψ ≈ 0.6), so stage 2 trusts and fits them and the literal equations' η of the
    wrong labels runs to 0: ranked by that η they come last. The audit's held-out score,
    checked here against scikit-learn on the file it wrote, ranks them first."""
    from idn_tf import train
    cfg = config_lib.Config(
        run_dir=str(tmp_path / "run"), export_dir="", noise="symmetric", noise_rate=0.15,
        lr=5e-3, lr_decay_epochs=(4,), epochs=6, batch_size=32, eta_lr=0.05, eta_start_epoch=2,
        eta_every=1, weight_decay=1e-3, eta_numerics="literal", audit_folds=2, verbose=0,
        monitor_every=1000)
    res = train.run(cfg)
    rows = read_csv(os.path.join(cfg.run_dir, "label_audit.csv"))
    wrong = np.array([r["observed_label"] != r["clean_label"] for r in rows])
    trained = np.array([r["split"] == "train" for r in rows])  # η: the trained rows'
    eta = np.array([float(r["eta"]) for r in rows if r["split"] == "train"])
    assert 0.1 < wrong.mean() < 0.2
    assert roc_auc_score(wrong[trained], eta) < 0.5  # inverted
    assert res["eta_auroc"] < 0.5
    # The file's order is the audit's: its AUROC by position (first row most suspect).
    assert roc_auc_score(wrong, -np.arange(len(rows))) > 0.9
    assert res["issue_score_auroc"] > 0.9
