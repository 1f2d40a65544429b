"""benchmarks/detection.py's metrics, against hand-worked cases, brute force and sklearn.

The module is loaded by path with cleanlab made unimportable: its metrics must not need it.
"""

import importlib.util
import itertools
import os
import sys

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score

PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "detection.py")


@pytest.fixture(scope="module")
def det():
    saved = sys.modules.get("cleanlab", "absent")
    sys.modules["cleanlab"] = None  # `import cleanlab` now raises ImportError
    try:
        spec = importlib.util.spec_from_file_location("detection_bench", PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved == "absent":
            del sys.modules["cleanlab"]
        else:
            sys.modules["cleanlab"] = saved
    return module


def test_auroc_hand_worked(det):
    # Wrong: 0.9 and 0.3; right: 0.8 and 0.1. Pairs won: (0.9, 0.8), (0.9, 0.1), (0.3, 0.1).
    np.testing.assert_allclose(det.auroc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]), 0.75)
    np.testing.assert_allclose(det.auroc([0.5, 0.5, 0.2], [1, 0, 0]), 0.75)  # a tie counts half
    assert np.isnan(det.auroc([0.1, 0.2], [1, 1]))
    assert np.isnan(det.auroc([0.1, 0.2], [0, 0]))


def test_precision_at_without_ties(det):
    score, wrong = [4.0, 3.0, 2.0, 1.0], [1, 0, 1, 0]
    np.testing.assert_allclose(det.precision_at(score, wrong, 1), 1.0)
    np.testing.assert_allclose(det.precision_at(score, wrong, 2), 0.5)
    np.testing.assert_allclose(det.precision_at(score, wrong, 3), 2 / 3)
    assert np.isnan(det.precision_at(score, wrong, 0))


def test_precision_at_ties_hand_worked(det):
    # Three tied at the top with one wrong label, two places: 2 · 1/3 wrong expected of 2.
    np.testing.assert_allclose(det.precision_at([1, 1, 1, 0], [1, 0, 0, 1], 2), 1 / 3)
    # One above the tie (wrong), then two tied (one wrong) for one place: (1 + 1/2) / 2.
    np.testing.assert_allclose(det.precision_at([2, 1, 1, 0], [1, 1, 0, 0], 2), 0.75)


def brute_precision_at(score, wrong, n):
    """The mean, over every order of the tied examples, of the wrong fraction of the top n."""
    score, wrong = np.asarray(score), np.asarray(wrong, bool)
    values = []
    for perm in itertools.permutations(range(len(score))):
        perm = np.array(perm)
        # Highest score first; among equal scores, the permutation's order.
        order = perm[np.lexsort((np.arange(len(score)), -score[perm]))]
        values.append(wrong[order[:n]].mean())
    return float(np.mean(values))


def test_precision_at_matches_brute_force(det):
    rng = np.random.default_rng(3)
    for _ in range(20):
        score = rng.integers(0, 3, size=5).astype(float)
        wrong = rng.integers(0, 2, size=5)
        for n in range(1, 6):
            np.testing.assert_allclose(det.precision_at(score, wrong, n),
                                       brute_precision_at(score, wrong, n), atol=1e-12)


def test_flagged_precision_recall_matches_sklearn(det):
    rng = np.random.default_rng(0)
    flagged, wrong = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    precision, recall = det.flagged_precision_recall(flagged, wrong)
    np.testing.assert_allclose(precision, precision_score(wrong, flagged))
    np.testing.assert_allclose(recall, recall_score(wrong, flagged))
    nothing = det.flagged_precision_recall([0, 0], [1, 0])
    assert np.isnan(nothing[0]) and nothing[1] == 0.0
    assert np.isnan(det.flagged_precision_recall([1, 0], [0, 0])[1])


