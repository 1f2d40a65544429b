"""python -m idn_tf.compare: several methods side by side on the same noisy labels.

    python -m idn_tf.compare --dataset=digits --noise=ccn --noise_rate=0.4 \\
        --methods=idn,ce,forward,bootstrap_soft,bootstrap_hard,ldmi,coteaching,tanaka,pencil \
        --seeds=0,1,2,3,4

Every other flag is `idn_tf.train`'s and applies to every cell. For each seed the
observed labels are made once, in <compare_dir>/labels/seed-<k>.npz, and copied
into each (method, seed) cell's run folder, <compare_dir>/<method>-<k>/, as its
noisy_labels.npz: every method of a seed trains on exactly those labels
(docs/method.md §5). The cells run one after another in this process, each as a
`runner.run`, so each
keeps its run folder's behaviour (restart, backups, TensorBoard, results.json).
A cell whose results.json was written with the same configuration is skipped; a
cell killed part-way resumes from its last epoch. Cells of a seed that train the
same stage 1 (those whose `Method.needs_stage1`: the method, CE, Forward with an
estimated T, L_DMI, Co-teaching with an estimated τ) share it: the first one trains
it, the others start from a copy of its files. After every cell, comparison.md (a table
like the paper's: mean ± std of the test accuracy over the seeds) and
comparison.json are written again.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

from idn_tf import artifacts, cli, flagdefs, inputs, methods, runner
from idn_tf.config import RATE_NOISES, ConfigError, resolve, stage1_part

flags.DEFINE_list("methods", list(methods.names()),
                  f"Methods to compare: any of {', '.join(methods.names())}.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds: one set of noisy labels each.")
flags.DEFINE_string("compare_dir", "",
                    "Folder of the comparison (cells, labels, comparison.md/.json); default "
                    "comparisons/<the run folders' name without method and seed>.")

FLAGS = flags.FLAGS

# Flags a comparison sets for each cell itself.
CELL_FLAGS = ("method", "seed", "run_dir", "model_name")
STAGE1_FILES = ("stage1.json", "psi.npy", "stage1.weights.h5")
STAGE1_OPTIONAL = ("stage1.selected.npz",)  # with a validation split


class Comparison:
    """The cells of one comparison: configurations, folders, labels and results."""

    def __init__(self, explicit, methods, seeds, compare_dir=""):
        self.explicit = dict(explicit)
        self.methods = list(methods)
        self.seeds = list(seeds)
        first = resolve({**self.explicit, "seed": self.seeds[0]})
        if first.strategy == "multi_worker":
            raise ConfigError("--strategy=multi_worker: a comparison runs in one process; run "
                              "its cells with python -m idn_tf.train on the cluster instead")
        self.dir = compare_dir or os.path.join("comparisons", first.setting_name())
        self.configs = {(m, s): self._cell_config(m, s) for s in self.seeds for m in self.methods}

    def _cell_config(self, method, seed):
        name = f"{method}-{seed}"
        cell = {**self.explicit, "method": method, "seed": seed,
                "run_dir": os.path.join(self.dir, name),
                "model_name": f"{os.path.basename(os.path.abspath(self.dir))}-{name}"}
        if "export_dir" not in self.explicit:
            cell["export_dir"] = ""  # a comparison exports only when asked to
        try:
            return resolve(cell)
        except ConfigError as e:
            raise ConfigError(f"{e} (in the {method} cell)") from None

    def labels_path(self, seed):
        return os.path.join(self.dir, "labels", f"seed-{seed}.npz")

    def cells(self):
        """(method, seed) in the order they run: seed by seed."""
        return [(m, s) for s in self.seeds for m in self.methods]

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
        config = self.configs[(self.methods[0], seed)]
        settings = json.dumps(config.noise_dict(), sort_keys=True)
        if os.path.isfile(path):
            with np.load(path) as saved:
                made_with = str(saved["settings"]) if "settings" in saved.files else None
            if made_with != settings:
                raise artifacts.RunDirError(
                    f"{path} was made with other noise flags ({made_with} here, {settings} "
                    "now); choose another --compare_dir or pass --overwrite")
            return path
        print(f"noisy labels for seed {seed}: {config.noise} noise", flush=True)
        artifacts.write_npz(path, settings=settings, **inputs.new_noisy_labels(config, data))
        return path

    def seed_cell(self, cell, labels_path):
        """Puts the seed's labels (and a sibling's stage 1, if one finished) into the cell."""
        config = self.configs[cell]
        os.makedirs(config.run_dir, exist_ok=True)
        target = os.path.join(config.run_dir, "noisy_labels.npz")
        if os.path.isfile(target):
            if _labels(target).tobytes() != _labels(labels_path).tobytes():
                raise artifacts.RunDirError(
                    f"{target} holds other labels than {labels_path}: the cell would not train "
                    "on the comparison's labels; delete the cell's folder or pass --overwrite")
        else:
            _copy(labels_path, target)
        if not _needs_stage1(config) or os.path.isfile(os.path.join(config.run_dir, "stage1.json")):
            return
        wanted = json.loads(json.dumps(config.stage1_dict()))
        for other in self.cells():
            sibling = self.configs[other]
            if other == cell or other[1] != cell[1] or not _needs_stage1(sibling):
                continue
            # What the sibling's folder holds, by its own config.json (an earlier
            # comparison in this folder may have had other flags).
            try:
                saved = artifacts.read_json(os.path.join(sibling.run_dir, "config.json"))
            except (OSError, ValueError):
                continue
            if not isinstance(saved, dict) or stage1_part(saved) != wanted:
                continue
            files = [os.path.join(sibling.run_dir, n) for n in STAGE1_FILES]
            if all(os.path.isfile(f) for f in files):
                print(f"stage 1 shared with {sibling.run_dir}", flush=True)
                files += [f for f in (os.path.join(sibling.run_dir, n) for n in STAGE1_OPTIONAL)
                          if os.path.isfile(f)]
                for f in sorted(files, key=lambda f: f.endswith(".json")):  # the json last
                    _copy(f, os.path.join(config.run_dir, os.path.basename(f)))
                return


def _needs_stage1(config):
    return methods.get(config.method).needs_stage1(config)


def _labels(path):
    with np.load(path) as saved:
        return np.asarray(saved["labels"])


def _copy(source, target):
    with open(source, "rb") as f:
        artifacts.write_bytes(target, f.read())


def accuracy(results):
    """The test accuracy of a cell's final classifier (after any clean fine-tuning)."""
    tuned = results.get("finetuned_test_accuracy")
    return results["method_test_accuracy"] if tuned is None else tuned


