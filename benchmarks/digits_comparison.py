"""Benchmark: every method of `idn_tf.compare` on digits, 5 seeds × {k-means IDN, CCN r = 0.4}.

    python benchmarks/digits_comparison.py                  # ~70 minutes on 2 CPU cores
    python benchmarks/digits_comparison.py --seeds=0 --methods=ce,forward --out=/tmp/cmp

Runs `python -m idn_tf.compare` once per noise (each in <out>/<noise>/, so a rerun
skips the finished cells) with the digits recipe, then prints one markdown table:
methods × noises, mean ± std test accuracy over the seeds at the epoch chosen on the noisy
validation split and at the last epoch (docs/validation.md), and each noise's ordering
(by the selected figure) next to the paper's (docs/method.md §6: CIFAR-10 IDN for k-means,
CIFAR-10 CCN 0.4 for ccn), and a table of the export guard (docs/validation.md): in how
many cells of each method it fired, and in how many of those the method beat CE on test.
`--sweep=eta_lr=0.1,0.3,...` passes a sweep to the comparison.
"""

import argparse
import json
import os
import subprocess
import sys

from idn_tf import methods

NOISES = {"kmeans": ["--noise=kmeans"], "ccn0.4": ["--noise=ccn", "--noise_rate=0.4"]}
METHODS = methods.names()
NAMES = {m.name: m.title for m in methods.all_methods()}
# The paper's ordering (docs/method.md §6) of the methods this benchmark has; CE is not in its table.
PAPER = {"kmeans": {"idn": 69.82, "forward": 64.29, "ldmi": 66.15, "bootstrap": 66.24,
                    "coteaching": 66.93, "tanaka": 67.77, "pencil": 69.51},
         "ccn0.4": {"idn": 90.48, "forward": 85.65, "ldmi": 88.80, "bootstrap": 78.95,
                    "coteaching": 79.67, "tanaka": 90.39, "pencil": 89.25}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--out", default="benchmark-runs/digits-comparison")
    parser.add_argument("--flag", action="append", default=[],
                        help="extra idn_tf flag for every cell, e.g. --flag=dmi_lr=1e-3")
    parser.add_argument("--sweep", default="", help="idn_tf.compare's --sweep, e.g. eta_lr=0.1,0.3")
    args = parser.parse_args()
    results = {}
    for noise in args.noises.split(","):
        folder = os.path.join(args.out, noise)
        command = [sys.executable, "-m", "idn_tf.compare", "--dataset=digits", *NOISES[noise],
                   f"--methods={args.methods}", f"--seeds={args.seeds}",
                   f"--compare_dir={folder}", "--verbose=0", "--monitor_every=1000",
                   *(f"--{f}" for f in args.flag),
                   *([f"--sweep={args.sweep}"] if args.sweep else [])]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
        with open(os.path.join(folder, "comparison.json")) as f:
            results[noise] = json.load(f)
    print(table(results))
    print(guard_table(results))


def guard_table(results):
    """How often the export guard (docs/validation.md) fired, per noise and method, and in
    how many of those cells the method was in fact better than CE on the clean test set
    (selected epochs; from each cell's results.json)."""
    lines = ["", "| noise | method | cells | guard fired | fired where the method beat CE "
             "on test |", "|---|---|---|---|---|"]
    for noise, result in results.items():
        by_row = {}
        for cell in result["cells"]:
            if cell.get("status") != "done":
                continue
            with open(os.path.join(cell["run_dir"], "results.json")) as f:
                res = json.load(f)
            if "export_guard" not in res:
                continue
            fired = res["export_guard"]["worse"]
            better = res["method_test_accuracy_selected"] > res["ce_test_accuracy_selected"]
            counts = by_row.setdefault(cell["row"], [0, 0, 0])
            counts[0] += 1
            counts[1] += fired
            counts[2] += fired and better
        for row, (cells, fired, wrongly) in by_row.items():
            lines.append(f"| {noise} | {NAMES.get(row, row)} | {cells} | {fired} | {wrongly} |")
    return "\n".join(lines)


def _cell(stats):
    return "–" if not stats["n"] else f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def table(results):
    """Rows: the comparison's rows (methods, or a sweep's values); per noise, the selected
    and the last epoch's test accuracy."""
    noises = list(results)
    rows = list(results[noises[0]]["rows"])
    lines = ["| method | " + " | ".join(f"{n}: selected | {n}: last" for n in noises) + " |",
             "|---|" + "---|---|" * len(noises)]
    for row in rows:
        cells = []
        for noise in noises:
            s = results[noise]["summary"][row]
            cells += [_cell(s["selected"]), _cell(s)]
        name = NAMES.get(row, row)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    wrong = [results[n]["noise_rate_actual"] for n in noises]
    lines.append("| (wrong training labels) | " + " | ".join(
        f"{100 * w['mean']:.2f} ± {100 * w['std']:.2f} | " for w in wrong) + "|")
    for noise in noises:
        if "sweep" in results[noise]:
            lines.append(f"\n{noise}: picked on validation: {results[noise]['sweep']['chosen']}")
    lines.append("")
    for noise in noises:
        summary = results[noise]["summary"]
        means = {r: summary[r]["selected"]["mean"] if summary[r]["selected"]["n"]
                 else summary[r]["mean"] if summary[r]["n"] else float("-inf") for r in rows}
        ours = " > ".join(NAMES.get(r, r) for r in sorted(means, key=means.get, reverse=True))
        paper = PAPER.get(noise, {})
        theirs = " > ".join(sorted(paper, key=paper.get, reverse=True))
        lines.append(f"- {noise}: here {ours}; paper (CIFAR-10) {theirs}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
