"""Compares methods side by side: every method trained on the same noisy labels, per seed.

    python -m idn_tf.compare --dataset=digits --noise=ccn --noise_rate=0.4 \\
        --methods=idn,ce,forward,tanaka,pencil --seeds=0,1,2,3,4

Each (method, seed) is a cell, trained as `python -m idn_tf.train` would in a run folder
of its own under --compare_dir, on the seed's observed labels; every flag other than its
own is idn_tf.train's and applies to every cell. After each cell, comparison.md (mean ±
std of the test accuracy over the seeds, a table like the paper's) and comparison.json
are written again. A rerun skips the finished cells and resumes the others; --sweep adds
one row per value of a flag.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

from idn_tf import artifacts, cli, flagdefs, inputs, methods, runner
from idn_tf.config import RATE_NOISES, Config, ConfigError, resolve, stage1_part
from idn_tf.data.noise import NOISES
from idn_tf.runfolder import banner

flags.DEFINE_list("methods", list(methods.names()),
                  f"Methods to compare: any of {', '.join(methods.names())}.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds: one set of noisy labels each.")
flags.DEFINE_string("sweep", "",
                    "FLAG=v1,v2,...: one cell per value of this numeric flag (e.g. "
                    "eta_lr=0.1,0.3,0.5,0.7,1.0), for every method and seed, on the same labels; "
                    "the value with the best mean validation accuracy is picked, and "
                    "sweep.png drawn.")
flags.DEFINE_string("compare_dir", "",
                    "Folder of the comparison (cells, labels, comparison.md/.json); default "
                    "comparisons/<the run folders' name without method and seed>.")

FLAGS = flags.FLAGS

# Flags a comparison sets for each cell itself.
CELL_FLAGS = ("method", "seed", "run_dir", "model_name")
STAGE1_FILES = ("stage1.json", "psi.npy", "stage1.weights.h5")
STAGE1_OPTIONAL = ("stage1.selected.npz",)  # with a validation split


class Comparison:
    """The cells of one comparison: configurations, folders, labels and results.

    A row of the table is a method, or with a sweep (`sweep`: (flag, values)) a method
    at one value of the swept flag; a cell is (row, seed). Row names are the cells'
    folder names without the seed: "idn", or "idn-eta_lr0.3" in a sweep.
    """

    def __init__(self, explicit, methods, seeds, compare_dir="", sweep=None):
        self.explicit = dict(explicit)
        self.methods = list(methods)
        self.seeds = list(seeds)
        self.sweep = sweep
        first = resolve({**self.explicit, "seed": self.seeds[0]})
        if first.strategy == "multi_worker":
            raise ConfigError("--strategy=multi_worker: a comparison runs in one process; run "
                              "its cells with python -m idn_tf.train on the cluster instead")
        self.dir = compare_dir or os.path.join("comparisons", first.setting_name())
        # row name -> (method, {swept flag: value} or {}); a method the swept flag does
        # not concern (e.g. ce in an eta_lr sweep) has one row.
        self.rows = {}
        for m in self.methods:
            swept = sweep and _concerns(sweep, {**self.explicit, "method": m})
            for v in (sweep[1] if swept else [None]):
                self.rows[m if v is None else f"{m}-{sweep[0]}{value_text(v)}"] = (
                    m, {} if v is None else {sweep[0]: v})
        if sweep and all(not swept for _, swept in self.rows.values()):
            raise ConfigError(f"--sweep: {sweep[0]} changes nothing the methods "
                              f"{', '.join(self.methods)} compute")
        self.configs = {(r, s): self._cell_config(r, s) for s in self.seeds for r in self.rows}
        if sweep and not self.configs[self.cells()[0]].has_validation():
            raise ConfigError("--sweep: the value is picked by validation accuracy, so it needs "
                              "a validation split (--val_fraction > 0)")

    def _cell_config(self, row, seed):
        name = f"{row}-{seed}"
        method, swept = self.rows[row]
        cell = {**self.explicit, **swept, "method": method, "seed": seed,
                "run_dir": os.path.join(self.dir, name),
                "model_name": f"{os.path.basename(os.path.abspath(self.dir))}-{name}"}
        if "export_dir" not in self.explicit:
            cell["export_dir"] = ""  # a comparison exports only when asked to
        try:
            return resolve(cell)
        except ConfigError as e:
            raise ConfigError(f"{e} (in the {row} cell)") from None

    def title(self, row):
        """How the table names a row: the method's title, and the swept value."""
        method, swept = self.rows[row]
        return methods.get(method).title + "".join(f", {k} = {value_text(v)}"
                                                   for k, v in swept.items())

    def labels_path(self, seed):
        return os.path.join(self.dir, "labels", f"seed-{seed}.npz")

    def cells(self):
        """(row, seed) in the order they run: seed by seed."""
        return [(r, s) for s in self.seeds for r in self.rows]

    def finished(self, cell):
        """The cell's results.json content if it finished with this configuration, else None."""
        config = self.configs[cell]
        results, saved = (os.path.join(config.run_dir, n) for n in ("results.json", "config.json"))
        if not (os.path.isfile(results) and os.path.isfile(saved)):
            return None
        try:
            same = artifacts.read_json(saved) == json.loads(json.dumps(config.semantic_dict()))
            return artifacts.read_json(results) if same else None
        except (OSError, ValueError):
            return None

    def remove(self):
        """--overwrite: deletes this comparison's cell folders and label files."""
        artifacts.remove(self.dir, [os.path.relpath(c.run_dir, self.dir)
                                    for c in self.configs.values()]
                         + [os.path.relpath(self.labels_path(s), self.dir) for s in self.seeds])

    def prepare_labels(self, seed, data):
        """labels/seed-<k>.npz, made once per seed (with the noise flags that made them,
        checked when it is reused); returns its path."""
        path = self.labels_path(seed)
        config = self.configs[(next(iter(self.rows)), seed)]
        settings = json.dumps(config.noise_dict(), sort_keys=True)
        if os.path.isfile(path):
            with np.load(path) as saved:
                made_with = str(saved["settings"]) if "settings" in saved.files else None
                examples = (str(saved["examples_sha256"]) if "examples_sha256" in saved.files
                            else None)
            if made_with != settings:
                raise artifacts.RunDirError(
                    f"{path} was made with other noise flags ({made_with} here, {settings} "
                    "now); choose another --compare_dir or pass --overwrite")
            if examples is not None and examples != data.fingerprint():
                raise artifacts.RunDirError(
                    f"{path} was made for other training images or labels than the data now "
                    "has (moved, added or removed files, or another --data_dir); choose "
                    "another --compare_dir or pass --overwrite")
            return path
        print(f"noisy labels for seed {seed}: {config.noise} noise", flush=True)
        artifacts.write_npz(path, settings=settings, **inputs.new_noisy_labels(config, data))
        return path

    def cell_labels(self, cell, labels_path):
        """The arrays of the cell's noisy_labels.npz for its run to write: the seed's labels
        (labels/seed-<k>.npz), or None when the cell's folder holds them already (a restart;
        RunDirError if they are not the seed's)."""
        target = os.path.join(self.configs[cell].run_dir, "noisy_labels.npz")
        if not os.path.isfile(target):
            with np.load(labels_path) as saved:
                return {k: saved[k] for k in saved.files if k != "settings"}
        if _labels(target).tobytes() != _labels(labels_path).tobytes():
            raise artifacts.RunDirError(
                f"{target} holds other labels than {labels_path}: the cell would not train "
                "on the comparison's labels; delete the cell's folder or pass --overwrite")
        return None

    def share_stage1(self, cell, labels_path):
        """Copies into the cell a sibling's stage 1 (one trained on the same labels with
        the same flags), if one finished."""
        config = self.configs[cell]
        if not _needs_stage1(config) or os.path.isfile(os.path.join(config.run_dir, "stage1.json")):
            return
        wanted = json.loads(json.dumps(config.stage1_dict()))
        labels = _labels(labels_path).tobytes()
        for folder in self.siblings(cell):
            # What the sibling's folder holds, by its own config.json (an earlier
            # comparison in this folder may have had other flags) and its labels.
            try:
                saved = artifacts.read_json(os.path.join(folder, "config.json"))
                same_labels = _labels(os.path.join(folder, "noisy_labels.npz")).tobytes() == labels
            except (OSError, ValueError, KeyError):
                continue
            if not isinstance(saved, dict) or stage1_part(saved) != wanted or not same_labels:
                continue
            files = [os.path.join(folder, n) for n in STAGE1_FILES]
            if all(os.path.isfile(f) for f in files):
                print(f"stage 1 shared with {folder}", flush=True)
                os.makedirs(config.run_dir, exist_ok=True)
                files += [f for f in (os.path.join(folder, n) for n in STAGE1_OPTIONAL)
                          if os.path.isfile(f)]
                for f in sorted(files, key=lambda f: f.endswith(".json")):  # the json last
                    _copy(f, os.path.join(config.run_dir, os.path.basename(f)))
                return

    def siblings(self, cell):
        """The folders a cell may take stage 1 from: the other cells of its seed that train
        one, then any other run folder in the comparison's folder (e.g. of an earlier
        comparison there with other --methods or --sweep); `share_stage1` checks each."""
        config = self.configs[cell]
        own = [self.configs[o].run_dir for o in self.cells()
               if o != cell and o[1] == cell[1] and _needs_stage1(self.configs[o])]
        others = sorted(os.path.join(self.dir, name) for name in os.listdir(self.dir)
                        if os.path.isfile(os.path.join(self.dir, name, "config.json")))
        mine = {os.path.abspath(p) for p in [config.run_dir, *own]}
        return own + [f for f in others if os.path.abspath(f) not in mine]