def summary(comparison, outcomes):
    """comparison.json's content from the cells' outcomes ({cell: results dict or error})."""
    cells, by_method = [], {m: [] for m in comparison.methods}
    for cell in comparison.cells():
        method, seed = cell
        config = comparison.configs[cell]
        entry = {"method": method, "seed": seed, "run_dir": config.run_dir}
        outcome = outcomes.get(cell)
        if isinstance(outcome, dict):
            entry.update(status="done", test_accuracy=accuracy(outcome),
                         ce_test_accuracy=outcome.get("ce_test_accuracy"),
                         noise_rate_actual=outcome.get("noise_rate_actual"),
                         labels_sha256=_sha256(os.path.join(config.run_dir, "noisy_labels.npz")))
            by_method[method].append(entry["test_accuracy"])
        elif outcome is not None:
            entry.update(status="failed", error=str(outcome))
        else:
            entry.update(status="pending")
        cells.append(entry)
    first = comparison.configs[comparison.cells()[0]]
    per_seed = {}  # one actual noise rate per seed (all its cells share the labels)
    for c in cells:
        if c.get("noise_rate_actual") is not None:
            per_seed.setdefault(c["seed"], c["noise_rate_actual"])
    rates = list(per_seed.values())
    return {
        "dataset": first.dataset, "noise": first.noise,
        "noise_rate": first.noise_rate if first.noise in RATE_NOISES else None,
        "methods": comparison.methods, "seeds": comparison.seeds,
        "flags": comparison.explicit,
        "noise_rate_actual": _stats(rates),
        "summary": {m: {**_stats(v), "test_accuracies": v} for m, v in by_method.items()},
        "cells": cells,
    }


