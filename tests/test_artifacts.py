"""The run folder (idn_tf/artifacts.py): atomic writes, JSON without NaN, the flagfile, and
prepare_run_dir's decisions (create, continue, take over, refuse, overwrite).

Expected file contents are written out here by hand; every refusal is checked to have
left the folder exactly as it was (bytes and modification times).
"""

import dataclasses
import errno
import json
import math
import os

import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib

TINY = dict(epochs=3, eta_start_epoch=2, eta_every=1, lr_decay_epochs=(2,), verbose=0,
            audit_folds=2)


def state(folder):
    """{relative path: (bytes or None for a folder, mtime in ns)} of everything under folder."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            content = None if os.path.isdir(path) else open(path, "rb").read()
            out[os.path.relpath(path, folder)] = (content, os.stat(path).st_mtime_ns)
    return out


def temporaries(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------
# Atomic writes


def test_writers_round_trip(tmp_path):
    artifacts.write_json(tmp_path / "a" / "b.json", {"x": [1, 2.5], "y": "é"})  # makes a/
    assert artifacts.read_json(tmp_path / "a" / "b.json") == {"x": [1, 2.5], "y": "é"}
    artifacts.write_text(tmp_path / "t.txt", "line\nη\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "line\nη\n"
    artifacts.write_bytes(str(tmp_path / "raw.bin"), b"\x00\xff")
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\xff"
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    artifacts.write_npy(tmp_path / "a.npy", array)
    loaded = np.load(tmp_path / "a.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)
    artifacts.write_npz(tmp_path / "b.npz", labels=np.array([3, 1]), recipe=np.array("{}"))
    with np.load(tmp_path / "b.npz") as saved:
        assert sorted(saved.files) == ["labels", "recipe"]
        np.testing.assert_array_equal(saved["labels"], [3, 1])
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "a") == []


def test_json_is_indented_sorted_and_ends_with_a_newline(tmp_path):
    artifacts.write_json(tmp_path / "r.json", {"b": 1, "a": {"d": [1, 2], "c": True}})
    assert (tmp_path / "r.json").read_text() == (
        '{\n  "a": {\n    "c": true,\n    "d": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}\n')


def test_nan_and_infinities_are_written_as_null(tmp_path):
    value = {"rate": float("nan"), "curve": [0.5, float("inf"), -math.inf],
             "pair": (np.float64("nan"), 2), "nested": {"x": [{"y": float("-inf")}]}, "n": 3}
    artifacts.write_json(tmp_path / "r.json", value)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(constant):
        raise AssertionError(f"{constant} in the file")

    assert json.loads(text, parse_constant=refuse) == {
        "rate": None, "curve": [0.5, None, None], "pair": [None, 2],
        "nested": {"x": [{"y": None}]}, "n": 3}
    assert value["rate"] != value["rate"]  # the caller's object is left as it was


def test_unserialisable_json_raises_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    artifacts.write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        artifacts.write_json(path, {"bad": object()})
    assert artifacts.read_json(path) == {"ok": 1}
    assert temporaries(tmp_path) == []


class _FailingModel:
    """Stands in for a Keras model whose save_weights fails half-way."""

    def __init__(self, error):
        self.error = error

    def save_weights(self, path):
        with open(path, "wb") as f:
            f.write(b"half a weights file")
        raise self.error


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   KeyboardInterrupt()])
def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_intact(tmp_path, error):
    path = tmp_path / "classifier.weights.h5"
    path.write_bytes(b"the previous weights")
    with pytest.raises(type(error)):
        artifacts.write_weights(str(path), _FailingModel(error))
    assert path.read_bytes() == b"the previous weights"
    assert sorted(os.listdir(tmp_path)) == ["classifier.weights.h5"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(OSError):
        artifacts.write_text(str(tmp_path / "taken"), "text")
    assert sorted(os.listdir(tmp_path)) == ["taken"] and os.listdir(tmp_path / "taken") == []


def test_written_files_get_the_umasks_mode_not_mkstemps(tmp_path):
    old = os.umask(0o027)
    try:
        artifacts.write_text(str(tmp_path / "a.txt"), "x")
        artifacts.write_npy(str(tmp_path / "a.npy"), np.zeros(2))
    finally:
        os.umask(old)
    for name in ("a.txt", "a.npy"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o640, name  # 0o666 & ~0o027
    folder = tmp_path / "made_private"
    folder.mkdir(mode=0o700)
    old = os.umask(0o022)
    try:
        artifacts.default_mode(str(folder))
    finally:
        os.umask(old)
    assert os.stat(folder).st_mode & 0o777 == 0o755


# ---------------------------------------------------------------------------------------
# flags.txt


def test_flags_text_one_line_per_field_sorted():
    text = artifacts.flags_text({"seed": 0, "lr": 0.05, "run_dir": "runs/x", "deterministic": True,
                                 "overwrite": False, "lr_decay_epochs": (2, 4),
                                 "methods": ["idn", "ce"], "export_dir": "", "no_decay": ()})
    assert text == ("--deterministic\n--export_dir=\n--lr=0.05\n--lr_decay_epochs=2,4\n"
                    "--methods=idn,ce\n--no_decay=\n--nooverwrite\n--run_dir=runs/x\n--seed=0\n")


def test_flags_text_of_a_config_parses_back_to_it(tmp_path):
    from idn_tf import flagdefs
    cfg = config_lib.Config(run_dir=str(tmp_path / "run"), noise="ccn", noise_rate=0.25,
                            deterministic=True, **TINY)
    (tmp_path / "flags.txt").write_text(artifacts.flags_text(cfg.to_dict()))
    flagdefs.FLAGS.unparse_flags()
    flagdefs.FLAGS(["train", f"--flagfile={tmp_path / 'flags.txt'}"])
    try:
        assert flagdefs.config_from_flags() == cfg
    finally:
        flagdefs.FLAGS.unparse_flags()


# ---------------------------------------------------------------------------------------
# remove


def test_remove_deletes_files_folders_and_dangling_links_and_skips_the_missing(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "tb" / "stage1").mkdir(parents=True)
    (tmp_path / "tb" / "stage1" / "events").write_bytes(b"e")
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    (tmp_path / "mine.txt").write_text("kept")
    artifacts.remove(str(tmp_path), ["a.json", "tb", "link", "missing.npy"])
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


def test_remove_that_fails_is_one_line_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "eta.npy").write_bytes(b"x")

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "remove", refuse)
    with pytest.raises(artifacts.RunDirError) as caught:
        artifacts.remove(str(tmp_path), ["eta.npy"])
    assert str(caught.value) == f"--run_dir={tmp_path}: cannot delete eta.npy (Permission denied)"


# ---------------------------------------------------------------------------------------
# prepare_run_dir


def test_a_new_folder_gets_the_settings(tmp_path):
    run_dir = str(tmp_path / "deep" / "run")
    artifacts.prepare_run_dir(run_dir, {"epochs": 3, "lr_decay_epochs": (2,)},
                              {"epochs": 3, "verbose": 0, "deterministic": False})
    assert sorted(os.listdir(run_dir)) == ["config.json", "flags.txt"]
    # Tuples are saved as JSON lists.
    assert artifacts.read_json(os.path.join(run_dir, "config.json")) == {
        "epochs": 3, "lr_decay_epochs": [2]}
    assert open(os.path.join(run_dir, "flags.txt")).read() == (
        "--nodeterministic\n--epochs=3\n--verbose=0\n")


def test_the_same_configuration_continues_and_keeps_the_results(tmp_path):
    run_dir = str(tmp_path / "run")
    artifacts.prepare_run_dir(run_dir, {"epochs": 3, "lr_decay_epochs": (2,)}, {})
    (tmp_path / "run" / "psi.npy").write_bytes(b"psi")
    (tmp_path / "run" / "backup").mkdir()
    artifacts.prepare_run_dir(run_dir, {"epochs": 3, "lr_decay_epochs": [2]}, {"verbose": 1})
    assert (tmp_path / "run" / "psi.npy").read_bytes() == b"psi"
    assert (tmp_path / "run" / "flags.txt").read_text() == "--verbose=1\n"


def test_other_flags_are_refused_naming_three_changes_and_nothing_is_touched(tmp_path):
    run_dir = str(tmp_path / "run")
    artifacts.prepare_run_dir(run_dir, {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, {})
    (tmp_path / "run" / "stage1.json").write_text("{}")
    before = state(run_dir)
    with pytest.raises(artifacts.RunDirError) as caught:
        artifacts.prepare_run_dir(run_dir, {"a": 1, "b": 20, "c": 30, "e": 50, "f": 6}, {})
    # Sorted by name, the first three: b, c, d (d was removed).
    assert str(caught.value) == (
        f"--run_dir={run_dir} holds a run with other flags (--b: 2 -> 20, --c: 3 -> 30, "
        "--d: 4 -> None); choose another --run_dir or pass --overwrite")
    assert state(run_dir) == before


@pytest.mark.parametrize("result", ["stage1.json", "results.json", "tanaka_labels.json",
                                    "label_audit.csv", "backup/stage2/epoch-000001"])
def test_any_result_or_a_backup_makes_the_folder_a_run(tmp_path, result):
    # A method's own files (tanaka_labels.json) count as results when the run names them.
    files = ("tanaka_labels.json",)
    run_dir = tmp_path / "run"
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 3}, {}, method_files=files)
    os.makedirs(os.path.dirname(run_dir / result), exist_ok=True)
    if result.startswith("backup/"):
        (run_dir / result).mkdir()
    else:
        (run_dir / result).write_text("x")
    with pytest.raises(artifacts.RunDirError, match="--epochs: 3 -> 4"):
        artifacts.prepare_run_dir(str(run_dir), {"epochs": 4}, {}, method_files=files)


def test_a_file_no_method_names_is_not_a_result(tmp_path):
    run_dir = tmp_path / "run"
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 3}, {})
    (run_dir / "tanaka_labels.json").write_text("x")
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 4}, {})  # taken over
    assert artifacts.read_json(run_dir / "config.json") == {"epochs": 4}


def test_an_empty_backup_folder_is_not_a_result(tmp_path):
    run_dir = tmp_path / "run"
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 3}, {})
    (run_dir / "backup").mkdir()
    (run_dir / "excluded_images.csv").write_text("path\n")  # a record, not a result
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 4}, {})
    assert artifacts.read_json(run_dir / "config.json") == {"epochs": 4}


def test_a_run_that_stopped_before_any_result_can_be_rerun_with_other_flags(tmp_path):
    run_dir = str(tmp_path / "run")
    artifacts.prepare_run_dir(run_dir, {"noise_feature_weights": "imagenet"}, {})
    # e.g. the weights download failed: nothing but the settings was written.
    artifacts.prepare_run_dir(run_dir, {"noise_feature_weights": "w.h5"}, {})
    assert artifacts.read_json(os.path.join(run_dir, "config.json")) == {
        "noise_feature_weights": "w.h5"}
    np.save(os.path.join(run_dir, "psi.npy"), np.zeros(3))  # now there is a result
    with pytest.raises(artifacts.RunDirError, match="other flags"):
        artifacts.prepare_run_dir(run_dir, {"noise_feature_weights": "imagenet"}, {})


def test_later_stage_flags_continue_the_run_without_the_later_stage(tmp_path):
    run_dir = tmp_path / "run"
    first = {"epochs": 3, "finetune_clean_epochs": 0, "finetune_lr": 0.1}
    artifacts.prepare_run_dir(str(run_dir), first, {})
    for name in ("stage1.json", "finetune.json", "finetuned.weights.h5"):
        (run_dir / name).write_text(name)
    (run_dir / "tb" / "finetune").mkdir(parents=True)
    later = ("finetune_clean_epochs", "finetune_lr")
    paths = ("finetune.json", "finetuned.weights.h5", "tb/finetune", "results.json")
    artifacts.prepare_run_dir(str(run_dir), {**first, "finetune_clean_epochs": 2}, {},
                              later_stage_fields=later, later_stage_paths=paths)
    assert sorted(os.listdir(run_dir)) == ["config.json", "flags.txt", "stage1.json", "tb"]
    assert os.listdir(run_dir / "tb") == []
    assert (run_dir / "stage1.json").read_text() == "stage1.json"
    assert artifacts.read_json(run_dir / "config.json")["finetune_clean_epochs"] == 2
    # A change of an earlier stage's flag as well: refused, nothing deleted.
    before = state(run_dir)
    with pytest.raises(artifacts.RunDirError, match="--epochs: 3 -> 4"):
        artifacts.prepare_run_dir(str(run_dir), {**first, "epochs": 4, "finetune_lr": 0.2}, {},
                                  later_stage_fields=later, later_stage_paths=paths)
    assert state(run_dir) == before


def test_overwrite_removes_the_previous_artifacts(tmp_path):
    run_dir = str(tmp_path / "run")
    cfg = config_lib.Config(run_dir=run_dir, **TINY)
    artifacts.prepare_run_dir(run_dir, cfg.semantic_dict(), cfg.to_dict())
    for name in ("psi.npy", "stage1.json", "noisy_labels.npz", "results.json"):
        (tmp_path / "run" / name).write_text("stale")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    other = dataclasses.replace(cfg, epochs=5, overwrite=True)
    artifacts.prepare_run_dir(run_dir, other.semantic_dict(), other.to_dict(), overwrite=True)
    assert sorted(os.listdir(run_dir)) == ["config.json", "flags.txt", "notes.txt"]
    assert artifacts.read_json(os.path.join(run_dir, "config.json"))["epochs"] == 5


def test_overwrite_removes_every_artifact_and_folder_a_run_writes(tmp_path):
    from idn_tf import methods
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in artifacts.RUN_ARTIFACTS + methods.run_files():
        (run_dir / name).write_text("old")
    for name in artifacts.RUN_FOLDERS:
        (run_dir / name / "sub").mkdir(parents=True)
        (run_dir / name / "sub" / "file").write_text("old")
    (run_dir / "config.json").write_text("{not json")  # damaged: overwrite does not read it
    (run_dir / "user_folder").mkdir()
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 1}, {"epochs": 1}, overwrite=True,
                              method_files=methods.run_files())
    assert sorted(os.listdir(run_dir)) == ["config.json", "flags.txt", "user_folder"]
    assert artifacts.read_json(run_dir / "config.json") == {"epochs": 1}


@pytest.mark.parametrize("content, why", [
    (b"{not json", "Expecting property name enclosed in double quotes"),
    (b"\xff\xfe{}", "codec can't decode byte"),
    (b"[1, 2]", "not a JSON object: [1, 2]"),
    (b'"' + b"x" * 100 + b'"', 'not a JSON object: "' + "x" * 39),
])
def test_a_damaged_config_next_to_results_is_refused_in_one_line(tmp_path, content, why):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_bytes(content)
    (run_dir / "psi.npy").write_bytes(b"psi")
    before = state(run_dir)
    with pytest.raises(artifacts.RunDirError) as caught:
        artifacts.prepare_run_dir(str(run_dir), {"epochs": 1}, {})
    message = str(caught.value)
    assert "\n" not in message and why in message, message
    assert message.startswith(f"{run_dir / 'config.json'} is damaged (")
    assert message.endswith("choose another --run_dir or pass --overwrite")
    assert state(run_dir) == before


def test_a_damaged_config_without_results_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{not json")
    artifacts.prepare_run_dir(str(run_dir), {"epochs": 1}, {})
    assert artifacts.read_json(run_dir / "config.json") == {"epochs": 1}


def test_a_file_as_run_dir_is_refused_and_left_alone(tmp_path):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(artifacts.RunDirError) as caught:
        artifacts.prepare_run_dir(str(tmp_path / "run"), {}, {}, overwrite=True)
    assert str(caught.value) == (f"--run_dir={tmp_path / 'run'} is a file, not a folder; "
                                 "choose another --run_dir")
    assert (tmp_path / "run").read_text() == "a file"


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    run_dir = str(tmp_path / "afile" / "run")
    with pytest.raises(artifacts.RunDirError) as caught:
        artifacts.prepare_run_dir(run_dir, {}, {})
    assert str(caught.value) == f"--run_dir={run_dir}: cannot write there (Not a directory)"


def test_run_artifacts_are_the_settings_records_and_results():
    assert artifacts.RUN_ARTIFACTS == (artifacts.RUN_SETTINGS + artifacts.RUN_RECORDS
                                       + artifacts.RUN_RESULTS)
    assert len(set(artifacts.RUN_ARTIFACTS)) == len(artifacts.RUN_ARTIFACTS)
    # A setting or record is never taken for a result (a run stopped after writing it can
    # be started again with other flags).
    assert not set(artifacts.RUN_SETTINGS + artifacts.RUN_RECORDS) & set(artifacts.RUN_RESULTS)
    assert not {os.path.dirname(n) for n in artifacts.RUN_ARTIFACTS} - {""}