def _concerns(sweep, explicit):
    """Whether a swept flag changes what the configuration `explicit` computes: a field of
    its semantic dict, or one whose values change it (--preset sets other fields)."""
    flag, values = sweep
    base = resolve(explicit).semantic_dict()
    if flag in base:
        return True
    try:
        return any(resolve({**explicit, flag: v}).semantic_dict() != base for v in values)
    except ConfigError:  # a value the cell refuses: its own cell says why
        return True


def _needs_stage1(config):
    return methods.get(config.method).needs_stage1(config)


def _labels(path):
    with np.load(path) as saved:
        return np.asarray(saved["labels"])


def _copy(source, target):
    with open(source, "rb") as f:
        artifacts.write_bytes(target, f.read())


# A cell's figures (comparison.json's cell keys) and the results.json keys of the final
# classifier's (`report.selection`), without the prefix: "method" or, after the clean
# fine-tuning, "finetuned".
FIGURES = {"test_accuracy": "_test_accuracy", "test_accuracy_selected": "_test_accuracy_selected",
           "test_accuracy_best": "_test_accuracy_best", "validation_accuracy": "_validation_accuracy"}


def figures(results):
    """The figures of a cell's final classifier (after any clean fine-tuning): the last
    epoch's test accuracy, the selected epoch's (None without validation), the best
    epoch's (optimistic), the selected epoch's validation accuracy, and that epoch."""
    prefix = "method" if results.get("finetuned_test_accuracy") is None else "finetuned"
    epoch = "selected_epoch" if prefix == "method" else f"{prefix}_selected_epoch"
    return {**{name: results.get(prefix + key) for name, key in FIGURES.items()},
            "selected_epoch": results.get(epoch)}


