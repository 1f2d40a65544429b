"""The run summary (idn_tf/report.py): label-correction rates and η's AUROC on hand-worked
cases, against scikit-learn and a count of pairs; results.json's fields; the final table."""

import types

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from idn_tf import methods, report


def nan(x):
    return x != x


# ---------------------------------------------------------------------------------------
# label_correction


def test_label_correction_hand_worked():
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    clean = np.array([0, 1, 0, 2, 2, -1, 0])
    guess = np.array([0, 2, 0, 1, 1, 0, 0])  # argmax q
    q = np.full((7, 3), 0.1)
    q[np.arange(7), guess] = 0.8
    # Right labels: rows 0, 1, 6; kept at 0 and 6. Wrong labels: rows 2, 3, 4; only row 2's
    # argmax is its clean label (row 4 keeps the wrong label). Row 5: clean label unknown.
    assert report.label_correction(q, labels, clean) == {
        "wrong_labels_corrected": pytest.approx(1 / 3), "right_labels_kept": pytest.approx(2 / 3)}


def test_label_correction_is_nan_where_undefined():
    q = np.eye(3)
    labels = np.array([0, 1, 2])
    all_right = report.label_correction(q, labels, labels)
    assert nan(all_right["wrong_labels_corrected"]) and all_right["right_labels_kept"] == 1.0
    all_wrong = report.label_correction(q, labels, np.array([1, 2, 0]))
    assert all_wrong["wrong_labels_corrected"] == 0.0 and nan(all_wrong["right_labels_kept"])
    unknown = report.label_correction(q, labels, np.full(3, -1))
    assert all(nan(v) for v in unknown.values())


def test_label_correction_against_a_loop():
    rng = np.random.default_rng(0)
    n, k = 300, 5
    clean = rng.integers(-1, k, n)  # a sixth unknown
    labels = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), np.maximum(clean, 0))
    q = rng.dirichlet(np.ones(k), n)
    corrected = kept = wrong = right = 0
    for i in range(n):
        if clean[i] < 0:
            continue
        best = max(range(k), key=lambda j: q[i, j])
        if labels[i] != clean[i]:
            wrong += 1
            corrected += best == clean[i]
        else:
            right += 1
            kept += best == labels[i]
    assert wrong > 20 and right > 20
    assert report.label_correction(q, labels, clean) == {
        "wrong_labels_corrected": pytest.approx(corrected / wrong, abs=1e-15),
        "right_labels_kept": pytest.approx(kept / right, abs=1e-15)}


# ---------------------------------------------------------------------------------------
# eta_auroc


def auroc_by_pairs(scores, positive):
    """P(score of a positive > score of a negative) + ½ P(equal), over all pairs."""
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_eta_auroc_hand_worked():
    eta = np.array([0.9, 0.8, 0.3, 0.1, 1.0, 0.0])
    labels = np.array([0, 1, 2, 0, 1, 2])
    clean = np.array([1, 1, 0, 0, -1, -1])  # rows 0, 2 wrong; 1, 3 right; 4, 5 unknown
    # (wrong, right) pairs: (0.9, 0.8) ✓, (0.9, 0.1) ✓, (0.3, 0.8) ✗, (0.3, 0.1) ✓
    assert report.auroc(eta, labels, clean) == 0.75
    # A tie counts half: (0.5, 0.5) ½, (0.5, 0.2) ✓.
    assert report.auroc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0]),
                            np.array([0, 0, 0])) == 0.75
    # A perfect detector and a perfectly wrong one.
    assert report.auroc(np.array([1.0, 0.0]), np.array([1, 0]), np.array([0, 0])) == 1.0
    assert report.auroc(np.array([0.0, 1.0]), np.array([1, 0]), np.array([0, 0])) == 0.0


