"""Killed and resumed runs of `python -m idn_tf.train`, for the resume tests.

`kill_and_resume(cases)` starts every case's command, SIGKILLs each once its marker (a
backup folder, e.g. <run>/backup/stage1/epoch-000003) appears, then starts every command
again, as a user would after a crash. The cases run side by side, and so do the reruns
(most of a short run is Python and TensorFlow starting up); `alongside` commands (e.g. the
uninterrupted runs the resumed ones are compared with) run next to the first ones.
"""

import dataclasses
import os
import signal
import subprocess
import time

import cli as cli_lib


@dataclasses.dataclass(frozen=True)
class Case:
    cwd: object      # folder the command runs in (pathlib.Path)
    args: tuple      # arguments of python -m idn_tf.train
    marker: object   # path whose appearance stops the first run


@dataclasses.dataclass(frozen=True)
class Resumed:
    killed: bool     # the first run was stopped at its marker, before writing results.json
    returncode: int  # of the rerun
    output: str      # the rerun's stdout and stderr


def _start(cwd, args, log):
    out = open(log, "w")
    return out, cli_lib.start("idn_tf.train", *args, cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT)


def _finish(started, timeout):
    """{key: (returncode, output)} of processes started by `_start`."""
    done = {}
    for key, (out, process, log) in started.items():
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        out.close()
        done[key] = code, open(log).read()
    return done


def kill_and_resume(cases, alongside=None, run_dir="run", timeout=600):
    """({key: Resumed} of `cases`, {key: (returncode, output)} of `alongside`).

    cases: {key: Case}; alongside: {key: (cwd, args)}, run to the end, each in a cwd of its
    own. A case's run folder is `run_dir` under its cwd (where results.json tells whether
    the kill came too late). Every command's output is kept in its cwd (first.log,
    rerun.log, alongside.log).
    """
    others = {key: (out, process, os.path.join(cwd, "alongside.log"))
              for key, (cwd, args) in (alongside or {}).items()
              for out, process in [_start(cwd, args, os.path.join(cwd, "alongside.log"))]}
    first = {key: _start(case.cwd, case.args, os.path.join(case.cwd, "first.log"))
             for key, case in cases.items()}
    killed, deadline = {}, time.time() + timeout
    try:
        while len(killed) < len(cases) and time.time() < deadline:
            for key, case in cases.items():
                process = first[key][1]
                if key in killed:
                    continue
                if os.path.isdir(case.marker):
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    killed[key] = True
                elif process.poll() is not None:  # ended (or failed) before the marker
                    killed[key] = False
            time.sleep(0.01)
    finally:
        for key, (out, process) in first.items():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
            out.close()
    stopped = {key: killed.get(key, False)
               and not os.path.exists(os.path.join(case.cwd, run_dir, "results.json"))
               for key, case in cases.items()}
    reruns = {key: (*_start(case.cwd, case.args, os.path.join(case.cwd, "rerun.log")),
                    os.path.join(case.cwd, "rerun.log"))
              for key, case in cases.items()}
    finished = _finish(reruns, timeout)
    resumed = {key: Resumed(stopped[key], *finished[key]) for key in cases}
    return resumed, _finish(others, timeout)