def accuracy(results):
    """The test accuracy to quote for a cell: its selected epoch's where it has a
    validation split, else its last epoch's."""
    found = figures(results)
    return found["test_accuracy"] if found["test_accuracy_selected"] is None \
        else found["test_accuracy_selected"]


def accuracy_text(results):
    """A cell's `accuracy` as its console line quotes it, saying which it is: "71.11% test
    accuracy at the selected epoch (7, chosen on validation; last epoch 69.44%)", or
    "69.44% test accuracy at the last epoch" without a validation split."""
    found, quoted = figures(results), f"{100 * accuracy(results):.2f}% test accuracy"
    if found["test_accuracy_selected"] is None:
        return f"{quoted} at the last epoch"
    return (f"{quoted} at the selected epoch ({found['selected_epoch']}, chosen on validation; "
            f"last epoch {100 * found['test_accuracy']:.2f}%)")


def summary(comparison, outcomes):
    """comparison.json's content from the cells' outcomes ({cell: results dict or error}).

    Per row: the last epoch's test accuracy (mean, std, n, test_accuracies) and, under
    "selected", "best" and "validation", the same of the other figures (`figures`).
    """
    cells = []
    by_row = {r: {name: [] for name in FIGURES} for r in comparison.rows}
    for cell in comparison.cells():
        row, seed = cell
        config = comparison.configs[cell]
        entry = {"method": config.method, "row": row, "seed": seed, "run_dir": config.run_dir}
        outcome = outcomes.get(cell)
        if isinstance(outcome, dict):
            entry.update(status="done", **figures(outcome),
                         ce_test_accuracy=outcome.get("ce_test_accuracy"),
                         noise_rate_actual=outcome.get("noise_rate_actual"),
                         guard_fired=bool((outcome.get("export_guard") or {}).get("worse")),
                         exported_classifier=outcome.get("exported_classifier"),
                         saved_model=outcome.get("saved_model") or None,
                         labels_sha256=_sha256(os.path.join(config.run_dir, "noisy_labels.npz")))
            for name in FIGURES:
                if entry[name] is not None:
                    by_row[row][name].append(entry[name])
        elif outcome is not None:
            entry.update(status="failed", error=str(outcome))
        else:
            entry.update(status="pending")
        cells.append(entry)
    first = comparison.configs[comparison.cells()[0]]
    # The test set, as the done cells' results.json say (those of older runs do not).
    test_set = next((o for o in outcomes.values() if isinstance(o, dict)
                     and o.get("test_images") is not None), {})
    per_seed = {}  # one actual noise rate per seed (all its cells share the labels)
    for c in cells:
        rate = c.get("noise_rate_actual")
        if rate is not None and rate == rate:  # NaN: the clean labels are unknown
            per_seed.setdefault(c["seed"], rate)
    rates = list(per_seed.values())
    result = {
        "dataset": first.dataset, "noise": first.noise,
        "noise_rate": first.noise_rate if first.noise in RATE_NOISES else None,
        "methods": comparison.methods, "rows": list(comparison.rows), "seeds": comparison.seeds,
        "flags": comparison.explicit,
        "noise_rate_actual": _stats(rates),
        "test_images": test_set.get("test_images"),
        "own_test_labels": test_set.get("own_test_labels"),
        "summary": {r: {**_stats(v["test_accuracy"]), "test_accuracies": v["test_accuracy"],
                        **{key: {**_stats(v[name]), "values": v[name]} for key, name in (
                            ("selected", "test_accuracy_selected"),
                            ("best", "test_accuracy_best"),
                            ("validation", "validation_accuracy"))}}
                    for r, v in by_row.items()},
        "cells": cells,
    }
    if comparison.sweep:
        result["sweep"] = sweep_choice(comparison, result["summary"])
    return result


