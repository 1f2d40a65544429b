"""Test-wide settings: quiet TensorFlow start-up (must precede its import), and the
checkout under test first on the path of every command the tests start."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# `python -m idn_tf.train` in a test's tmp_path would otherwise import whichever idn_tf
# is installed (an editable install may point at another checkout): the commands must run
# the code these tests were collected from, as the in-process tests do.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO])