def test_eta_auroc_against_sklearn_and_a_count_of_pairs():
    rng = np.random.default_rng(1)
    n, k = 400, 4
    clean = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.25, (clean + 1) % k, clean)
    clean[rng.random(n) < 0.1] = -1
    eta = np.round(rng.random(n) * 0.6 + 0.4 * (labels != clean), 2)  # with ties
    known = clean >= 0
    wrong = labels[known] != clean[known]
    value = report.auroc(eta, labels, clean)
    assert isinstance(value, float)
    assert value == pytest.approx(roc_auc_score(wrong, eta[known]), abs=1e-12)
    assert value == pytest.approx(auroc_by_pairs(eta[known], wrong), abs=1e-12)
    assert 0.6 < value < 1.0


@pytest.mark.parametrize("clean", [[0, 1, 2], [1, 2, 0], [-1, -1, -1], [0, -1, -1]])
def test_eta_auroc_is_nan_without_both_kinds_of_label(clean):
    assert nan(report.auroc(np.array([0.1, 0.5, 0.9]), np.array([0, 1, 2]), np.array(clean)))


# ---------------------------------------------------------------------------------------
# results.json


CONFIG = types.SimpleNamespace(dataset="digits", noise="kmeans", noise_rate=0.4, seed=3,
                               epochs=5, method="idn", uses_noise_rate=lambda: False)


def stage(accuracy, tag, selection=None):
    from idn_tf.runfolder import StageResult
    return StageResult(accuracy, {"loss": [tag, tag], "test_accuracy": [accuracy + 0.1, accuracy]},
                       {"epoch": [tag]}, selection=selection)


def selection_keys(prefix, best, epoch_key, selection=None):
    selection = selection or {}
    return {f"{prefix}_test_accuracy_selected": selection.get("test_accuracy"),
            f"{prefix}_test_accuracy_best": pytest.approx(best),
            f"{prefix}_validation_accuracy": selection.get("validation_accuracy"),
            epoch_key: selection.get("epoch")}


def test_results_of_the_method():
    eta = np.array([0.9, 0.5, 0.51, 0.0])
    labels = np.array([0, 1, 1, 0])
    clean = np.array([1, 1, 0, 0])
    q = np.array([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])
    chosen = {"epoch": 1, "validation_accuracy": 0.55, "test_accuracy": 0.8}
    res = report.results(CONFIG, 0.5, stage(0.6, 1.0), stage(0.7, 2.0, chosen), q, eta, labels,
                         clean)
    assert res == {
        "dataset": "digits", "noise": "kmeans", "noise_rate_actual": 0.5,
        "seed": 3, "epochs": 5, "method": "idn",
        "ce_test_accuracy": 0.6, "method_test_accuracy": 0.7,
        # the best is the first epoch's (accuracy + 0.1); only the method has a selection
        **selection_keys("ce", 0.7, "ce_selected_epoch"),
        **selection_keys("method", 0.8, "selected_epoch", chosen),
        "eta_mean": pytest.approx(1.91 / 4), "eta_above_half": 0.5,  # 0.5 is not above
        # wrong rows 0 (η .9) and 2 (η .51) against right rows 1 (.5) and 3 (0): all four won
        "eta_auroc": 1.0,
        # row 0 corrected to 1, row 2 to 0; row 1 kept, row 3 kept
        "wrong_labels_corrected": 1.0, "right_labels_kept": 1.0,
        "ce_history": stage(0.6, 1.0).history, "method_history": stage(0.7, 2.0).history,
        "ce_monitor": {"epoch": [1.0]}, "method_monitor": {"epoch": [2.0]}}


def test_results_of_a_baseline():
    config = types.SimpleNamespace(**{**vars(CONFIG), "method": "forward"})
    res = report.baseline_results(config, 0.1, None, stage(0.8, 3.0), {"extra_value": 7})
    assert res == {
        "dataset": "digits", "noise": "kmeans", "noise_rate_actual": 0.1,
        "seed": 3, "epochs": 5, "method": "forward",
        "ce_test_accuracy": None, "method_test_accuracy": 0.8, "ce_history": None,
        **selection_keys("method", 0.9, "selected_epoch"),
        "method_history": stage(0.8, 3.0).history, "ce_monitor": None,
        "method_monitor": {"epoch": [3.0]}, "extra_value": 7}
    with_ce = report.baseline_results(config, 0.1, stage(0.5, 4.0), stage(0.8, 3.0))
    assert with_ce["ce_test_accuracy"] == 0.5 and with_ce["ce_history"] == stage(0.5, 4.0).history
    assert with_ce["ce_test_accuracy_best"] == pytest.approx(0.6)
    assert "extra_value" not in with_ce


