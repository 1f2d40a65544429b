"""Test-wide settings: quiet TensorFlow start-up (must precede its import)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
