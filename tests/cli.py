"""Running one of the package's command-line modules as a user would, in tests."""

import os
import subprocess
import sys


def run(module, *args, cwd, timeout=600):
    """`python -m <module> <args>` in `cwd`, TensorFlow's C++ notices off; the
    CompletedProcess with text stdout and stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