def test_forwards_results_hold_the_T_it_trained_with_as_floats(tmp_path):
    from idn_tf import artifacts, config as config_lib, methods
    from idn_tf.runfolder import RunFolder
    t = np.array([[0.75, 0.25], [0.0, 1.0]], np.float32)
    cfg = config_lib.Config(run_dir=str(tmp_path), method="forward")
    folder = RunFolder(cfg)
    artifacts.write_npy(folder.path("transition_matrix.npy"), t)
    run = methods.Run(cfg, types.SimpleNamespace(num_classes=2), None, 0.1, folder)
    res = methods.get("forward").results(run, None)
    assert res == {"transition_matrix": [[0.75, 0.25], [0.0, 1.0]]}
    assert all(type(v) is float for row in res["transition_matrix"] for v in row)


# ---------------------------------------------------------------------------------------
# The closing table


def test_table_of_a_baseline_hand_written():
    res = {"dataset": "npz", "noise": "none", "method": "forward", "seed": 1, "epochs": 2,
           "noise_rate_actual": 0.25, "ce_test_accuracy": None, "method_test_accuracy": 0.8125}
    # The longest row name is 41 characters; a value is 6.2f and "%", after two spaces.
    assert report.table(res, methods.get(res['method'])) == "\n".join([
        "npz / none noise / forward / seed 1 / 2 epochs",
        "-" * 50,
        "actual noise rate (wrong training labels)   25.00%",
        "Forward test accuracy" + " " * 20 + "   81.25%"])


def test_table_of_the_method_lists_its_rows_in_order_and_leaves_out_nan():
    res = {"dataset": "cifar10", "noise": "ccn", "method": "idn", "seed": 0, "epochs": 150,
           "noise_rate_actual": 0.2, "ce_test_accuracy": 0.5, "method_test_accuracy": 1.0,
           "finetuned_test_accuracy": 0.0, "wrong_labels_corrected": 0.123456,
           "right_labels_kept": float("nan"), "eta_auroc": 0.9, "label_issue_precision": 0.5,
           "label_issue_recall": 0.25}
    lines = report.table(res, methods.get(res['method'])).splitlines()
    assert lines[0] == "cifar10 / ccn noise / idn / seed 0 / 150 epochs"
    width = len("wrong training labels corrected by argmax q")  # the longest row name
    assert lines[1] == "-" * (width + 9)
    # Every value starts in the same column, two spaces after the longest name; the NaN row
    # (right_labels_kept) is left out.
    assert all(line[width:width + 2] == "  " for line in lines[2:])
    names = [line[:width].rstrip() for line in lines[2:]]
    values = [line[width + 2:] for line in lines[2:]]
    assert names == ["actual noise rate (wrong training labels)", "CE test accuracy (stage 1)",
                     "method test accuracy (stage 2)", "method + clean fine-tuning test accuracy",
                     "wrong training labels corrected by argmax q",
                     "AUROC of η as wrong-label detector",
                     "flagged labels that are wrong (precision)", "wrong labels flagged (recall)"]
    assert values == [" 20.00%", " 50.00%", "100.00%", "  0.00%", " 12.35%",
                      " 90.00%", " 50.00%", " 25.00%"]