def sweep_choice(comparison, rows):
    """Per method, the swept value of the highest mean validation accuracy (the test set
    is not looked at; ties: the first value), among values with every seed done."""
    flag, values = comparison.sweep
    chosen = {}
    for method in comparison.methods:
        if method in comparison.rows:  # not swept
            continue
        scored = [(rows[r]["validation"]["mean"], -i, swept[flag])
                  for i, (r, (m, swept)) in enumerate(comparison.rows.items())
                  if m == method and rows[r]["validation"]["n"] == len(comparison.seeds)]
        chosen[method] = max(scored)[2] if scored else None
    return {"flag": flag, "values": values, "chosen": chosen}


def _stats(values):
    """mean and std (numpy's, ddof 0: the spread of these seeds) and n; NaN when empty."""
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def _sha256(path):
    import hashlib
    return hashlib.sha256(_labels(path).astype(np.int64).tobytes()).hexdigest()


def markdown(result, comparison, command=""):
    """comparison.md: the setting in words and the test set; one row per method (or swept
    value): mean ± std test accuracy (%) over the seeds at the epoch chosen on validation,
    at the last epoch, and at the best epoch on test (optimistic: for the paper's Table 3
    protocol only); how to get the best row's model."""
    first = comparison.configs[comparison.cells()[0]]
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [f"# {setting_text(first, result['noise_rate_actual'])}, "
             f"{_count(len(result['methods']), 'method')} × {_count(len(result['seeds']), 'seed')}"
             ": test accuracy (%)", "",
             test_set_text(result) +
             f"Mean ± std (numpy, ddof 0) over seeds {seeds}; every method of a seed trained on "
             "the same noisy labels. Quote the selected column: its epoch was chosen by "
             "accuracy on the noisy validation split; the best-epoch column looks at the test "
             "set, so it is optimistic."]
    summaries = result["summary"]
    quoted = quoted_figure(summaries)
    lines += ["", "| method | selected on validation | last epoch | best epoch (optimistic) "
              f"| per seed ({quoted or 'last'}) | seeds done |", "|---|---|---|---|---|---|"]
    bold = leaders(result) if len(result["rows"]) > 1 else []
    for row in result["rows"]:
        stats = summaries[row]
        per_seed = {c["seed"]: c for c in result["cells"] if c["row"] == row}
        seeds_text = ", ".join(
            f"{100 * accuracy_of(per_seed[s], quoted):.2f}{GUARD_MARK * guarded(per_seed[s])}"
            if per_seed[s]["status"] == "done" else per_seed[s]["status"] for s in result["seeds"])
        columns = [cell_text(stats["selected"]), cell_text(stats), cell_text(stats["best"])]
        if row in bold:
            index = 0 if quoted else 1
            columns[index] = f"**{columns[index]}**"
        lines.append(f"| {comparison.title(row)} | {' | '.join(columns)} | {seeds_text} | "
                     f"{stats['n']}/{len(result['seeds'])} |")
    if any(guarded(c) for c in result["cells"]):
        lines += ["", f"{GUARD_MARK} The export guard found this cell's classifier worse than "
                  "its stage 1 (plain cross-entropy) on the noisy validation split; its run "
                  "exported stage 1's classifier unless --export_classifier=method "
                  "(docs/validation.md). The figures are the method's own."]
    if "sweep" in result:
        sweep = result["sweep"]
        lines += ["", f"Sweep of --{sweep['flag']} over {', '.join(value_text(v) for v in sweep['values'])}; "
                  "picked by mean validation accuracy: " + "; ".join(
                      f"{methods.get(m).title}: {'–' if v is None else value_text(v)}"
                      for m, v in sweep["chosen"].items()) + "."]
    if command:
        lines += ["", f"Command: `{command}`"]
    chosen = model_text(result, comparison)
    return "\n".join(lines + (["", chosen] if chosen else [])) + "\n"


