"""Benchmark: the method's options of issue 21 (docs/method.md §7.6), each alone and as the
preset, beside the paper's setting, CE and Tanaka; digits, 5 seeds × {k-means IDN, CCN 0.4}.

    python benchmarks/idn_plus.py                       # both noises, one after the other
    python benchmarks/idn_plus.py --noises=ccn0.4       # one noise (run two in parallel)
    python benchmarks/idn_plus.py --report              # the tables from the cells on disk

Every row is one `python -m idn_tf.compare` into <out>/<noise>/ (the same labels per seed;
stage 1 is trained once per seed and shared, `Comparison.siblings`): the paper's setting and
Tanaka, then one sweep per option. The report reads each cell's results.json and prints,
per row, the mean ± std over the seeds of the selected epoch's noisy validation accuracy
(what chooses) and test accuracy (what is quoted), the last epoch's test accuracy and the
CE baseline (stage 1's selected epoch); the η detection figures of every row (`detection`);
then the choice (`choice`): the one-standard-error rule on the paired validation gains over
the paper's setting, both noises pooled (the test set decides nothing).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

NOISES = {"kmeans": ["--noise=kmeans"], "ccn0.4": ["--noise=ccn", "--noise_rate=0.4"]}
# (key, sub-folder, compare arguments): the comparisons, in the order they run. The options
# alone share <out>/<noise>/; a combination (a flag given to every cell, then a sweep) has
# a sub-folder of its own, as its cells' names would be those of a single option's.
ROWS = (
    ("paper", "", ["--methods=idn,tanaka"]),  # the paper's setting (and CE, its stage 1), Tanaka
    ("psi", "", ["--methods=idn", "--sweep=psi_source=selected,crossval"]),
    ("q", "", ["--methods=idn", "--sweep=q_ensemble=0.5,0.7,0.9"]),
    ("lr", "", ["--methods=idn", "--sweep=stage2_lr_decay=late"]),
    ("eta_min", "", ["--methods=idn", "--sweep=eta_min=0.001"]),
    ("eta_rule", "", ["--methods=idn", "--sweep=eta_rule=exact"]),
    # Combinations of the options alone that raised validation accuracy on one noise.
    ("eta_min+q", "eta_min0.001", ["--methods=idn", "--eta_min=0.001",
                                    "--sweep=q_ensemble=0.5,0.9"]),
    ("crossval+eta_min", "psi_sourcecrossval", ["--methods=idn", "--psi_source=crossval",
                                                 "--sweep=eta_min=0.001"]),
)
# --preset=idn_plus is not a row: the rule below chose none of the options, so it is the
# paper's setting (config.PRESETS) and its cells would be the "idn" cells again. Once it sets
# something, ("preset", "", ["--methods=idn", "--sweep=preset=idn_plus"]) measures it.


def run(noise, seeds, out, rows):
    for key, sub, extra in ROWS:
        if rows and key not in rows:
            continue
        folder = os.path.join(out, noise, sub)
        command = [sys.executable, "-m", "idn_tf.compare", "--dataset=digits", *NOISES[noise],
                   f"--seeds={seeds}", f"--compare_dir={folder}", "--verbose=0",
                   "--monitor_every=1000", *extra]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)


def cells(folder, prefix=""):
    """{row name: {seed: results.json, with its folder as "run_dir"}} of every finished cell
    in `folder` and its combination sub-folders (rows "<sub-folder>+<row>")."""
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, "results.json")
        row, _, seed = name.rpartition("-")
        if os.path.isfile(path) and seed.isdigit():
            with open(path) as f:
                found.setdefault(prefix + row, {})[int(seed)] = dict(
                    json.load(f), run_dir=os.path.join(folder, name))
        elif not prefix and name in {sub for _, sub, _ in ROWS if sub}:
            found.update(cells(os.path.join(folder, name), prefix=name + "+"))
    return found


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


KEYS = (("validation (selected epoch)", "method_validation_accuracy"),
        ("test, selected", "method_test_accuracy_selected"),
        ("test, last", "method_test_accuracy"))


def load(out, noises):
    """{noise: `cells` of <out>/<noise>/} for the noises that have a folder: what every
    table reads."""
    return {n: cells(os.path.join(out, n)) for n in noises if os.path.isdir(os.path.join(out, n))}


def report(by_noise):
    names = sorted({r for found in by_noise.values() for r in found},
                   key=lambda r: (r != "idn", r != "tanaka", r))
    head = "| row | " + " | ".join(f"{n}: {k}" for n in by_noise for k, _ in KEYS) + " | seeds |"
    lines = [head, "|" + "---|" * (2 + len(KEYS) * len(by_noise))]
    ce = {n: [r.get("ce_test_accuracy_selected") for r in found.get("idn", {}).values()]
          for n, found in by_noise.items()}
    lines.append("| CE (stage 1, selected) | " + " | ".join(
        " | ".join(["–", stats(ce[n]), "–"]) for n in by_noise) + " | |")
    for name in names:
        parts, seeds = [], set()
        for n, found in by_noise.items():
            runs = found.get(name, {})
            seeds |= set(runs)
            parts += [stats([r.get(key) for r in runs.values()]) for _, key in KEYS]
        lines.append(f"| {name} | " + " | ".join(parts) + f" | {len(seeds)} |")
    return "\n".join(lines)


def detection(by_noise):
    """Markdown: the η ranking of each row's cells as a wrong-label detector, scored as
    benchmarks/detection.py scores it (AUROC, precision at the number of wrong labels, the
    flagged set's precision and recall) on the trained rows against the clean labels."""
    from detection import auroc, precision_at, trained_rows
    names = sorted({r for found in by_noise.values() for r in found if r != "tanaka"},
                   key=lambda r: (r != "idn", r))
    metrics = ("AUROC", "P@n_wrong", "flagged P", "flagged R")
    lines = ["| row | " + " | ".join(f"{n}: {m}" for n in by_noise for m in metrics) + " |",
             "|---|" + "---|" * (len(metrics) * len(by_noise))]
    for name in names:
        parts = []
        for found in by_noise.values():
            values = {m: [] for m in metrics}
            for _, result in sorted(found.get(name, {}).items()):
                run_dir = result["run_dir"]
                labels, clean, _ = trained_rows(run_dir)
                eta = np.load(os.path.join(run_dir, "eta.npy"))[:len(labels)]
                wrong = labels != clean
                values["AUROC"].append(auroc(eta, wrong))
                values["P@n_wrong"].append(precision_at(eta, wrong, int(wrong.sum())))
                values["flagged P"].append(result["label_issue_precision"])
                values["flagged R"].append(result["label_issue_recall"])
            parts += ["–" if not v else f"{np.mean(v):.3f} ± {np.std(v):.3f}"
                      for v in values.values()]
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def choice(by_noise):
    """Markdown: each candidate's paired gain over the paper's setting ("idn") per (noise,
    seed) cell, in validation accuracy (what chooses) and selected test accuracy (reported
    only), and the pick of the one-standard-error rule (Breiman et al., CART, 1984; Hastie
    et al., ESL §7.10): of the candidates whose mean validation gain is within one standard
    error of the best one's, the one that changes the fewest flags (ties: higher gain)."""
    rows = sorted(set.intersection(*(set(f) for f in by_noise.values())))
    scored = []
    for name in rows:
        val, test = [], []
        for found in by_noise.values():
            for seed, result in found[name].items():
                paper = found["idn"][seed]
                val.append(100 * (result["method_validation_accuracy"]
                                  - paper["method_validation_accuracy"]))
                test.append(100 * (result["method_test_accuracy_selected"]
                                   - paper["method_test_accuracy_selected"]))
        se = float(np.std(val, ddof=1) / np.sqrt(len(val))) if len(val) > 1 else 0.0
        changes = 0 if name == "idn" else name.count("+") + 1
        scored.append((name, changes, float(np.mean(val)), se, float(np.mean(test)), len(val)))
    scored.sort(key=lambda r: -r[2])
    candidates = [r for r in scored if r[0] != "tanaka"]  # Tanaka: a reference, not a candidate
    best = candidates[0]
    pick = min((r for r in candidates if r[2] >= best[2] - best[3]), key=lambda r: (r[1], -r[2]))
    lines = ["| candidate | flags changed | validation gain (mean ± s.e., points) | "
             "selected test gain (points) | cells |", "|---|---|---|---|---|"]
    lines += [f"| {n if n != 'tanaka' else '(Tanaka, for reference)'} | "
              f"{c if n != 'tanaka' else '–'} | {m:+.2f} ± {e:.2f} | {t:+.2f} | {k} |"
              for n, c, m, e, t, k in scored]
    lines.append(f"\nBest validation gain: {best[0]}; one-standard-error threshold "
                 f"{best[2] - best[3]:+.2f}; the rule picks: {pick[0]}.")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--out", default="benchmark-runs/idn-plus")
    parser.add_argument("--rows", default="", help="only these comparisons (keys of ROWS, comma-separated)")
    parser.add_argument("--report", action="store_true", help="only print the tables")
    args = parser.parse_args()
    noises = args.noises.split(",")
    if not args.report:
        for noise in noises:
            run(noise, args.seeds, args.out, [r for r in args.rows.split(",") if r])
    by_noise = load(args.out, noises)
    print(report(by_noise))
    print()
    print(detection(by_noise))
    if len(by_noise) > 1:
        print()
        print(choice(by_noise))


if __name__ == "__main__":
    main()
