"""The run folder's one reuse-or-train mechanism (`RunFolder.stage`) and `RunFolder.kept`."""

import json
import os

import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib
from idn_tf.runfolder import FINETUNE_RESULTS, RunFolder, StageResult, Trained, load_array


def _folder(tmp_path, final_stage=None, **fields):
    cfg = config_lib.Config(run_dir=str(tmp_path / "run"), **fields)
    os.makedirs(cfg.run_dir, exist_ok=True)
    return RunFolder(cfg, final_stage=final_stage)


def _result(acc=0.5, monitor=None):
    return StageResult(acc, {"loss": [1.0, 0.5], "val_accuracy": [0.4, acc]},
                       {} if monitor is None else monitor)


class Calls:
    """A stage's train/save/load that record what was called."""

    def __init__(self, folder, name="weights.npy", extra=None, monitor=None):
        self.folder, self.name, self.extra, self.monitor = folder, name, extra, monitor
        self.log = []

    def train(self):
        self.log.append("train")
        # The backup exists while the stage trains; the mechanism removes it at the end.
        assert os.path.isdir(self.folder.backup_dir("s"))
        return Trained("classifier", _result(monitor=self.monitor), extra=self.extra,
                       value=np.arange(3.0))

    def save(self, trained):
        self.log.append("save")
        assert not os.path.isfile(self.folder.path("s.json"))  # the json comes last
        self.folder.write(artifacts.write_npy, self.name, trained.value)

    def load(self, result, extra):
        self.log.append("load")
        return Trained(None, result, extra=extra, value=self.folder.array(self.name, 3))

    def run(self, **kwargs):
        os.makedirs(self.folder.backup_dir("s"), exist_ok=True)
        return self.folder.stage("s", "stage s", (self.name,), self.train, self.save, self.load,
                                 training="stage s: training", **kwargs)


def test_a_stage_trains_writes_its_files_then_its_json_and_drops_its_backup(tmp_path, capsys):
    folder = _folder(tmp_path)
    calls = Calls(folder, extra={"tau": 0.25}, monitor={"epoch": [1]})
    trained = calls.run()
    assert calls.log == ["train", "save"] and trained.classifier == "classifier"
    saved = json.loads(open(folder.path("s.json")).read())
    assert saved == {"test_accuracy": 0.5, "history": {"loss": [1.0, 0.5],
                     "val_accuracy": [0.4, 0.5]}, "monitor": {"epoch": [1]},
                     "extra": {"tau": 0.25}}
    assert not os.path.exists(folder.backup_dir("s"))
    assert "== stage s: training" in capsys.readouterr().out


def test_a_finished_stage_is_loaded_with_its_saved_result(tmp_path, capsys):
    folder = _folder(tmp_path)
    Calls(folder, extra={"tau": 0.25}).run()
    again = Calls(folder)
    trained = again.run()
    assert again.log == ["load"]
    assert trained.result == _result() and trained.extra == {"tau": 0.25}
    np.testing.assert_array_equal(trained.value, [0.0, 1.0, 2.0])
    assert f"== stage s: reusing {folder.path('weights.npy')}" in capsys.readouterr().out


def test_a_stage_missing_a_file_or_under_overwrite_trains_again(tmp_path):
    folder = _folder(tmp_path)
    Calls(folder).run()
    os.remove(folder.path("weights.npy"))
    calls = Calls(folder)
    calls.run()
    assert calls.log == ["train", "save"]
    overwrite = _folder(tmp_path, overwrite=True)
    calls = Calls(overwrite)
    calls.run()
    assert calls.log == ["train", "save"]


def test_no_extra_and_no_monitor_leave_their_keys_out(tmp_path):
    folder = _folder(tmp_path)
    calls = Calls(folder)
    calls.train = lambda: Trained("c", StageResult(0.5, {"loss": [1.0]}, None))
    calls.save = lambda trained: folder.write(artifacts.write_npy, "weights.npy", np.zeros(3))
    calls.run()
    assert set(json.loads(open(folder.path("s.json")).read())) == {"test_accuracy", "history"}
    # Read back, a missing monitor is refused unless it is optional (older stage-1 files).
    with pytest.raises(artifacts.RunDirError, match="s.json is damaged"):
        Calls(folder).run()
    assert Calls(folder).run(optional_monitor=True).result.monitor == {}


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"history": {}}'])
def test_a_damaged_stage_json_is_one_error_naming_it(tmp_path, damage):
    folder = _folder(tmp_path)
    Calls(folder).run()
    with open(folder.path("s.json"), "w") as f:
        f.write(damage)
    with pytest.raises(artifacts.RunDirError, match=r"s\.json is damaged .*--overwrite"):
        Calls(folder).run()


def test_a_damaged_array_is_one_error_naming_it(tmp_path):
    folder = _folder(tmp_path)
    Calls(folder).run()
    np.save(folder.path("weights.npy"), np.zeros(4))  # the wrong shape
    with pytest.raises(artifacts.RunDirError, match=r"weights\.npy is damaged \(shape \(4,\)"):
        Calls(folder).run()


def test_training_the_final_stage_again_drops_the_fine_tuning(tmp_path):
    folder = _folder(tmp_path, final_stage="s")
    for name in ("finetune.json", "finetuned.weights.h5", "results.json"):
        with open(folder.path(name), "w") as f:
            f.write("{}")
    Calls(folder).run()
    assert not any(os.path.exists(folder.path(n)) for n in FINETUNE_RESULTS)
    other = _folder(tmp_path / "other", final_stage="t")
    with open(other.path("finetune.json"), "w") as f:
        f.write("{}")
    Calls(other).run()  # not the final stage: the fine-tuning stays
    assert os.path.isfile(other.path("finetune.json"))


def _backup_epoch(folder, stage, epoch):
    """A complete backup of `epoch` epochs, as callbacks.Backup leaves it."""
    path = os.path.join(folder.backup_dir(stage), f"epoch-{epoch:06d}")
    os.makedirs(path)
    for name in ("model.weights.h5", "state.json"):
        with open(os.path.join(path, name), "w") as f:
            f.write("{}")


def test_kept_makes_a_value_unless_its_stage_resumes(tmp_path):
    from idn_tf import callbacks
    folder = _folder(tmp_path)
    made = []

    def make():
        made.append(1)
        return np.full(2, float(len(made)))

    kept = lambda: folder.kept("t.npy", "s", make, np.load, artifacts.write_npy)  # noqa: E731
    np.testing.assert_array_equal(kept(), [1.0, 1.0])
    np.testing.assert_array_equal(kept(), [2.0, 2.0])  # no backup: made again
    _backup_epoch(folder, "s", 3)
    if callbacks.Backup.latest(folder.backup_dir("s"))[0] != 3:
        pytest.fail("the test's backup is not one callbacks.Backup recognises")
    assert folder.resuming("s")
    np.testing.assert_array_equal(kept(), [2.0, 2.0])  # resumed: the value it started with
    assert len(made) == 2


def test_other_workers_write_nothing(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    folder.is_chief = False
    folder.write(artifacts.write_npy, "x.npy", np.zeros(1))
    assert not os.path.exists(folder.path("x.npy"))


def test_load_array_checks_the_shape(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((2, 3)))
    assert load_array(path, 2, 3).shape == (2, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        load_array(path, 3, 2)
