"""The commands' shared plumbing: one `error:` line and exit code 2 for a user error."""

import pytest

from idn_tf import artifacts, cli
from idn_tf.data.sources import DataError
from idn_tf.errors import ConfigError


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
