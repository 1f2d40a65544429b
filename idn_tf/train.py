"""Trains an image classifier despite wrong labels, and finds the labels that look wrong.

    python -m idn_tf.train --dataset=folder --data_dir=photos/      # your own images
    python -m idn_tf.train --flagfile=flags/table1_cifar10_idn.cfg   # a paper experiment

Reads and checks the data (--dataset), makes the observed labels (--noise, none for your
own), trains the method or a baseline (--method), and writes into the run folder
(--run_dir) the report, the label audit (label_audit.csv, label_issues.html), TensorBoard
logs and a SavedModel (--export_dir); a rerun with the same flags resumes it. --dry_run
prints the resolved settings. A bad flag or bad data stops it with one `error:` line
(exit code 2) before anything is written.
"""

import json

from absl import app

from idn_tf import cli, flagdefs
from idn_tf.runner import run  # noqa: F401 (the Python API: idn_tf.train.run(config))


def main(argv):
    """Reads the flags once into a `Config` and calls `run(config)`, the pipeline of
    `idn_tf.runner` (preflight → data → noise → stage 1 → the method's stages →
    fine-tuning → report → export); a user error stops it with one `error:` line and
    exit code 2, before TensorFlow starts."""
    cli.quiet_logging()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags are --name=value)")
    with cli.user_errors(multi_worker=flagdefs.FLAGS.strategy == "multi_worker"):
        config = flagdefs.config_from_flags()
        if config.dry_run:
            print(json.dumps(config.used_dict(), indent=2))
            return 0
        run(config)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