def _count(n, noun):
    return f"{n} {noun}{'s' * (n != 1)}"


def setting_text(config, wrong):
    """The data and their labels in words (comparison.md's title), e.g. "Class folder
    photos/ (its own labels)" or "digits, k-means instance-dependent noise (26.8% wrong
    labels)"; `wrong`: the stats of the measured share of wrong training labels."""
    data = {"folder": f"Class folder {config.data_dir}",
            "npz": config.npz_path}.get(config.dataset, config.dataset)
    rate = f"{100 * wrong['mean']:.1f}% wrong labels" if wrong["n"] else ""
    if config.noise == "none":
        labels = f"its {config.noisy_label_key} labels" if config.noisy_label_key else NOISES["none"]
        return f"{data} ({', '.join(t for t in (labels, rate) if t)})"
    noise = NOISES[config.noise] + (f" r = {config.noise_rate:g}" if config.uses_noise_rate()
                                    else "")
    return f"{data}, {noise}" + (f" ({rate})" if rate else "")


def test_set_text(result):
    """What the accuracies are measured on, as a sentence: the number of test images and
    whose labels they have ("" when no cell said: runs made before results.json did)."""
    if result.get("test_images") is None:
        return ""
    if result["own_test_labels"]:
        return (f"Test set: {result['test_images']} images with the folder's own labels, not "
                "known to be clean (where a test label is wrong, a right answer counts as "
                "wrong). ")
    return f"Test set: {result['test_images']} images with clean labels. "


