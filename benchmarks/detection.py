"""Benchmark: the label audit's detection of wrong labels against cleanlab's (issues 19, 28).

    pip install -e '.[bench]'                    # cleanlab, for this benchmark only
    python benchmarks/detection.py               # 5 seeds × 4 noises, ~2 h on 2 cores
    python benchmarks/detection.py --seeds=0 --noises=folder15 --out=/tmp/det

The noises (`NOISES`): digits with k-means IDN, class-pair CCN 0.4 and symmetric 0.2 (the
digits recipe); and `folder15`, a class folder a new user might have: 400 digits images
(chosen by the seed) upscaled to 32×32 RGB PNGs in ten class folders "zero" … "nine", 60 of
them (15%) saved under a uniformly chosen wrong class, trained with docs/own_data.md's small
offline command (`FOLDER_FLAGS`). Each file's name keeps its true class.

For each noise and seed, in <out>/<noise>/seed<s>/:

1. `idn/`: `python -m idn_tf.train` with the defaults (its wall clock timed into
   `idn_wall_seconds.json`). Its label_audit.csv is the audit's score (issue_score: 1 − the
   held-out probability of the observed label, from --audit_folds=5 CE classifiers) and
   flags (is_label_issue: confident learning's Prune by Noise Rate on those
   probabilities), and holds η, ψ and q of the observed label.
2. `idn-literal/`: the method again with `--eta_numerics=literal` (and no audit folds), on
   the same labels and stage 1 (noisy_labels.npz and stage 1's files copied in): η as the
   equations read literally.
3. `cleanlab/`: 5 out-of-sample predicted probabilities of the same classifier trained as
   the method's stage 1 (CE, the run's flags.txt with --method=ce), on the run's own noisy
   labels: `stages.fold_probs` with 5 folds (stratified by the observed label, seeded by
   the run's seed), each fold's last epoch, as cleanlab's examples do: the same call as
   the audit's, trained again in its own process (`--folds=<run_dir>`, timed like the
   method's run), so the two rows differ only in the flags (and in what a second training
   of the same folds computes). `--audit_from_folds` scores the audit from these
   probabilities with the library's own functions instead of reading the run's
   label_audit.csv (for method runs made before the audit took its final form). Ranked by 1 −
   `cleanlab.rank.get_label_quality_scores` and flagged by `cleanlab.filter.find_label_issues`,
   both at their defaults.
4. Every detector scored on the trained rows (label_audit.csv's split train: the held-out
   validation rows and a folder's test rows have no η, and cleanlab's folds do not see them)
   against the true labels: AUROC (wrong label = positive), precision at the number of
   wrong labels, precision and recall of the flagged set, and the training cost.

Prints a markdown table (detectors × noises, mean ± std over the seeds) and writes every
per-seed number to <out>/detection.json. A rerun skips the trainings already done (a
training counts as done once its *_wall_seconds.json is written).
The metric functions at the top import neither cleanlab nor TensorFlow (tests/test_detection_bench.py).
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

NOISES = {"kmeans": ["--noise=kmeans"], "ccn0.4": ["--noise=ccn", "--noise_rate=0.4"],
          "symmetric0.2": ["--noise=symmetric", "--noise_rate=0.2"], "folder15": None}
# docs/own_data.md's small offline command, on the folder <cell>/photos.
FOLDER_FLAGS = ["--dataset=folder", "--arch=small_cnn", "--backbone_weights=none",
                "--image_size=64", "--resize=72", "--epochs=20"]
FOLDER_IMAGES, FOLDER_WRONG = 400, 60
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLEANLAB_FOLDS = 5
# Flags every training here gets on top of the recipe (as the other digits benchmarks).
COMMON_FLAGS = ["--verbose=0", "--monitor_every=1000", "--export_dir="]
LITERAL_FLAGS = ["--eta_numerics=literal", "--audit_folds=0"]
# Detector -> its title; the table's rows in order.
DETECTORS = {
    "audit": "label audit: 1 − held-out p of the observed label; flags by Prune by Noise Rate",
    "eta": "η (the authors' numerics, the default)",
    "eta_literal": "η, --eta_numerics=literal (the equations as printed)",
    "one_minus_q": "1 − q of the observed label (the method's posterior)",
    "one_minus_psi": "1 − ψ (stage 1's last epoch, in-sample)",
    "cleanlab": "cleanlab: 1 − label quality, 5-fold",
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


def scores(audit):
    """The method run's detectors' scores [N] (higher = more suspect) from its label
    audit's columns (`read_audit`, rows in index order)."""
    return {"audit": audit["issue_score"], "eta": audit["eta"],
            "one_minus_q": 1.0 - audit["q_observed"], "one_minus_psi": 1.0 - audit["psi"]}


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


