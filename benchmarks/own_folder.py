"""Benchmark: a new user's own photos, end to end (issue 29).

    python benchmarks/own_folder.py                       # 5 seeds, ~40 min on 2 cores
    python benchmarks/own_folder.py --seeds=0 --out=/tmp/own

The case a new user lives: a class folder of 400 digits images upscaled to 32×32 RGB PNGs
in ten folders "zero" … "nine", 60 of them (15%) saved under a uniformly chosen wrong
class (`detection.make_folder`; each file's name keeps its true class), trained with
docs/own_data.md's small offline command (`detection.FOLDER_FLAGS`), once with the default
method and once with `--method=ce`, each exporting its SavedModel as the docs say.

For each seed, in <out>/seed<s>/: photos/, idn/ and ce/ (run folders), export/ (both
SavedModels). Figures:

- the exported models' accuracy on the folder's test images against their **true**
  classes (the SavedModel loaded with `tf.saved_model.load`, fed the decoded files as a
  client would); the runs' own test figures are against the folder's labels, 15% wrong;
- the method's selected and last epochs (folder labels) and which classifier it exported;
- the audit: how many of the 400 images have a row in label_audit.csv, its AUROC for the
  wrong labels (issue_score) and how many wrong labels are among its top n (n = the
  number of wrong labels among the audited rows).

Prints a markdown table (mean ± std over the seeds, and per seed) and writes the numbers
to <out>/own_folder.json. A rerun reuses finished runs (an idn_tf run folder restarts).
"""

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

import detection

METHODS = ("idn", "ce")
FIGURES = {
    "ce_exported": "CE, exported model, test (true classes)",
    "idn_exported": "method, exported model, test (true classes)",
    "idn_selected": "method, selected epoch, test (folder labels)",
    "idn_last": "method, last epoch, test (folder labels)",
    "ce_selected": "CE, selected epoch, test (folder labels)",
    "audited": "images with an audit row (of 400)",
    "audit_auroc": "audit AUROC (issue_score, wrong labels)",
    "audit_top": "wrong labels in the audit's top n (fraction of n)",
}


def true_class(path):
    """The class a file of `detection.make_folder` really shows (its name's _true<d>)."""
    return int(os.path.basename(path).rsplit("_true", 1)[1].split(".")[0])


def run(cell, seed, method):
    """`python -m idn_tf.train` with the documented small command; returns results.json."""
    run_dir = os.path.join(cell, method)
    results = os.path.join(run_dir, "results.json")
    if not os.path.isfile(results):
        command = [sys.executable, "-m", "idn_tf.train", *detection.FOLDER_FLAGS,
                   f"--data_dir={os.path.join(cell, 'photos')}", f"--seed={seed}",
                   f"--method={method}", f"--run_dir={run_dir}", "--verbose=0",
                   f"--export_dir={os.path.join(cell, 'export')}", f"--model_name={method}"]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    with open(results) as f:
        return json.load(f)


def served_accuracy(saved_model, paths):
    """Accuracy of the SavedModel at `saved_model` on the image files `paths` against their
    true classes, as a client calls it (decoded uint8 images, one request per size)."""
    import tensorflow as tf
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    right = 0
    for path in paths:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        predicted = int(serve(images=image[None])["classes"].numpy()[0])
        right += predicted == CLASS_INDEX[detection.CLASS_NAMES[true_class(path)]]
    return right / len(paths)


# The label a run gives each class name: folders sorted as Python sorts strings.
CLASS_INDEX = {name: k for k, name in enumerate(sorted(detection.CLASS_NAMES))}


def audit_figures(run_dir, total):
    """(audited fraction of `total`, AUROC, fraction of wrong labels in the top n)."""
    with open(os.path.join(run_dir, "label_audit.csv")) as f:
        rows = list(csv.DictReader(f))
    score = np.array([float(r["issue_score"]) for r in rows])
    wrong = np.array([CLASS_INDEX[detection.CLASS_NAMES[true_class(r["path"])]]
                      != int(r["observed_label"]) for r in rows])
    top = np.argsort(-score, kind="stable")[:wrong.sum()]
    return len(rows) / total, detection.auroc(score, wrong), float(wrong[top].mean())


def cell(out, seed):
    folder = os.path.join(out, f"seed{seed}")
    photos = os.path.join(folder, "photos")
    detection.make_folder(photos, seed)
    results = {m: run(folder, seed, m) for m in METHODS}
    from idn_tf.data import folder as folder_lib
    test_paths = folder_lib.load_folder(photos, verbose=False).clean_test.paths
    figures = {}
    for m in METHODS:
        figures[f"{m}_exported"] = served_accuracy(results[m]["saved_model"], test_paths)
        figures[f"{m}_selected"] = results[m]["method_test_accuracy_selected"]
    figures["idn_last"] = results["idn"]["method_test_accuracy"]
    figures["audited"], figures["audit_auroc"], figures["audit_top"] = audit_figures(
        os.path.join(folder, "idn"), detection.FOLDER_IMAGES)
    figures["idn_exported_stage"] = results["idn"].get("exported_classifier", "")
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default="benchmark-runs/own-folder")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {s: cell(args.out, s) for s in seeds}
    with open(os.path.join(args.out, "own_folder.json"), "w") as f:
        json.dump(per_seed, f, indent=1)
    print(f"\n| figure | mean ± std | {' | '.join(f'seed {s}' for s in seeds)} |")
    print(f"|---|---|{'---|' * len(seeds)}")
    for key, title in FIGURES.items():
        values = [per_seed[s][key] for s in seeds]
        print(f"| {title} | {np.mean(values):.3f} ± {np.std(values):.3f} | "
              f"{' | '.join(f'{v:.3f}' for v in values)} |")
    print(f"| method's exported classifier | | "
          f"{' | '.join(per_seed[s]['idn_exported_stage'] or '-' for s in seeds)} |")


if __name__ == "__main__":
    main()