def quoted_figure(summaries):
    """The figure comparison.md quotes: "selected" if a cell has a validation split, else
    None (the last epoch's)."""
    return "selected" if any(s["selected"]["n"] for s in summaries.values()) else None


def leaders(result):
    """The rows of the best quoted mean among the rows with the most seeds done (bold in
    comparison.md), in table order; [] before any cell is done."""
    quoted = quoted_figure(result["summary"])
    stats = {r: s[quoted] if quoted else s for r, s in result["summary"].items()}
    most = max(s["n"] for s in stats.values())
    done = {r: s["mean"] for r, s in stats.items() if s["n"] == most and most}
    return [r for r in result["rows"] if r in done and done[r] == max(done.values())]


def model_text(result, comparison):
    """How to get the best row's model (`leaders`): the SavedModels its cells exported, or
    else the command that exports one of them (its seed of the highest validation
    accuracy), reusing the cell's training ("" before any cell is done)."""
    rows = leaders(result)
    if not rows:
        return ""
    cells = [c for c in result["cells"] if c["row"] == rows[0] and c["status"] == "done"]
    name = f"To use {comparison.title(rows[0])}, the best row above"
    exported = [c for c in cells if c.get("saved_model")]
    if exported:
        return f"{name}: its SavedModels, " + ", ".join(
            f"`{c['saved_model']}` (seed {c['seed']})" for c in exported) + "."
    scored = [c for c in cells if c.get("validation_accuracy") is not None]
    cell = max(scored, key=lambda c: c["validation_accuracy"]) if scored else cells[0]
    config = comparison.configs[(cell["row"], cell["seed"])]
    export_dir = Config.export_dir  # idn_tf.train's default
    return (f"{name}: a comparison exports only with --export_dir. This exports its seed "
            f"{cell['seed']} ({'the highest validation accuracy' if scored else 'the first'} of "
            "its seeds), reusing the cell's training: `python -m idn_tf.train "
            f"--flagfile={os.path.join(config.run_dir, 'flags.txt')} --export_dir={export_dir}` "
            f"(a SavedModel in {os.path.join(export_dir, config.model_name)}/).")


GUARD_MARK = "†"


def guarded(cell):
    """Whether the export guard fired in a done cell (`summary`'s entry)."""
    return bool(cell.get("guard_fired"))


def accuracy_of(cell, quoted):
    """A done cell's quoted test accuracy (`markdown`)."""
    value = cell.get("test_accuracy_selected") if quoted else None
    return cell["test_accuracy"] if value is None else value


def cell_text(stats):
    """A table cell: mean ± std in percent, two decimals ("–": no value)."""
    if not stats["n"]:
        return "–"
    return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def write_reports(comparison, outcomes, command):
    result = summary(comparison, outcomes)
    artifacts.write_json(os.path.join(comparison.dir, "comparison.json"), result)
    artifacts.write_text(os.path.join(comparison.dir, "comparison.md"),
                         markdown(result, comparison, command))
    if comparison.sweep:
        from idn_tf import plots
        plots.sweep_plot(os.path.join(comparison.dir, "sweep.png"), *comparison.sweep,
                         sweep_series(comparison, result["summary"]))
    return result


