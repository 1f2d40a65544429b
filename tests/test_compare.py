"""`python -m idn_tf.compare`: cells on identical labels, the table against the cells' own
results, reruns that skip finished cells, and its flag errors."""

import json
import os
import re

import numpy as np
import pytest

from idn_tf import compare, methods
from idn_tf.data import noise, sources

import cli as cli_lib
import early

# The comparison of most tests here: its flags as fields and on the command line.
FIELDS = dict(dataset="digits", noise="ccn", noise_rate=0.4, epochs=2, lr_decay_epochs=(),
              eta_start_epoch=2, eta_every=1, verbose=0, monitor_every=1000)
METHODS, SEEDS = ["idn", "forward"], [3, 7]
ARGS = (*(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
          for k, v in FIELDS.items()),
        f"--methods={','.join(METHODS)}", f"--seeds={','.join(map(str, SEEDS))}")


def cli(*args, cwd):
    return cli_lib.run("idn_tf.compare", *args, cwd=cwd)


def compare_here(folder, methods_, seeds, overwrite=False, sweep=None, **fields):
    """`compare.run` in this process: what `python -m idn_tf.compare` runs for the flags
    `fields` (besides --methods, --seeds, --compare_dir=folder, --overwrite, --sweep).
    The tests that run the command itself check its flags and its lines of output."""
    return compare.run(compare.Comparison(fields, methods_, seeds, str(folder), sweep=sweep),
                       overwrite=overwrite)


