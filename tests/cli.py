"""Running one of the package's command-line modules as a user would, in tests."""

import os
import subprocess
import sys


def env():
    """The environment of a command: TensorFlow's C++ notices off."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run(module, *args, cwd, timeout=600):
    """`python -m <module> <args>` in `cwd`, TensorFlow's C++ notices off; the
    CompletedProcess with text stdout and stderr."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def start(module, *args, cwd, **popen_kwargs):
    """`python -m <module> <args>` in `cwd` started in the background (as `run`); the Popen."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env(),
                            **popen_kwargs)