def sweep_series(comparison, rows):
    """`plots.sweep_figure`'s series: per method, (mean, std) of the validation and the
    selected test accuracy at each swept value."""
    series = {}
    for method in comparison.methods:
        names = [r for r, (m, _) in comparison.rows.items() if m == method]
        if method in comparison.rows:  # not swept: no curve
            continue
        series[methods.get(method).title] = {
            key: [(rows[r][figure]["mean"], rows[r][figure]["std"]) for r in names]
            for key, figure in (("validation", "validation"), ("test", "selected"))}
    return series


def run(comparison, overwrite=False, command=""):
    """Runs every cell not finished yet; returns comparison.json's content.

    For each seed the observed labels are made once, in <compare_dir>/labels/seed-<k>.npz,
    and handed to each (method, seed) cell's run, which writes them into its run folder,
    <compare_dir>/<method>-<k>/, as its noisy_labels.npz (a restarted cell reuses its
    own, checked to be the seed's): every method of a seed trains on exactly those labels
    (docs/method.md §5). The cells run one after another in this process, each as a
    `runner.run`, so each keeps its run folder's behaviour (restart, backups, TensorBoard,
    results.json). A cell whose results.json was written with the same configuration is
    skipped; a cell killed part-way resumes from its last epoch. Cells of a seed that
    train the same stage 1 (those whose `Method.needs_stage1`: the method, CE, Forward
    with an estimated T, L_DMI, Co-teaching with an estimated τ) share it: the first one
    trains it, the others start from a copy of its files.
    """
    import keras
    start = time.time()
    if overwrite:
        comparison.remove()
    cells = comparison.cells()
    outcomes = {cell: comparison.finished(cell) for cell in cells}
    todo = [cell for cell in cells if outcomes[cell] is None]
    print(f"comparison in {comparison.dir}/: {len(cells)} cells "
          f"({len(comparison.methods)} methods x {len(comparison.seeds)} seeds), "
          f"{len(cells) - len(todo)} finished already", flush=True)
    data = inputs.load_data(comparison.configs[cells[0]]) if todo else None
    for cell in todo:  # e.g. a bad --transition_matrix stops the comparison before any training
        config = comparison.configs[cell]
        methods.get(config.method).preflight(config, data)
    for number, cell in enumerate(cells, 1):
        row, seed = cell
        head = f"[{number}/{len(cells)}] {row}, seed {seed}"
        if outcomes[cell] is not None:
            print(f"{head}: finished, {accuracy_text(outcomes[cell])}; skipped", flush=True)
            continue
        print(f"\n{'=' * 8} {head}: {comparison.configs[cell].run_dir}", flush=True)
        cell_start = time.time()
        labels_path = comparison.prepare_labels(seed, data)
        labels = comparison.cell_labels(cell, labels_path)
        if labels is not None:
            banner(f"noise: the noisy labels of seed {seed}, the same for every cell of the "
                   f"seed ({labels_path})")
        comparison.share_stage1(cell, labels_path)
        keras.backend.clear_session()
        try:
            outcomes[cell] = runner.run(comparison.configs[cell], data=data, labels=labels)
        except FloatingPointError as e:  # a diverged cell: the others still run
            outcomes[cell] = e
            print(f"{head}: failed: {e}", flush=True)
        except artifacts.RunDirError as e:  # in the comparison's terms: its folder, its flags
            raise artifacts.RunDirError(str(e).replace(
                "choose another --run_dir or pass --overwrite",
                "choose another --compare_dir, delete that cell's folder, or pass --overwrite "
                "(which starts the whole comparison again)")) from None
        else:
            print(f"{'=' * 8} {head}: {accuracy_text(outcomes[cell])} "
                  f"({time.time() - cell_start:.0f} s)", flush=True)
        write_reports(comparison, outcomes, command)
    result = write_reports(comparison, outcomes, command)
    print(f"\n{markdown(result, comparison)}\n{comparison.dir}/comparison.md, comparison.json"
          f"{', sweep.png' if comparison.sweep else ''} ({time.time() - start:.0f} s)")
    return result


