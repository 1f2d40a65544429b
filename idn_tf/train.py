"""python -m idn_tf.train: the method, or a baseline, end to end (docs/flags.md has the flags).

`main` reads the flags once into a `Config` and calls `run(config)`, the pipeline of
`idn_tf.runner` (preflight → data → noise → stage 1 → the method's stages →
fine-tuning → report → export). A bad flag, bad data or an unusable run folder stops
the run with one `error:` line and exit code 2, before TensorFlow starts.
"""

import json

from absl import app

from idn_tf import cli, flagdefs
from idn_tf.runner import run  # noqa: F401 (the Python API: idn_tf.train.run(config))


def main(argv):
    cli.quiet_logging()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags are --name=value)")
    with cli.user_errors(multi_worker=flagdefs.FLAGS.strategy == "multi_worker"):
        config = flagdefs.config_from_flags()
        if config.dry_run:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        run(config)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
