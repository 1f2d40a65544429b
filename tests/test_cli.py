"""The commands' shared plumbing: one `error:` line and exit code 2 for a user error."""

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