def _seeds(strings):
    try:
        seeds = [int(s) for s in strings]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {','.join(strings)!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: give one or more distinct seeds, got {','.join(strings)!r}")
    return seeds


def _methods(names):
    unknown = [m for m in names if m not in methods.names()]
    if unknown or not names:
        raise ConfigError(f"--methods: unknown method {unknown[0]!r}; choose from "
                          f"{', '.join(methods.names())}" if unknown
                          else "--methods: give one or more")
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods: each method once, got {','.join(names)}")
    return list(names)


def value_text(value):
    """How a swept value is written in row names and tables: 0.3, 10, crossval."""
    return value if isinstance(value, str) else f"{value:g}"


def _choices(flag):
    """The values of an enum flag of idn_tf.train, or None for another kind of flag."""
    return getattr(FLAGS[flag].parser, "enum_values", None) if flag in FLAGS else None


def _sweep(text, explicit):
    """--sweep=FLAG=v1,v2,... -> (flag, [values]) or None; ConfigError if FLAG is not a
    numeric or a choice flag a sweep may vary (the cells' own, and the noise's: the
    labels must stay the same) or a value is not one of its type or choices."""
    if not text:
        return None
    from idn_tf import config as config_lib
    flag, sep, values = text.partition("=")
    defaults = config_lib.field_defaults()
    if not sep or flag not in defaults:
        raise ConfigError(f"--sweep: expected FLAG=v1,v2,... with FLAG a flag of idn_tf.train, "
                          f"got {text!r}")
    kind, choices = type(defaults[flag]), _choices(flag)
    if (kind not in (int, float) and not choices) or flag in (
            *CELL_FLAGS, *config_lib.NOISE_FIELDS):
        raise ConfigError(f"--sweep: {flag} cannot be swept (a sweep varies a numeric or a "
                          "choice training flag on the same labels)")
    if flag in explicit:
        raise ConfigError(f"--sweep: --{flag} is given too; give its values in --sweep only")
    if choices:
        parsed = values.split(",")
        bad = [v for v in parsed if v not in choices]
        if bad:
            raise ConfigError(f"--sweep: {flag} takes one of {', '.join(choices)}, got "
                              f"{bad[0]!r}")
    else:
        try:
            parsed = [kind(v) if kind is float else int(v, 10) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"--sweep: {flag} takes {kind.__name__} values, got {values!r}") from None
    if len(set(parsed)) != len(parsed) or not parsed:
        raise ConfigError(f"--sweep: give distinct values of {flag}, got {values!r}")
    return flag, parsed


def main(argv):
    cli.quiet_logging()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags are --name=value)")
    with cli.user_errors():
        given = [name for name in CELL_FLAGS if not FLAGS[name].using_default_value]
        if given:
            raise ConfigError(f"--{given[0]}: set per cell by the comparison (use --methods, "
                              "--seeds and --compare_dir)")
        explicit = flagdefs.explicit_fields()
        overwrite = explicit.pop("overwrite", False)
        explicit.pop("dry_run", None)
        comparison = Comparison(explicit, _methods(FLAGS.methods), _seeds(FLAGS.seeds),
                                FLAGS.compare_dir, sweep=_sweep(FLAGS.sweep, explicit))
        command = "python -m idn_tf.compare " + " ".join(
            a for a in sys.argv[1:] if a not in ("--overwrite", "--dry_run"))
        if FLAGS.dry_run:
            print(json.dumps({f"{m}-{s}": c.used_dict() for (m, s), c in comparison.configs.items()},
                             indent=2))
            return 0
        result = run(comparison, overwrite=overwrite, command=command)
    failed = [c for c in result["cells"] if c["status"] == "failed"]
    if failed:
        print(f"{len(failed)} cell(s) failed: "
              + ", ".join(f"{c['method']}-{c['seed']}" for c in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