def test_scores_hand_worked(det):
    audit = {"issue_score": np.array([0.9, 0.2, 0.0]), "eta": np.array([1.0, 0.5, 0.0]),
             "psi": np.array([0.2, 0.9, 1.0]), "q_observed": np.array([0.25, 0.8, 1.0])}
    s = det.scores(audit)
    np.testing.assert_allclose(s["audit"], [0.9, 0.2, 0.0])
    np.testing.assert_allclose(s["eta"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(s["one_minus_q"], [0.75, 0.2, 0.0])
    np.testing.assert_allclose(s["one_minus_psi"], [0.8, 0.1, 0.0])
    assert set(s) | {"cleanlab", "eta_literal"} == set(det.DETECTORS)


def test_evaluate(det):
    row = det.evaluate(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0]),
                       np.array([1, 0, 1, 0]), cost=12.0)
    np.testing.assert_allclose([row["auroc"], row["precision_at_n_wrong"], row["flagged_precision"],
                                row["flagged_recall"], row["cost_seconds"]],
                               [0.75, 0.5, 0.5, 0.5, 12.0])
    unflagged = det.evaluate(np.array([0.9, 0.1]), None, np.array([1, 0]), cost=1.0)
    assert np.isnan(unflagged["flagged_precision"]) and np.isnan(unflagged["flagged_recall"])


def test_mean_std_skips_undefined(det):
    np.testing.assert_allclose(det.mean_std([1.0, 2.0, float("nan"), None, 4.0]),
                               (np.mean([1, 2, 4]), np.std([1, 2, 4])))
    assert det.mean_std([float("nan")]) is None


def test_table(det):
    def seed(auroc):
        row = {"auroc": auroc, "precision_at_n_wrong": 0.5, "flagged_precision": float("nan"),
               "flagged_recall": 0.25, "cost_seconds": 30.0}
        return {"n": 10, "n_wrong": 4, "detectors": {name: row for name in det.DETECTORS}}
    text = det.table({"kmeans": {0: seed(0.7), 1: seed(0.8)}, "ccn0.4": {0: seed(0.9)}})
    lines = text.splitlines()
    assert len(lines) == 2 + len(det.DETECTORS) + 1
    assert lines[0].startswith("| detector | kmeans: AUROC |")
    eta_row = lines[2].split(" | ")
    assert eta_row[1:6] == ["0.750 ± 0.050", "0.500 ± 0.000", "–", "0.250 ± 0.000", "30 ± 0"]
    assert lines[-1].split(" | ") == ["| (wrong labels among the trained rows)", "0.400 ± 0.000",
                                      "", "", "", "", "0.400 ± 0.000", "", "", "", " |"]


def test_read_audit_keeps_the_trained_rows_in_index_order(det, tmp_path):
    # What a run writes (idn_tf.audit): trained rows, validation rows (no η, ψ, q) and
    # test rows whose index counts the test split: only the trained rows, by index.
    from idn_tf import audit
    q = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    held_out = np.array([[0.8, 0.2], [0.1, 0.9], [0.5, 0.5], [0.3, 0.7], [0.4, 0.6]])
    labels, clean = np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 0, -1])
    columns = audit.audit_columns(q, np.array([0.1, 0.8, 0.3]), np.array([0.7, 0.2, 0.5]),
                                  labels, clean, held_out, rows=np.array([9, 2, 5, 3, 2]),
                                  split=np.array(["train"] * 3 + ["validation", "test"]))
    (tmp_path / "label_audit.csv").write_text(audit.csv_text(columns))
    read = det.read_audit(str(tmp_path))
    np.testing.assert_array_equal(read["index"], [2, 5, 9])
    np.testing.assert_array_equal(read["observed"], [0, 1, 0])
    np.testing.assert_array_equal(read["true"], [1, 1, 0])
    np.testing.assert_allclose(read["eta"], [0.8, 0.3, 0.1])
    np.testing.assert_allclose(read["issue_score"], [0.9, 0.5, 0.2])
    np.testing.assert_allclose(read["q_observed"], [0.3, 0.4, 0.9])
