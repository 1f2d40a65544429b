"""Benchmark: the method's label-error detection against cleanlab's, on digits (issue 19).

    pip install -e '.[bench]'                    # cleanlab, for this benchmark only
    python benchmarks/detection.py               # 5 seeds × {k-means IDN, CCN 0.4}, ~70 min on 2 cores
    python benchmarks/detection.py --seeds=0 --noises=ccn0.4 --out=/tmp/det

For each noise and seed, in <out>/<noise>/seed<s>/:

1. `idn/`: `python -m idn_tf.train --dataset=digits` with the method's defaults (its wall
   clock timed into `idn_wall_seconds.json`). Its η, ψ, label audit and noisy labels
   are what the method's detectors read.
2. `cleanlab/`: K = 5 out-of-sample predicted probabilities of the same classifier trained
   the same way as the method's stage 1 (plain CE, the run's flags.txt with --method=ce),
   on the run's own noisy labels. The folds split the rows the method trained on,
   stratified by the observed label (scikit-learn's StratifiedKFold, shuffled with seed 0);
   every fold validates on the run's noisy validation split, as stage 1 does, and its
   probabilities are the last epoch's classifier's, as ψ is. One process per cell
   (`--folds=<run_dir>`), timed like the method's run (`cleanlab_wall_seconds.json`).
3. `idn-<variant>/`: the method again with one flag of ours changed (`VARIANTS`), on the
   same noisy labels (noisy_labels.npz copied in).
4. The detectors (`DETECTORS`: the paper's η, scores of ours built from the run's q, ψ and
   stage-1 classifier, the variants' η, cleanlab), scored on the trained rows (the held-out
   validation rows have no η) against
   the clean labels: AUROC (wrong label = positive), precision at the number of wrong labels,
   precision and recall of each detector's flagged set, and the training cost.

Prints a markdown table (detectors × noises, mean ± std over the seeds) and writes every
per-seed number to <out>/detection.json. A rerun skips the trainings already done (a
training counts as done once its *_wall_seconds.json is written).
The metric functions at the top import neither cleanlab nor TensorFlow (tests/test_detection_bench.py).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

NOISES = {"kmeans": ["--noise=kmeans"], "ccn0.4": ["--noise=ccn", "--noise_rate=0.4"]}
K_FOLDS = 5
FOLD_SEED = 0
# Flags every training here gets on top of the digits recipe (as the other digits benchmarks).
COMMON_FLAGS = ["--verbose=0", "--monitor_every=1000"]

# Options of ours, each a second run of the method with one flag changed, on the paper run's
# noisy labels (its noisy_labels.npz copied in): the row's name, its title, the flags. Both
# come from docs/method.md §7.1 (η = 0 locks a wrong label in as trusted; Eq. 11 is the exact
# gradient only at ψ = 1), not from this benchmark's figures.
VARIANTS = {
    "eta_min": ("η, --eta_min=1e-3 (ours)", ["--eta_min=1e-3"]),
    "eta_exact": ("η, --eta_rule=exact (ours)", ["--eta_rule=exact"]),
}
# Detector -> its title; the table's rows in order.
DETECTORS = {
    "eta": "η (paper's score)",
    "audit_order": "η, ties by lowest q of the observed label (label_audit.csv order)",
    **{name: title for name, (title, _) in VARIANTS.items()},
    "eta_times_q": "η · (1 − q of the observed label) (ours)",
    "one_minus_q": "1 − q of the observed label (ours)",
    "one_minus_psi": "1 − ψ (stage 1's last epoch, in-sample)",
    "one_minus_p_selected": "1 − p(observed) of stage 1's epoch chosen on validation (ours)",
    "cleanlab": "cleanlab: 1 − label quality, K-fold",
}
METRICS = ("auroc", "precision_at_n_wrong", "flagged_precision", "flagged_recall",
           "cost_seconds")


# ---------------------------------------------------------------------------------------
# Metrics: pure functions of numpy arrays

def auroc(score, is_wrong):
    """AUROC of `score` [N] (higher = more suspect) for `is_wrong` [N] (bool); ties count
    half (sklearn's roc_auc_score). NaN without both kinds of label."""
    is_wrong = np.asarray(is_wrong, bool)
    if is_wrong.all() or not is_wrong.any():
        return float("nan")
    return float(roc_auc_score(is_wrong, score))


def precision_at(score, is_wrong, n):
    """Expected fraction of wrong labels among the `n` highest scores, ties broken at random.

    The examples scored strictly above the n-th highest score all count; of the block tied
    with it, the places left (n − the count above) are filled in proportion to the block's
    wrong labels. NaN for n = 0.
    """
    score, is_wrong = np.asarray(score, float), np.asarray(is_wrong, bool)
    if n <= 0:
        return float("nan")
    cut = np.sort(score)[::-1][n - 1]
    above, tied = score > cut, score == cut
    left = n - int(above.sum())
    return float((is_wrong[above].sum() + left * is_wrong[tied].mean()) / n)


def flagged_precision_recall(flagged, is_wrong):
    """(precision, recall) of the flagged set: the wrong fraction of the flagged examples,
    the flagged fraction of the wrong ones; NaN where undefined."""
    flagged, is_wrong = np.asarray(flagged, bool), np.asarray(is_wrong, bool)
    hits = float(np.sum(flagged & is_wrong))
    precision = hits / flagged.sum() if flagged.any() else float("nan")
    recall = hits / is_wrong.sum() if is_wrong.any() else float("nan")
    return float(precision), float(recall)


def order_score(order):
    """A score without ties that ranks as `order` (example indices, most suspect first)."""
    score = np.empty(len(order))
    score[np.asarray(order)] = -np.arange(len(order), dtype=float)
    return score


def scores(eta, psi, q_observed, labels, order):
    """Each ranking detector's score [N] but cleanlab's (higher = more suspect).

    `order`: the label audit's order (`report.ranking`); `q_observed` [N]: q_i of the
    observed label (Eq. 8).
    """
    return {"eta": np.asarray(eta, float),
            "audit_order": order_score(order),
            "eta_times_q": np.asarray(eta, float) * (1.0 - q_observed),
            "one_minus_q": 1.0 - np.asarray(q_observed, float),
            "one_minus_psi": 1.0 - np.asarray(psi, float)}


def evaluate(score, flagged, is_wrong, cost):
    """One detector's row on one seed (flagged None: it flags nothing of its own)."""
    precision, recall = (float("nan"), float("nan")) if flagged is None else \
        flagged_precision_recall(flagged, is_wrong)
    return {"auroc": auroc(score, is_wrong),
            "precision_at_n_wrong": precision_at(score, is_wrong, int(np.sum(is_wrong))),
            "flagged_precision": precision, "flagged_recall": recall,
            "cost_seconds": cost}


def mean_std(values):
    """(mean, std with ddof 0) over the finite values, or None when there are none."""
    values = np.asarray([v for v in values if v is not None and v == v], float)
    return None if not len(values) else (float(values.mean()), float(values.std()))


def _cell(values, metric):
    stats = mean_std(values)
    if stats is None:
        return "–"
    if metric == "cost_seconds":
        return f"{stats[0]:.0f} ± {stats[1]:.0f}"
    return f"{stats[0]:.3f} ± {stats[1]:.3f}"


def table(results):
    """Markdown: one row per detector, per noise its metrics' mean ± std over the seeds.

    `results`: noise -> seed -> {"detectors": detector -> metrics, ...}."""
    heads = {"auroc": "AUROC", "precision_at_n_wrong": "P@n_wrong",
             "flagged_precision": "flagged P", "flagged_recall": "flagged R",
             "cost_seconds": "cost (s)"}
    noises = list(results)
    lines = ["| detector | " + " | ".join(f"{n}: {heads[m]}" for n in noises for m in METRICS)
             + " |", "|---|" + "---|" * (len(noises) * len(METRICS))]
    for name, title in DETECTORS.items():
        cells = [_cell([seed["detectors"][name][m] for seed in results[n].values()], m)
                 for n in noises for m in METRICS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    wrong = [_cell([seed["n_wrong"] / seed["n"] for seed in results[n].values()], "")
             for n in noises]
    lines.append("| (wrong labels among the trained rows) | " + " | ".join(
        " | ".join([w] + [""] * (len(METRICS) - 1)) for w in wrong) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Trainings (TensorFlow imported only here)

def timed(command, seconds_path):
    """Runs `command` unless `seconds_path` exists; returns its wall time (s), saved there."""
    if not os.path.isfile(seconds_path):
        print(" ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        with open(seconds_path, "w") as f:
            json.dump({"wall_seconds": time.perf_counter() - start}, f)
    with open(seconds_path) as f:
        return json.load(f)["wall_seconds"]


def trained_rows(run_dir):
    """(the trained rows' observed labels, their clean labels, the held-out rows)."""
    from idn_tf.data import holdout
    with np.load(os.path.join(run_dir, "noisy_labels.npz")) as saved:
        labels, clean, held = saved["labels"], saved["clean_labels"], saved["validation_rows"]
    keep = holdout.training_rows(len(labels), held)
    return labels[keep], clean[keep], held


def run_config(run_dir, method, new_run_dir):
    """The Config of the run in `run_dir` (its flags.txt) with another method and folder."""
    from idn_tf import flagdefs
    flagdefs.FLAGS.unparse_flags()  # a second cell's parse starts from the defaults
    flagdefs.FLAGS([sys.argv[0], f"--flagfile={os.path.join(run_dir, 'flags.txt')}",
                    f"--method={method}", f"--run_dir={new_run_dir}"])
    return flagdefs.config_from_flags()


def fold_probabilities(run_dir, out_dir):
    """--folds: the K-fold out-of-sample probabilities [N, K] of the trained rows, by CE
    trained as the run's stage 1, into <out_dir>/pred_probs.npy."""
    import dataclasses
    import shutil

    from sklearn.model_selection import StratifiedKFold

    from idn_tf import cli, inputs, model, stages
    from idn_tf.data import views
    from idn_tf.data.dataset import Split
    cli.quiet_logging()
    config = run_config(run_dir, "ce", os.path.join(out_dir, "fold"))
    data = inputs.load_data(config)
    with np.load(os.path.join(run_dir, "noisy_labels.npz")) as saved:
        labels, held = saved["labels"], saved["validation_rows"]
    data, labels = inputs.split_validation(data, labels, held)
    probs = np.zeros((len(labels), data.num_classes), np.float32)
    folds = StratifiedKFold(K_FOLDS, shuffle=True, random_state=FOLD_SEED)
    train = data.train
    for k, (fit_rows, out_rows) in enumerate(folds.split(np.zeros(len(labels)), labels)):
        fold_dir = os.path.join(out_dir, f"fold{k}")
        part = Split(train.images[fit_rows], train.labels[fit_rows], train.clean_labels[fit_rows])
        view = views.ArrayData(dataclasses.replace(data.dataset, train=part), data.augment,
                               data.padding, validation=data.validation, rows=data.rows[fit_rows])
        classifier, _ = stages.train_cross_entropy(dataclasses.replace(config, run_dir=fold_dir),
                                                   view, labels[fit_rows])
        probs[out_rows] = np.exp(model.example_log_probs(classifier, train.images[out_rows],
                                                         config.batch_size))
        print(f"fold {k}: trained on {len(fit_rows)}, predicted {len(out_rows)}", flush=True)
        shutil.rmtree(fold_dir)  # its backup and TensorBoard logs
    np.save(os.path.join(out_dir, "pred_probs.npy"), probs)


def run_predictions(run_dir):
    """From the run's saved classifiers: q [N, K] (Eq. 8, the final classifier with the
    final η and ψ, as `python -m idn_tf.audit` rebuilds it) and the probability of the
    observed label [N] by stage 1's classifier of the epoch chosen on validation."""
    from idn_tf import callbacks, inputs, model, stages
    config = run_config(run_dir, "idn", run_dir)
    data = inputs.load_data(config)
    with np.load(os.path.join(run_dir, "noisy_labels.npz")) as saved:
        labels, held = saved["labels"], saved["validation_rows"]
    data, labels = inputs.split_validation(data, labels, held)
    eta = np.load(os.path.join(run_dir, "eta.npy"))[:len(labels)]
    psi = np.load(os.path.join(run_dir, "psi.npy"))
    classifier = stages.new_classifier(config, data)
    classifier.load_weights(os.path.join(run_dir, "classifier.weights.h5"))
    q = stages.posterior_table(classifier, data, labels, eta, psi, config.batch_size,
                               config.eta_numerics)
    classifier.set_weights(callbacks.load_weights_list(os.path.join(run_dir, "stage1.selected.npz")))
    log_probs = model.example_log_probs(classifier, data, config.batch_size)
    return q, np.exp(log_probs[np.arange(len(labels)), labels])


def cleanlab_detect(labels, pred_probs):
    """(1 − get_label_quality_scores, find_label_issues' flags, seconds) at cleanlab's
    defaults: self-confidence scores, filter_by='prune_by_noise_rate'."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    start = time.perf_counter()
    quality = get_label_quality_scores(labels, pred_probs)
    flagged = find_label_issues(labels, pred_probs)
    return 1.0 - quality, flagged, time.perf_counter() - start


def method_command(noise, seed, run_dir, extra=()):
    return [sys.executable, "-m", "idn_tf.train", "--dataset=digits", *NOISES[noise],
            f"--seed={seed}", f"--run_dir={run_dir}", *COMMON_FLAGS, *extra]


def variant(folder, noise, seed, name, extra, labels):
    """(η, the argmax-q flags, the wall time) of the method run with `extra` flags, on
    the labels of the paper run in <folder>/idn."""
    import shutil
    run_dir = os.path.join(folder, f"idn-{name}")
    os.makedirs(run_dir, exist_ok=True)
    given = os.path.join(folder, "idn", "noisy_labels.npz")
    if not os.path.isfile(os.path.join(run_dir, "noisy_labels.npz")):
        shutil.copyfile(given, os.path.join(run_dir, "noisy_labels.npz"))
    cost = timed(method_command(noise, seed, run_dir, extra),
                 os.path.join(folder, f"idn-{name}_wall_seconds.json"))
    same, _, _ = trained_rows(run_dir)
    assert np.array_equal(same, labels), f"{run_dir} trained on other labels"
    q, _ = run_predictions(run_dir)
    eta = np.load(os.path.join(run_dir, "eta.npy"))[:len(labels)]
    return eta, np.argmax(q, axis=1) != labels, cost


def cell(folder, noise, seed):
    """Trains (or reuses) one noise × seed and returns its detectors' metrics."""
    import csv

    from idn_tf import report
    run_dir = os.path.join(folder, "idn")
    os.makedirs(run_dir, exist_ok=True)
    method_cost = timed(method_command(noise, seed, run_dir),
                        os.path.join(folder, "idn_wall_seconds.json"))
    clean_dir = os.path.join(folder, "cleanlab")
    os.makedirs(clean_dir, exist_ok=True)
    fold_cost = timed([sys.executable, os.path.abspath(__file__), f"--folds={run_dir}",
                       f"--fold_out={clean_dir}"], os.path.join(folder, "cleanlab_wall_seconds.json"))
    labels, clean, _ = trained_rows(run_dir)
    is_wrong = labels != clean
    eta = np.load(os.path.join(run_dir, "eta.npy"))[:len(labels)]
    psi = np.load(os.path.join(run_dir, "psi.npy"))
    q, p_selected = run_predictions(run_dir)
    q_observed = q[np.arange(len(labels)), labels]
    flagged_q = np.argmax(q, axis=1) != labels
    with open(os.path.join(run_dir, "label_audit.csv")) as f:
        audit_flags = sum(int(row["is_label_issue"]) for row in csv.DictReader(f))
    assert audit_flags == flagged_q.sum(), "the rebuilt q disagrees with label_audit.csv"
    score = scores(eta, psi, q_observed, labels, report.ranking(q, eta, labels))
    score["one_minus_p_selected"] = 1.0 - p_selected
    score["cleanlab"], flagged_cl, cl_seconds = cleanlab_detect(
        labels, np.load(os.path.join(clean_dir, "pred_probs.npy")))
    flags = {"eta": flagged_q, "audit_order": flagged_q, "cleanlab": flagged_cl}
    costs = {"cleanlab": fold_cost + cl_seconds}
    for name, (_, extra) in VARIANTS.items():
        score[name], flags[name], costs[name] = variant(folder, noise, seed, name, extra, labels)
    detectors = {name: evaluate(score[name], flags.get(name), is_wrong,
                                costs.get(name, method_cost)) for name in DETECTORS}
    return {"n": int(len(labels)), "n_wrong": int(is_wrong.sum()),
            "n_flagged": {"method": int(flagged_q.sum()), "cleanlab": int(flagged_cl.sum())},
            "cleanlab_seconds": cl_seconds, "detectors": detectors}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--out", default="benchmark-runs/detection")
    parser.add_argument("--folds", default="", help=argparse.SUPPRESS)  # one cell's K folds
    parser.add_argument("--fold_out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folds:
        return fold_probabilities(args.folds, args.fold_out)
    results = {}
    for noise in args.noises.split(","):
        results[noise] = {}
        for seed in (int(s) for s in args.seeds.split(",")):
            results[noise][seed] = cell(os.path.join(args.out, noise, f"seed{seed}"), noise, seed)
            print(f"{noise} seed {seed}: " + ", ".join(
                f"{n} {d['auroc']:.3f}" for n, d in results[noise][seed]["detectors"].items()),
                flush=True)
    with open(os.path.join(args.out, "detection.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    return None


if __name__ == "__main__":
    main()
