"""Run summary: label-correction statistics, results.json content, the final table."""

import numpy as np
from sklearn.metrics import roc_auc_score


def label_correction(q, labels, clean_labels):
    """How argmax q compares with the clean labels, on examples whose clean label is known.

    Returns a dict with
      wrong_labels_corrected: among examples with labels != clean_labels, the
        fraction whose argmax q equals the clean label;
      right_labels_kept: among examples with labels == clean_labels, the
        fraction whose argmax q keeps the label;
    both NaN when undefined.
    """
    known = clean_labels >= 0
    estimated = np.argmax(q, axis=1)
    wrong = known & (labels != clean_labels)
    right = known & (labels == clean_labels)
    return {
        "wrong_labels_corrected": _mean(estimated[wrong] == clean_labels[wrong]),
        "right_labels_kept": _mean(estimated[right] == labels[right]),
    }


def ranking(q, eta, labels):
    """Example indices by η, highest first; among equal η (many reach exactly 1), by q of
    the observed label, lowest first; then by index. The highest-η images of the
    monitoring and of plots/highest_eta.png (the label audit has its own order,
    `audit.issue_order`)."""
    q_observed = q[np.arange(len(labels)), labels]
    return np.lexsort((np.arange(len(labels)), q_observed, -np.asarray(eta)))


def auroc(score, labels, clean_labels):
    """AUROC of `score` [N] (higher: more suspect, e.g. η) as a detector of wrong labels,
    on the examples with a known clean label (NaN without both kinds)."""
    known = clean_labels >= 0
    is_wrong = labels[known] != clean_labels[known]
    if is_wrong.all() or not is_wrong.any():
        return float("nan")
    return float(roc_auc_score(is_wrong, np.asarray(score)[known]))


def _mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


def _common(config, noise_rate_actual):
    """The keys every results.json has (`noise_rate` only for the noises that read it)."""
    return {
        "dataset": config.dataset,
        "noise": config.noise,
        **({"noise_rate": config.noise_rate} if config.uses_noise_rate() else {}),
        "noise_rate_actual": noise_rate_actual,
        "seed": config.seed,
        "epochs": config.epochs,
        "method": config.method,
    }


def selection(prefix, result):
    """A stage's three test accuracies and its selected epoch, as results.json keys:

      <prefix>_test_accuracy            the last epoch's (set by the callers)
      <prefix>_test_accuracy_selected   the classifier of the epoch chosen on the
                                        validation split (None without one): quote this
      <prefix>_test_accuracy_best       the highest over the evaluated epochs: optimistic
                                        (chosen on the test set; the paper's Table 3)
      <prefix>_validation_accuracy      the selected epoch's validation accuracy
      selected_epoch / <prefix>_selected_epoch   that epoch (1-based; the method's has
                                        no prefix)
    `result` None (the stage did not run): no keys.
    """
    if result is None:
        return {}
    chosen = result.selection or {}
    epoch = "selected_epoch" if prefix == "method" else f"{prefix}_selected_epoch"
    return {f"{prefix}_test_accuracy_selected": chosen.get("test_accuracy"),
            f"{prefix}_test_accuracy_best": result.best_test_accuracy,
            f"{prefix}_validation_accuracy": chosen.get("validation_accuracy"),
            epoch: chosen.get("epoch")}


def baseline_results(config, noise_rate_actual, ce, result, extra=None):
    """results.json of a baseline (a method without η): `method_test_accuracy` is the
    baseline's (for ce, stage 1's); `ce` is None when stage 1 did not run; `extra`: the
    method's own values (Co-teaching's τ, the soft labels' rates)."""
    res = {
        **_common(config, noise_rate_actual),
        "ce_test_accuracy": None if ce is None else ce.test_accuracy,
        "method_test_accuracy": result.test_accuracy,
        **selection("ce", ce), **selection("method", result),
        "ce_history": None if ce is None else ce.history,
        "method_history": result.history,
        "ce_monitor": None if ce is None else ce.monitor,
        "method_monitor": result.monitor,
    }
    res.update(extra or {})
    return res


def results(config, noise_rate_actual, ce, idn, q, eta, labels, clean_labels):
    """The content of results.json (accuracies and rates as fractions in [0, 1])."""
    return {
        **_common(config, noise_rate_actual),
        "ce_test_accuracy": ce.test_accuracy,
        "method_test_accuracy": idn.test_accuracy,
        **selection("ce", ce), **selection("method", idn),
        "eta_mean": float(np.mean(eta)),
        "eta_above_half": float(np.mean(eta > 0.5)),
        "eta_auroc": auroc(eta, labels, clean_labels),
        **label_correction(q, labels, clean_labels),
        "ce_history": ce.history,
        "method_history": idn.history,
        "ce_monitor": ce.monitor,
        "method_monitor": idn.monitor,
    }


def table(res, method):
    """The closing table printed at the end of a run (rows a run has no value for, None or
    NaN, are left out). `method`: the run's `methods.Method` (its `row` names its test accuracy, its
    `short` or `name` the fine-tuning row, its `rows` its own results)."""

    def pct(x):
        return f"{100 * x:6.2f}%"

    def accuracies(name, prefix):
        """The last epoch's, then the epoch chosen on validation and the best on test."""
        epoch = res.get("selected_epoch" if prefix == "method" else f"{prefix}_selected_epoch")
        return [(name, res.get(f"{prefix}_test_accuracy")),
                (f"  at epoch {epoch}, chosen on validation", res.get(f"{prefix}_test_accuracy_selected")),
                ("  at its best epoch on test (optimistic)", res.get(f"{prefix}_test_accuracy_best"))]

    rows = [
        ("actual noise rate (wrong training labels)", res["noise_rate_actual"]),
        *accuracies("CE test accuracy (stage 1)", "ce"),
        *(accuracies(method.row, "method") if method.final_stage() != "stage1" else []),
        *accuracies(f"{method.short or method.name} + clean fine-tuning test accuracy",
                    "finetuned"),
        *((name, res.get(key)) for name, key in method.rows),
        ("wrong training labels corrected by argmax q", res.get("wrong_labels_corrected")),
        ("right training labels kept by argmax q", res.get("right_labels_kept")),
        ("AUROC of the audit's issue_score (wrong labels)", res.get("issue_score_auroc")),
        ("AUROC of η as wrong-label detector", res.get("eta_auroc")),
        ("flagged labels that are wrong (precision)", res.get("label_issue_precision")),
        ("wrong labels flagged (recall)", res.get("label_issue_recall")),
    ]
    # A row without a value (None) or whose value the run cannot know (NaN: e.g. the clean
    # labels of one's own photos are unknown) is left out.
    rows = [(name, value) for name, value in rows if value is not None and value == value]
    width = max(len(name) for name, _ in rows)
    title = (f"{res['dataset']} / {res['noise']} noise / {method.name} / seed {res['seed']} / "
             f"{res['epochs']} epochs")
    lines = [title, "-" * (width + 9)]
    lines += [f"{name:<{width}}  {pct(value)}" for name, value in rows]
    if (res.get("export_guard") or {}).get("worse"):
        lines.append(res["export_guard_message"])
    return "\n".join(lines)