def _stats(values):
    """mean and std (numpy's, ddof 0: the spread of these seeds) and n; NaN when empty."""
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def _sha256(path):
    import hashlib
    return hashlib.sha256(_labels(path).astype(np.int64).tobytes()).hexdigest()


def markdown(result, command=""):
    """comparison.md: one row per method, mean ± std test accuracy (%) over the seeds."""
    title = f"{result['dataset']}, {result['noise']}"
    if result["noise_rate"] is not None:
        title += f" r = {result['noise_rate']:g}"
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [f"# {title}: test accuracy (%)", "",
             f"Mean ± std (numpy, ddof 0) over seeds {seeds}; every method of a seed trained on "
             "the same noisy labels."]
    wrong = result["noise_rate_actual"]
    if wrong["n"]:
        lines.append(f"Wrong training labels: {100 * wrong['mean']:.2f} ± {100 * wrong['std']:.2f} %.")
    lines += ["", "| method | test accuracy | per seed | seeds done |", "|---|---|---|---|"]
    # The best mean in bold, among the methods with the most seeds done.
    most = max(s["n"] for s in result["summary"].values())
    done = {m: s for m, s in result["summary"].items() if s["n"] == most and most}
    best = max((s["mean"] for s in done.values()), default=None)
    for method in result["methods"]:
        stats = result["summary"][method]
        per_seed = {c["seed"]: c for c in result["cells"] if c["method"] == method}
        seeds_text = ", ".join(
            f"{100 * per_seed[s]['test_accuracy']:.2f}" if per_seed[s]["status"] == "done"
            else per_seed[s]["status"] for s in result["seeds"])
        if stats["n"]:
            cell = cell_text(stats)
            if method in done and stats["mean"] == best and len(done) > 1:
                cell = f"**{cell}**"
        else:
            cell = "–"
        lines.append(f"| {methods.get(method).title} | {cell} | {seeds_text} | "
                     f"{stats['n']}/{len(result['seeds'])} |")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def cell_text(stats):
    """A table cell: mean ± std in percent, two decimals."""
    return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def write_reports(comparison, outcomes, command):
    result = summary(comparison, outcomes)
    artifacts.write_json(os.path.join(comparison.dir, "comparison.json"), result)
    artifacts.write_text(os.path.join(comparison.dir, "comparison.md"), markdown(result, command))
    return result


def run(comparison, overwrite=False, command=""):
    """Runs every cell not finished yet; returns comparison.json's content."""
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
        method, seed = cell
        head = f"[{number}/{len(cells)}] {method}, seed {seed}"
        if outcomes[cell] is not None:
            print(f"{head}: finished ({100 * accuracy(outcomes[cell]):.2f}%), skipped", flush=True)
            continue
        print(f"\n{'=' * 8} {head}: {comparison.configs[cell].run_dir}", flush=True)
        cell_start = time.time()
        labels_path = comparison.prepare_labels(seed, data)
        comparison.seed_cell(cell, labels_path)
        keras.backend.clear_session()
        try:
            outcomes[cell] = runner.run(comparison.configs[cell], data=data)
        except FloatingPointError as e:  # a diverged cell: the others still run
            outcomes[cell] = e
            print(f"{head}: failed: {e}", flush=True)
        except artifacts.RunDirError as e:  # in the comparison's terms: its folder, its flags
            raise artifacts.RunDirError(str(e).replace(
                "choose another --run_dir or pass --overwrite",
                "choose another --compare_dir, delete that cell's folder, or pass --overwrite "
                "(which starts the whole comparison again)")) from None
        else:
            print(f"{'=' * 8} {head}: {100 * accuracy(outcomes[cell]):.2f}% "
                  f"({time.time() - cell_start:.0f} s)", flush=True)
        write_reports(comparison, outcomes, command)
    result = write_reports(comparison, outcomes, command)
    print(f"\n{markdown(result)}\n{comparison.dir}/comparison.md, comparison.json "
          f"({time.time() - start:.0f} s)")
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
                                FLAGS.compare_dir)
        command = "python -m idn_tf.compare " + " ".join(
            a for a in sys.argv[1:] if a not in ("--overwrite", "--dry_run"))
        if FLAGS.dry_run:
            print(json.dumps({f"{m}-{s}": c.to_dict() for (m, s), c in comparison.configs.items()},
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
