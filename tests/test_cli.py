"""The commands' shared plumbing: one `error:` line and exit code 2 for a user error,
--help, and quiet start-up and progress lines."""

import os
import subprocess
import sys

import pytest

from idn_tf import artifacts, cli
from idn_tf.data.sources import DataError
from idn_tf.errors import ConfigError

import cli as cli_lib


@pytest.mark.parametrize("error", [ConfigError("--lr: must be positive, got -1"),
                                   DataError("x.npz: no x_train"),
                                   artifacts.RunDirError("--run_dir=r holds a run"),
                                   FloatingPointError("stage1 stopped: the loss became NaN")])
def test_a_user_error_is_one_line_on_stderr_and_exit_2(error, capsys):
    with pytest.raises(SystemExit) as stop:
        with cli.user_errors():
            raise error
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {error}\n" and captured.out == ""


def test_other_errors_pass_through():
    with pytest.raises(KeyError):
        with cli.user_errors():
            raise KeyError("a bug, with its traceback")


def test_a_peers_failure_is_one_line_only_in_a_multi_worker_run(capsys):
    class UnavailableError(Exception):  # what TensorFlow raises when a peer leaves
        pass

    with pytest.raises(UnavailableError):
        with cli.user_errors(multi_worker=False):
            raise UnavailableError("socket closed")
    with pytest.raises(SystemExit) as stop:
        with cli.user_errors(multi_worker=True):
            raise UnavailableError("socket closed")
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: the cluster stopped: another worker")


def test_a_bad_flag_value_is_one_line(capsys):
    from idn_tf import flagdefs
    with pytest.raises(SystemExit) as stop:
        try:
            cli.parse_flags(["prog", "--epochs=abc"])
        finally:
            flagdefs.FLAGS.unparse_flags()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "epochs" in err and err.count("\n") == 1


def test_every_flag_of_train_is_in_one_help_section():
    from idn_tf import flagdefs
    names = [name for _, section in flagdefs.help_sections() for name in section]
    defined = [flag.name for flag in flagdefs.FLAGS.get_flags_for_module("idn_tf.flagdefs")]
    assert sorted(names) == sorted(defined) and len(set(names)) == len(names)


@pytest.mark.e2e
@pytest.mark.parametrize("module, own", [("idn_tf.train", ()), ("idn_tf.compare", ("--methods",
                                                                                   "--seeds"))])
def test_help_is_the_usage_and_the_flags_by_section(module, own, tmp_path):
    from idn_tf import flagdefs
    result = cli_lib.run(module, "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = result.stdout
    for flag in ("--epochs", "--method", "--data_dir", *own):
        assert f"\n  {flag}: " in out, flag
    # The sections in order, after the usage; absl's own flags only with --helpfull.
    starts = [out.index(f"\n{title}:\n") for title, _ in flagdefs.help_sections()]
    assert starts == sorted(starts) and out.index("\n  --") > out.index("python -m " + module)
    assert "--verbosity" not in out and "--logtostderr" not in out
    assert "run(config)" not in out and "preflight" not in out  # not the code's own notes


# TensorFlow's start-up lines (TF 2.21 writes them from C++ while it is imported).
TF_START_UP = ("All log messages before absl::InitializeLog()", "oneDNN custom operations",
               "cpu_feature_guard")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A one-epoch digits run of the real command (stage 1, stage 2, the report) at the
    default verbosity, in the environment a user has: no TF_CPP_MIN_LOG_LEVEL, stdout
    unbuffered so that the lines interleave as on a terminal; its stdout and stderr as one.
    Its learning rate would decay after epoch 1, the last."""
    environment = {k: v for k, v in cli_lib.env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "idn_tf.train", "--epochs=1", "--lr_decay_epochs=1",
         "--audit_folds=0", "--export_dir=", "--run_dir=run"],
        cwd=tmp_path_factory.mktemp("short_run"), env={**environment, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


@pytest.mark.e2e
def test_tensorflows_start_up_lines_are_hidden(short_run):
    assert short_run.returncode == 0, short_run.stdout[-3000:]
    lines = [line for line in short_run.stdout.splitlines() if line.strip()]
    assert lines[0] == "== data: digits"
    assert not [line for line in lines if any(notice in line for notice in TF_START_UP)]


@pytest.mark.e2e
def test_every_line_fits_in_120_columns(short_run):
    lines = short_run.stdout.splitlines()
    assert any("val_accuracy" in line for line in lines)  # the epoch lines are there
    assert max(map(len, lines)) <= 120, max(lines, key=len)


@pytest.mark.parametrize("level, shown", [("2", False), ("0", True)])
def test_the_start_up_lines_follow_tf_cpp_min_log_level(level, shown):
    # As TensorFlow writes them: absl's notice, then INFO lines, before it reads the level.
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR\nI0000 00:00:1796687155.211139   16703 port.cc:153] oneDNN custom "
            "operations are on. …\nE0000 00:00:1796687155.3   16703 x.cc:1] an error\n"
            "a Python warning\n")
    hidden = cli.QuietImport(level).hidden
    kept = [line for line in text.splitlines() if not hidden(line)]
    assert kept == (text.splitlines() if shown else ["E0000 00:00:1796687155.3   16703 x.cc:1] "
                                                      "an error", "a Python warning"])


def test_the_filter_writes_back_what_it_keeps(capfd):
    with cli.stderr_without(lambda line: line.startswith("drop")):
        os.write(2, b"drop me\nkeep me\ndrop me too\nand me\n")
    assert capfd.readouterr().err == "keep me\nand me\n"


@pytest.mark.e2e
def test_a_decay_after_the_last_epoch_is_one_warning_before_training(short_run):
    lines = short_run.stdout.splitlines()
    warnings = [i for i, line in enumerate(lines) if line.startswith("warning:")]
    assert len(warnings) == 1 and short_run.returncode == 0
    assert lines[warnings[0]] == ("warning: --lr_decay_epochs: the decay after epoch 1 never "
                                  "takes effect with --epochs=1")
    assert warnings[0] < lines.index("== stage 1: cross-entropy on the observed labels "
                                     "(CE baseline, ψ)")