ROWS = {"idn": "method test accuracy (stage 2)", "forward": "Forward test accuracy",
        "bootstrap_soft": "Bootstrapping (soft) test accuracy",
        "bootstrap_hard": "Bootstrapping (hard) test accuracy",
        "ldmi": "L_DMI test accuracy", "coteaching": "Co-teaching test accuracy",
        "tanaka": "Tanaka test accuracy (second phase)", "pencil": "PENCIL test accuracy",
        "elr": "ELR test accuracy"}


@pytest.mark.parametrize("method, row", [(m, r) for m, r in ROWS.items()] + [("ce", None)])
def test_table_names_each_methods_accuracy(method, row):
    res = {"dataset": "digits", "noise": "ccn", "method": method, "seed": 0, "epochs": 1,
           "noise_rate_actual": 0.2, "ce_test_accuracy": 0.5, "method_test_accuracy": 0.75,
           "finetuned_test_accuracy": 0.8}
    names = [line[:-9].rstrip() for line in report.table(res, methods.get(res['method'])).splitlines()[2:]]
    name = "method" if method == "idn" else method
    assert names == ["actual noise rate (wrong training labels)", "CE test accuracy (stage 1)",
                     *([row] if row else []), f"{name} + clean fine-tuning test accuracy"]


def test_table_shows_the_stateful_baselines_values():
    def rows(method, **values):
        res = {"dataset": "digits", "noise": "ccn", "method": method, "seed": 0, "epochs": 1,
               "noise_rate_actual": 0.2, "ce_test_accuracy": None,
               "method_test_accuracy": 0.75, **values}
        return {line[:-9].rstrip(): line[-7:]
                for line in report.table(res, methods.get(method)).splitlines()[2:]}
    assert rows("coteaching", coteaching_tau=0.3) == {
        "actual noise rate (wrong training labels)": " 20.00%",
        "Co-teaching test accuracy": " 75.00%", "Co-teaching forget rate τ": " 30.00%"}
    soft = dict(soft_labels_corrected=0.6, soft_labels_kept=0.95)
    for method, row in (("tanaka", "Tanaka test accuracy (second phase)"),
                        ("pencil", "PENCIL test accuracy"), ("elr", "ELR test accuracy")):
        assert rows(method, **soft) == {
            "actual noise rate (wrong training labels)": " 20.00%", row: " 75.00%",
            "wrong training labels corrected by the soft labels": " 60.00%",
            "right training labels kept by the soft labels": " 95.00%"}


def test_table_shows_the_selected_and_best_epochs_under_each_accuracy():
    res = {"dataset": "digits", "noise": "ccn", "method": "idn", "seed": 0, "epochs": 9,
           "noise_rate_actual": 0.2, "ce_test_accuracy": 0.5, "ce_test_accuracy_selected": 0.625,
           "ce_selected_epoch": 4, "ce_test_accuracy_best": 0.75, "method_test_accuracy": 0.8,
           "method_test_accuracy_selected": None, "selected_epoch": None,
           "method_test_accuracy_best": 0.875}
    lines = report.table(res, methods.get("idn")).splitlines()[2:]
    width = len("actual noise rate (wrong training labels)")
    assert [(line[:width].rstrip(), line[width + 2:]) for line in lines] == [
        ("actual noise rate (wrong training labels)", " 20.00%"),
        ("CE test accuracy (stage 1)", " 50.00%"),
        ("  at epoch 4, chosen on validation", " 62.50%"),
        ("  at its best epoch on test (optimistic)", " 75.00%"),
        ("method test accuracy (stage 2)", " 80.00%"),  # no selection without validation
        ("  at its best epoch on test (optimistic)", " 87.50%")]


def test_results_have_noise_rate_only_for_the_noises_that_read_it():
    from idn_tf import config as config_lib
    assert report._common(config_lib.Config(noise="ccn", noise_rate=0.3), 0.2)["noise_rate"] == 0.3
    assert report._common(config_lib.Config(noise="symmetric", noise_rate=0.2), 0.2)["noise_rate"] == 0.2
    for noise in ("kmeans", "none"):
        assert "noise_rate" not in report._common(config_lib.Config(noise=noise, noise_rate=0.4), 0.2)