def make_folder(root, seed):
    """The folder15 case in `root`: FOLDER_IMAGES digits images (the seed's choice) as
    32×32 RGB PNGs named <row>_true<class>.png, FOLDER_WRONG of them under a uniformly
    chosen wrong class's folder. Made once (a rerun reuses it)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    if os.path.isdir(root):
        return
    digits = load_digits()
    rng = np.random.default_rng([seed, 15])
    rows = rng.choice(len(digits.target), FOLDER_IMAGES, replace=False)
    wrong = set(rng.choice(FOLDER_IMAGES, FOLDER_WRONG, replace=False).tolist())
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name in CLASS_NAMES:
        os.makedirs(os.path.join(tmp, name))
    for i, row in enumerate(rows):
        true = int(digits.target[row])
        given = (true + int(rng.integers(1, 10))) % 10 if i in wrong else true
        pixels = (digits.images[row] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).convert("RGB")
        image.save(os.path.join(tmp, CLASS_NAMES[given], f"{row}_true{true}.png"))
    os.rename(tmp, root)


def train_command(noise, seed, folder, run_dir, extra=()):
    data = (["--dataset=digits", *NOISES[noise]] if NOISES[noise] is not None else
            [*FOLDER_FLAGS, f"--data_dir={os.path.join(folder, 'photos')}"])
    return [sys.executable, "-m", "idn_tf.train", *data, f"--seed={seed}",
            f"--run_dir={run_dir}", *COMMON_FLAGS, *extra]


def read_audit(run_dir):
    """label_audit.csv's columns (name -> array) of the trained rows (split train: the rows
    cleanlab's folds see, and the only ones with η), sorted by index, and the true labels
    (the clean_label column, or the folder's file names)."""
    with open(os.path.join(run_dir, "label_audit.csv")) as f:
        rows = sorted((r for r in csv.DictReader(f) if r.get("split", "train") == "train"),
                      key=lambda r: int(r["index"]))
    columns = {name: np.array([float(r[name]) for r in rows])
               for name in ("issue_score", "eta", "psi", "q_observed")}
    columns["index"] = np.array([int(r["index"]) for r in rows])
    columns["observed"] = np.array([int(r["observed_label"]) for r in rows])
    columns["flagged"] = np.array([r["is_label_issue"] == "1" for r in rows])
    if "path" in rows[0]:  # the class named by the file's digit, as the run numbers classes
        number = {r["observed_class"]: int(r["observed_label"]) for r in rows}
        columns["true"] = np.array([number[CLASS_NAMES[int(r["path"].rsplit("_true", 1)[1]
                                                              .split(".")[0])]] for r in rows])
    else:
        columns["true"] = np.array([int(r["clean_label"]) for r in rows])
    return columns


def run_config(run_dir, method, new_run_dir):
    """The Config of the run in `run_dir` (its flags.txt) with another method and folder."""
    from idn_tf import flagdefs
    flagdefs.FLAGS.unparse_flags()
    flagdefs.FLAGS([sys.argv[0], f"--flagfile={os.path.join(run_dir, 'flags.txt')}",
                    f"--method={method}", f"--run_dir={new_run_dir}"])
    return flagdefs.config_from_flags()


def fold_probabilities(run_dir, out_dir):
    """--folds: cleanlab's input, 5-fold out-of-sample probabilities [N, K] of the trained
    rows (in their order) by CE trained as the run's stage 1, each fold's last epoch, into
    <out_dir>/pred_probs.npy."""
    from idn_tf import cli, inputs, stages
    cli.quiet_logging()
    config = run_config(run_dir, "ce", os.path.join(out_dir, "fold"))
    data = inputs.load_data(config)
    with np.load(os.path.join(run_dir, "noisy_labels.npz")) as saved:
        labels, held = saved["labels"], saved["validation_rows"]
    data, labels = inputs.split_validation(data, labels, held)
    last = stages.fold_probs(config, data, labels, CLEANLAB_FOLDS, "cleanlab")
    shutil.rmtree(config.run_dir)  # the folds' backups and TensorBoard logs
    np.save(os.path.join(out_dir, "pred_probs.npy"), last)
    np.save(os.path.join(out_dir, "rows.npy"), data.rows)


def cleanlab_detect(labels, pred_probs):
    """(1 − get_label_quality_scores, find_label_issues' flags, seconds) at cleanlab's
    defaults: self-confidence scores, filter_by='prune_by_noise_rate'."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    start = time.perf_counter()
    quality = get_label_quality_scores(labels, pred_probs)
    flagged = find_label_issues(labels, pred_probs)
    return 1.0 - quality, flagged, time.perf_counter() - start


def audit_from_folds(audit, pred_probs):
    """The audit's score and flags computed from the 5-fold probabilities (`--audit_from_folds`):
    `audit.issue_scores` and `audit.flags`, as a run with --audit_folds=5 computes them."""
    from idn_tf import audit as audit_lib
    audit = dict(audit)
    audit["issue_score"] = audit_lib.issue_scores(pred_probs, audit["observed"])
    audit["flagged"] = audit_lib.flags(None, pred_probs, audit["observed"])
    return audit


def cell(folder, noise, seed, from_folds=False):
    """Trains (or reuses) one noise × seed and returns its detectors' metrics."""
    if NOISES[noise] is None:
        make_folder(os.path.join(folder, "photos"), seed)
    run_dir = os.path.join(folder, "idn")
    os.makedirs(run_dir, exist_ok=True)
    # --audit_from_folds: the audit comes from the cleanlab folds, so the run trains none.
    method_cost = timed(train_command(noise, seed, folder, run_dir,
                                      ["--audit_folds=0"] if from_folds else []),
                        os.path.join(folder, "idn_wall_seconds.json"))
    audit = read_audit(run_dir)
    labels, is_wrong = audit["observed"], audit["observed"] != audit["true"]
    literal_dir = os.path.join(folder, "idn-literal")
    os.makedirs(literal_dir, exist_ok=True)
    if not os.path.isfile(os.path.join(literal_dir, "noisy_labels.npz")):
        # The same labels, and stage 1 reused (as idn_tf.compare shares it): only stage 2
        # differs between the two runs.
        for name in ("noisy_labels.npz", "stage1.json", "psi.npy", "stage1.selected.npz"):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(literal_dir, name))
    literal_cost = timed(train_command(noise, seed, folder, literal_dir, LITERAL_FLAGS),
                         os.path.join(folder, "idn-literal_wall_seconds.json"))
    literal = read_audit(literal_dir)
    assert np.array_equal(literal["index"], audit["index"])
    assert np.array_equal(literal["observed"], labels), "the literal run trained on other labels"
    clean_dir = os.path.join(folder, "cleanlab")
    os.makedirs(clean_dir, exist_ok=True)
    fold_cost = timed([sys.executable, os.path.abspath(__file__), f"--folds={run_dir}",
                       f"--fold_out={clean_dir}"], os.path.join(folder, "cleanlab_wall_seconds.json"))
    assert np.array_equal(np.load(os.path.join(clean_dir, "rows.npy")), audit["index"])
    pred_probs = np.load(os.path.join(clean_dir, "pred_probs.npy"))
    if from_folds:
        audit = audit_from_folds(audit, pred_probs)
    score = scores(audit)
    score["eta_literal"] = literal["eta"]
    score["cleanlab"], flagged_cl, cl_seconds = cleanlab_detect(labels, pred_probs)
    flags = {"audit": audit["flagged"], "cleanlab": flagged_cl}
    costs = {"cleanlab": fold_cost + cl_seconds, "eta_literal": literal_cost}
    detectors = {name: evaluate(score[name], flags.get(name), is_wrong,
                                costs.get(name, method_cost)) for name in DETECTORS}
    return {"n": int(len(labels)), "n_wrong": int(is_wrong.sum()),
            "n_flagged": {"audit": int(audit["flagged"].sum()),
                          "cleanlab": int(flagged_cl.sum())},
            "cleanlab_seconds": cl_seconds, "detectors": detectors}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--out", default="benchmark-runs/detection")
    parser.add_argument("--folds", default="", help=argparse.SUPPRESS)  # one cell's K folds
    parser.add_argument("--fold_out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--audit_from_folds", action="store_true",
                        help="score the audit from the 5-fold probabilities (module docstring)")
    args = parser.parse_args()
    if args.folds:
        return fold_probabilities(args.folds, args.fold_out)
    results = {}
    for noise in args.noises.split(","):
        results[noise] = {}
        for seed in (int(s) for s in args.seeds.split(",")):
            results[noise][seed] = cell(os.path.join(args.out, noise, f"seed{seed}"), noise, seed,
                                        args.audit_from_folds)
            print(f"{noise} seed {seed}: " + ", ".join(
                f"{n} {d['auroc']:.3f}" for n, d in results[noise][seed]["detectors"].items()),
                flush=True)
            with open(os.path.join(args.out, "detection.json"), "w") as f:
                json.dump(results, f, indent=2)
    print(table(results))
    return None


if __name__ == "__main__":
    sys.exit(main())