@early.job("comparison", __name__)
def _comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    result = cli(*ARGS, "--compare_dir=cmp", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "cmp", result.stdout


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """(folder, stdout) of `python -m idn_tf.compare` with ARGS (started early)."""
    return early.result("comparison", tmp_path_factory)


def _cell_results(folder, method, seed):
    with open(folder / f"{method}-{seed}" / "results.json") as f:
        return json.load(f)


def _labels(path):
    with np.load(path) as saved:
        return saved["labels"]


@pytest.mark.e2e
def test_every_cell_of_a_seed_trains_on_the_same_labels(comparison):
    folder, _ = comparison
    digits = sources.load("digits")
    for seed in (3, 7):
        expected = noise.make_noisy_labels(digits, "ccn", 0.4, seed).labels
        np.testing.assert_array_equal(_labels(folder / "labels" / f"seed-{seed}.npz"), expected)
        for method in ("idn", "forward"):
            np.testing.assert_array_equal(
                _labels(folder / f"{method}-{seed}" / "noisy_labels.npz"), expected)
    # ... and holds out the same validation rows.
    for seed in (3, 7):
        held = [np.load(folder / f"{m}-{seed}" / "noisy_labels.npz")["validation_rows"]
                for m in ("idn", "forward")]
        assert len(held[0]) and np.array_equal(held[0], held[1])
    # Different seeds, different labels.
    assert not np.array_equal(_labels(folder / "idn-3" / "noisy_labels.npz"),
                              _labels(folder / "idn-7" / "noisy_labels.npz"))


@pytest.mark.e2e
def test_table_cells_are_the_cells_own_results(comparison):
    folder, stdout = comparison
    with open(folder / "comparison.json") as f:
        saved = json.load(f)
    table = (folder / "comparison.md").read_text()
    for method in ("idn", "forward"):
        accuracies = [_cell_results(folder, method, s)["method_test_accuracy"] for s in (3, 7)]
        mean, std = np.mean(accuracies), np.std(accuracies)
        summary = saved["summary"][method]
        assert summary["test_accuracies"] == accuracies
        assert summary["mean"] == pytest.approx(mean, abs=1e-12)
        assert summary["std"] == pytest.approx(std, abs=1e-12)
        selected = [_cell_results(folder, method, s)["method_test_accuracy_selected"]
                    for s in (3, 7)]
        best = [_cell_results(folder, method, s)["method_test_accuracy_best"] for s in (3, 7)]
        assert saved["summary"][method]["selected"]["values"] == selected
        assert saved["summary"][method]["best"]["values"] == best
        row = next(line for line in table.splitlines()
                   if line.startswith(f"| {methods.get(method).title} |"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        # selected on validation | last epoch | best epoch | per seed (selected) | seeds done
        assert cells[1:] == [f"{100 * np.mean(v):.2f} ± {100 * np.std(v):.2f}"
                             for v in (selected, accuracies, best)] + [
            ", ".join(f"{100 * a:.2f}" for a in selected), "2/2"]
    cells = {(c["method"], c["seed"]): c for c in saved["cells"]}
    assert set(cells) == {(m, s) for m in ("idn", "forward") for s in (3, 7)}
    for (method, seed), cell in cells.items():
        assert cell["status"] == "done"
        assert cell["test_accuracy"] == _cell_results(folder, method, seed)["method_test_accuracy"]
        assert cell["selected_epoch"] == _cell_results(folder, method, seed)["selected_epoch"]
    for seed in (3, 7):  # one hash of the labels per seed, whatever the method
        assert cells[("idn", seed)]["labels_sha256"] == cells[("forward", seed)]["labels_sha256"]
    # Progress: one line per cell as it starts and as it ends.
    for number in range(1, 5):
        assert len(re.findall(rf"\[{number}/4\] \w+, seed \d", stdout)) == 2, stdout


@pytest.mark.e2e
def test_cells_of_a_seed_share_stage_one(comparison):
    folder, stdout = comparison
    for seed in (3, 7):
        for name in ("stage1.weights.h5", "psi.npy", "stage1.json"):
            assert ((folder / f"idn-{seed}" / name).read_bytes()
                    == (folder / f"forward-{seed}" / name).read_bytes()), name
        assert (_cell_results(folder, "idn", seed)["ce_test_accuracy"]
                == _cell_results(folder, "forward", seed)["ce_test_accuracy"])
    assert stdout.count("stage 1 shared with") == 2


@pytest.mark.e2e
def test_a_rerun_skips_the_finished_cells(comparison, tmp_path, capsys):
    import shutil
    folder, _ = comparison
    copy = tmp_path / "cmp"
    shutil.copytree(folder, copy)  # modification times kept
    results = sorted(copy.glob("*/results.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    capsys.readouterr()
    compare_here(copy, METHODS, SEEDS, **FIELDS)
    assert capsys.readouterr().out.count("skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in results} == before


@pytest.mark.e2e
def test_a_new_method_adds_its_cells_on_the_same_labels(comparison, tmp_path, capsys):
    """A rerun with one more method runs only its cells, on the seeds' existing labels."""
    import shutil
    folder, _ = comparison
    copy = tmp_path / "cmp"
    shutil.copytree(folder, copy)
    capsys.readouterr()
    compare_here(copy, [*METHODS, "bootstrap_hard"], [3], **FIELDS)
    assert capsys.readouterr().out.count("skipped") == 2
    np.testing.assert_array_equal(_labels(copy / "bootstrap_hard-3" / "noisy_labels.npz"),
                                  _labels(copy / "labels" / "seed-3.npz"))
    with open(copy / "comparison.json") as f:
        saved = json.load(f)
    assert saved["summary"]["bootstrap_hard"]["n"] == 1 and saved["seeds"] == [3]


@pytest.mark.e2e
def test_labels_made_with_other_noise_flags_are_refused(comparison, tmp_path):
    import shutil
    folder, _ = comparison
    shutil.copytree(folder, tmp_path / "cmp")
    args = [a if a != "--noise_rate=0.4" else "--noise_rate=0.2" for a in ARGS]
    result = cli(*args, "--compare_dir=cmp", "--methods=bootstrap_hard", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "seed-3.npz was made with other noise flags" in errors[0]
    assert not (tmp_path / "cmp" / "bootstrap_hard-3").exists()


@pytest.mark.e2e
def test_a_stage_one_trained_with_other_flags_is_not_shared(tmp_path, capsys):
    """A cell of an earlier comparison in the folder (other --epochs) keeps its stage 1 to
    itself: the new cell trains its own, and the old cell is then refused."""
    from idn_tf import artifacts
    common = dict(lr_decay_epochs=(), verbose=0, monitor_every=1000)
    compare_here(tmp_path / "cmp", ["ce"], [0], epochs=1, **common)
    capsys.readouterr()
    with pytest.raises(artifacts.RunDirError, match="ce-0 holds a run with other flags"):
        compare_here(tmp_path / "cmp", ["ldmi", "ce"], [0], epochs=2, **common)
    assert "stage 1 shared" not in capsys.readouterr().out
    with open(tmp_path / "cmp" / "ldmi-0" / "stage1.json") as f:
        assert len(json.load(f)["history"]["loss"]) == 2


@pytest.mark.e2e
def test_overwrite_starts_the_comparison_again(tmp_path):
    common = ("--methods=bootstrap_hard", "--seeds=0", "--epochs=1", "--lr_decay_epochs=",
              "--verbose=0", "--monitor_every=1000", "--compare_dir=cmp")
    # The first comparison in this process (`compare.run` of `common`), the second the command.
    compare_here(tmp_path / "cmp", ["bootstrap_hard"], [0], epochs=1, lr_decay_epochs=(),
                 verbose=0, monitor_every=1000)
    (tmp_path / "cmp" / "other").mkdir()  # not the comparison's: left alone
    result = cli(*common, "--noise_rate=0.2", "--noise=ccn", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 finished already" in result.stdout
    assert (tmp_path / "cmp" / "other").is_dir()
    with open(tmp_path / "cmp" / "bootstrap_hard-0" / "config.json") as f:
        assert json.load(f)["noise"] == "ccn"
    assert "--overwrite" not in (tmp_path / "cmp" / "comparison.md").read_text()


FRESH_INTERPRETER = {("--strategy=multi_worker",), ("--seeds=1,a",)}


@pytest.mark.e2e
@pytest.mark.parametrize("args, expect", [
    (("--strategy=multi_worker",), "--strategy=multi_worker: a comparison runs in one process"),
    (("--method=ce",), "--method: set per cell"),
    (("--seed=1",), "--seed: set per cell"),
    (("--run_dir=x",), "--run_dir: set per cell"),
    (("--methods=idn,bogus",), "--methods: unknown method 'bogus'"),
    (("--methods=idn,idn",), "--methods: each method once"),
    (("--seeds=1,a",), "--seeds: expected comma-separated integers"),
    (("--seeds=1,1",), "--seeds: give one or more distinct seeds"),
    (("--epochs=0",), "--epochs"),
    (("--val_fraction=0.7",), "--val_fraction: must be in [0, 0.5]"),
    (("--sweep=bogus=1,2",), "--sweep: expected FLAG=v1,v2,..."),
    (("--sweep=eta_lr",), "--sweep: expected FLAG=v1,v2,..."),
    (("--sweep=eta_lr=0.1,fast",), "--sweep: eta_lr takes float values"),
    (("--sweep=epochs=1.5,2",), "--sweep: epochs takes int values"),
    (("--sweep=eta_lr=0.1,0.1",), "--sweep: give distinct values"),
    (("--sweep=arch=1,2",), "--sweep: arch takes one of small_cnn"),  # a choice flag
    (("--sweep=deterministic=true,false",), "--sweep: deterministic cannot be swept"),
    (("--sweep=seed=1,2",), "--sweep: seed cannot be swept"),
    (("--sweep=noise_rate=0.2,0.4",), "--sweep: noise_rate cannot be swept"),
    (("--sweep=eta_lr=0.1,0.3", "--eta_lr=0.5"), "--sweep: --eta_lr is given too"),
    (("--sweep=eta_lr=0.1,0.3", "--methods=ce"), "--sweep: eta_lr changes nothing"),
    (("--sweep=eta_lr=0.1,0.3", "--val_fraction=0"), "--sweep: the value is picked by validation"),
    (("--sweep=eta_lr=0.1,-1",), "--eta_lr"),
])
def test_bad_flags_are_one_error_line(tmp_path, args, expect, zygote, tmp_path_factory):
    # Two of them as a fresh interpreter, the others in a fork of one (cli.Zygote).
    if args in FRESH_INTERPRETER:
        result = cli(*args, cwd=tmp_path)
    else:
        result = zygote.run("idn_tf.compare", args, tmp_path, cli_lib.env(),
                            tmp_path_factory.mktemp("outputs"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and expect in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.e2e
def test_a_sweep_runs_one_cell_per_value_and_picks_by_validation(tmp_path, capsys):
    fields = dict(epochs=2, lr_decay_epochs=(), eta_start_epoch=2, eta_every=1, verbose=0,
                  monitor_every=1000)
    folder = tmp_path / "cmp"
    capsys.readouterr()
    compare_here(folder, ["idn", "ce"], [0], sweep=compare._sweep("eta_lr=0.1,0.9", fields),
                 **fields)
    stdout = capsys.readouterr().out
    # CE does not read eta_lr: one cell; the method one per value, all on one stage 1.
    assert sorted(p.name for p in folder.glob("*-0")) == ["ce-0", "idn-eta_lr0.1-0",
                                                         "idn-eta_lr0.9-0"]
    assert stdout.count("stage 1 shared with") == 2
    for value in (0.1, 0.9):
        with open(folder / f"idn-eta_lr{value:g}-0" / "config.json") as f:
            assert json.load(f)["eta_lr"] == value
    with open(folder / "comparison.json") as f:
        saved = json.load(f)
    validation = {v: _cell_results(folder, f"idn-eta_lr{v:g}", 0)["method_validation_accuracy"]
                  for v in (0.1, 0.9)}
    # The higher validation accuracy wins, the first value on a tie.
    assert saved["sweep"]["chosen"] == {"idn": max(validation, key=validation.get)}
    assert saved["rows"] == ["idn-eta_lr0.1", "idn-eta_lr0.9", "ce"]
    table = (folder / "comparison.md").read_text()
    assert "| method (IDN), eta_lr = 0.1 |" in table and "| CE |" in table
    from PIL import Image
    with Image.open(folder / "sweep.png") as image:
        assert image.format == "PNG"


# ---------------------------------------------------------------------------------------
# What a comparison says: each cell's line, its labels, and comparison.md (issue 29, point 7)


def test_a_cells_line_says_which_test_accuracy_it_quotes():
    """The line quotes the figure comparison.md quotes (`compare.accuracy`) and names it."""
    selected = {"method_test_accuracy": 0.5, "method_test_accuracy_selected": 0.7125,
                "selected_epoch": 3}
    assert compare.accuracy(selected) == 0.7125
    assert compare.accuracy_text(selected) == (
        "71.25% test accuracy at the selected epoch (3, chosen on validation; last epoch 50.00%)")
    last = {"method_test_accuracy": 0.5, "method_test_accuracy_selected": None,
            "selected_epoch": None}
    assert compare.accuracy_text(last) == "50.00% test accuracy at the last epoch"
    tuned = {**selected, "finetuned_test_accuracy": 0.8, "finetuned_test_accuracy_selected": 0.9,
             "finetuned_selected_epoch": 2}
    assert compare.accuracy_text(tuned).startswith("90.00% test accuracy at the selected epoch (2,")


def _npz_labels(path, labels, **more):
    from idn_tf import artifacts
    os.makedirs(os.path.dirname(path), exist_ok=True)
    artifacts.write_npz(str(path), labels=np.asarray(labels, np.int64), **more)


def test_a_fresh_cell_gets_the_seeds_labels_and_a_restarted_one_keeps_its_own(tmp_path):
    from idn_tf import artifacts
    comparison = compare.Comparison({}, ["ce"], [0], str(tmp_path / "cmp"))
    seed_file = tmp_path / "cmp" / "labels" / "seed-0.npz"
    _npz_labels(seed_file, [1, 2, 0], validation_rows=np.array([2]), settings="{}")
    given = comparison.cell_labels(("ce", 0), str(seed_file))
    assert sorted(given) == ["labels", "validation_rows"]  # the run writes them; no settings
    np.testing.assert_array_equal(given["labels"], [1, 2, 0])
    cell_file = tmp_path / "cmp" / "ce-0" / "noisy_labels.npz"
    _npz_labels(cell_file, [1, 2, 0])
    assert comparison.cell_labels(("ce", 0), str(seed_file)) is None  # a restart: its own
    _npz_labels(cell_file, [0, 0, 0])
    with pytest.raises(artifacts.RunDirError, match="holds other labels than"):
        comparison.cell_labels(("ce", 0), str(seed_file))


def test_seed_labels_made_for_other_images_are_refused(tmp_path):
    """A class folder changed since its seed's labels were made: no cell trains on them."""
    import types
    from idn_tf import artifacts
    comparison = compare.Comparison({"dataset": "folder", "data_dir": "photos/"}, ["ce"], [0],
                                    str(tmp_path / "cmp"))
    settings = json.dumps(comparison.configs[("ce", 0)].noise_dict(), sort_keys=True)
    _npz_labels(tmp_path / "cmp" / "labels" / "seed-0.npz", [0, 1], settings=settings,
                examples_sha256="before")
    assert comparison.prepare_labels(0, types.SimpleNamespace(fingerprint=lambda: "before"))
    with pytest.raises(artifacts.RunDirError, match="made for other training images"):
        comparison.prepare_labels(0, types.SimpleNamespace(fingerprint=lambda: "after"))


def _summary(comparison, results):
    """`compare.summary` of done cells whose results.json would hold `results[(row, seed)]`."""
    for (row, seed), config in comparison.configs.items():
        _npz_labels(os.path.join(config.run_dir, "noisy_labels.npz"), [0, 1])
    return compare.summary(comparison, results)


def _results(selected, validation, **more):
    return {"method_test_accuracy": selected - 0.01, "method_test_accuracy_selected": selected,
            "method_test_accuracy_best": selected + 0.01, "method_validation_accuracy": validation,
            "selected_epoch": 4, "noise_rate_actual": float("nan"), "test_images": 74,
            "own_test_labels": True, **more}


def test_comparison_md_names_the_setting_the_test_set_and_how_to_get_the_model(tmp_path):
    folder = tmp_path / "cmp"
    comparison = compare.Comparison({"dataset": "folder", "data_dir": "photos/"},
                                    ["idn", "ce", "tanaka"], [0, 1], str(folder))
    scores = {"idn": (0.5, 0.6), "ce": (0.55, 0.6), "tanaka": (0.6, 0.5)}
    results = {(r, s): _results(scores[r][0], scores[r][1] + 0.1 * s) for r, s in comparison.cells()}
    result = _summary(comparison, results)
    lines = compare.markdown(result, comparison).splitlines()
    assert lines[0] == ("# Class folder photos/ (its own labels), 3 methods × 2 seeds: "
                        "test accuracy (%)")
    assert lines[2].startswith("Test set: 74 images with the folder's own labels, not known "
                               "to be clean")
    # Tanaka is the best (in bold); the comparison did not export: the command that does,
    # from its seed of the highest validation accuracy.
    assert "| Tanaka | **60.00 ± 0.00** |" in "\n".join(lines)
    flagfile = os.path.join(str(folder), "tanaka-1", "flags.txt")
    assert lines[-1] == (
        "To use Tanaka, the best row above: a comparison exports only with --export_dir. This "
        "exports its seed 1 (the highest validation accuracy of its seeds), reusing the "
        f"cell's training: `python -m idn_tf.train --flagfile={flagfile} "
        f"--export_dir=saved_models` (a SavedModel in saved_models/cmp-tanaka-1/).")
    # With --export_dir, the cells' own SavedModels.
    exported = compare.Comparison({"dataset": "folder", "data_dir": "photos/",
                                   "export_dir": "models"}, ["ce", "tanaka"], [0, 1],
                                  str(tmp_path / "exported"))
    result = _summary(exported, {(r, s): _results(scores[r][0], 0.5,
                                                  saved_model=f"models/x-{r}-{s}/1")
                                 for r, s in exported.cells()})
    assert compare.markdown(result, exported).splitlines()[-1] == (
        "To use Tanaka, the best row above: its SavedModels, `models/x-tanaka-0/1` (seed 0), "
        "`models/x-tanaka-1/1` (seed 1).")


@pytest.mark.parametrize("fields, wrong, title", [
    ({}, 0.268, "digits, k-means instance-dependent noise (26.8% wrong labels)"),
    ({"noise": "ccn", "noise_rate": 0.4}, 0.2, "digits, class-pair noise r = 0.4 (20.0% wrong labels)"),
    ({"dataset": "folder", "data_dir": "photos/", "noise": "symmetric"}, None,
     "Class folder photos/, symmetric noise r = 0.4"),
    ({"dataset": "cifar10_n"}, 0.4, "cifar10_n (its worst labels, 40.0% wrong labels)"),
])
def test_the_title_names_the_data_and_the_noise_in_words(fields, wrong, title):
    config = compare.resolve(fields)
    stats = {"mean": wrong, "n": 2} if wrong is not None else {"mean": float("nan"), "n": 0}
    assert compare.setting_text(config, stats) == title


@pytest.mark.e2e
def test_each_cells_line_quotes_its_figure_and_says_which(comparison):
    folder, stdout = comparison
    with open(folder / "comparison.json") as f:
        cells = json.load(f)["cells"]
    for number, cell in enumerate(cells, 1):  # in the order they ran
        # The cell's second line, as it ends (the first names its folder).
        line = re.findall(rf"=+ \[{number}/4\] {cell['row']}, seed {cell['seed']}: (.+)",
                          stdout)[-1]
        assert line.startswith(
            f"{100 * cell['test_accuracy_selected']:.2f}% test accuracy at the selected epoch "
            f"({cell['selected_epoch']}, chosen on validation; last epoch "
            f"{100 * cell['test_accuracy']:.2f}%)"), line


@pytest.mark.e2e
def test_a_fresh_cell_says_it_trains_on_the_seeds_labels(comparison):
    _, stdout = comparison
    assert "noise: reusing" not in stdout
    for seed in SEEDS:
        assert stdout.count(f"noise: the noisy labels of seed {seed}, the same for every cell "
                            "of the seed") == 2


@pytest.mark.e2e
def test_comparison_md_gives_the_command_that_exports_the_best_model(comparison, tmp_path):
    import shutil
    folder, _ = comparison
    shutil.copytree(folder, tmp_path / "cmp")  # its flags.txt name cmp/<cell>: run from here
    table = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    assert re.fullmatch(r"# digits, class-pair noise r = 0\.4 \(\d+\.\d% wrong labels\), "
                        r"2 methods × 2 seeds: test accuracy \(%\)", table[0]), table[0]
    assert table[2].startswith("Test set: 360 images with clean labels.")
    command = re.search(r"`python -m idn_tf\.train (.+)`", table[-1]).group(1).split()
    result = cli_lib.run("idn_tf.train", *command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage 1: reusing" in result.stdout  # nothing trained again
    cell = os.path.dirname(command[0].split("=", 1)[1])
    saved = json.loads((tmp_path / cell / "results.json").read_text())["saved_model"]
    assert saved.startswith(os.path.join("saved_models", f"cmp-{os.path.basename(cell)}"))
    assert (tmp_path / saved / "saved_model.pb").is_file()
