"""What the three commands share: flag parsing, one-line errors with exit code 2, quiet logs.

`python -m idn_tf.train`, `python -m idn_tf.compare` and `python -m idn_tf.audit` each
parse absl flags with `parse_flags`, report a user error (a bad flag, bad data, an
unusable run folder, a diverged loss) as one `error:` line on stderr with exit code 2
(`user_errors`), and show TensorFlow's INFO logs only when --verbosity asks for them.
The commands that parse with `parse_flags` answer --help with their usage and their
flags by section (`usage`).
"""

import contextlib
import os
import sys

from absl import app, flags, logging

from idn_tf import artifacts, flagdefs
from idn_tf.data.sources import DataError
from idn_tf.errors import ConfigError

# Errors reported as one line (exit 2); FloatingPointError is a diverged loss.
USER_ERRORS = (ConfigError, DataError, artifacts.RunDirError, FloatingPointError)

# What TensorFlow raises in a worker whose peer stopped (e.g. the chief refused its run
# folder): the collective ops are aborted and the connection drops.
PEER_ERRORS = ("UnavailableError", "CancelledError", "AbortedError", "DeadlineExceededError")

# TensorFlow is imported only once flags and data have been checked: its start-up
# notices go to stderr, and a user error should read as one line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(error):
    """Prints "error: <error>" on stderr and exits with code 2."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl's parser, with flag errors as one line on stderr and exit code 2, and --help
    as `Help`."""
    for help_flag in (Help(), HelpShort()):
        flags.DEFINE_flag(help_flag, flagdefs.FLAGS)
    try:
        return flagdefs.FLAGS(argv)
    except flags.Error as e:
        fail(e)


class Help(app.HelpFlag):
    """--help and -?: `usage` on stdout, exit code 0. It replaces absl's, which lists only
    the flags defined in the command's own module (none of idn_tf.train's) and exits 1;
    --helpfull stays absl's, every flag by defining module."""

    def __init__(self):
        super().__init__()
        self.allow_override = True  # over absl's, which app.run defines first

    def parse(self, arg):
        if self._parse(arg):
            sys.stdout.write(usage())
            sys.exit(0)


class HelpShort(Help):
    """--helpshort, an alias of --help (as in absl)."""
    NAME = "helpshort"
    SHORT_NAME = None


def usage():
    """--help's text: the command's docstring, then its flags as absl renders a module's
    key flags: the command's own (idn_tf.compare's), then idn_tf.train's by section
    (`flagdefs.help_sections`). absl's own flags are left to --helpfull."""
    main = sys.modules["__main__"]
    own = [flag.name for flag in flagdefs.FLAGS.get_flags_for_module(main)]
    command = getattr(main.__spec__, "name", None) or sys.argv[0]
    sections = [(f"{command}'s own flags", own)] if own else []
    text = [main.__doc__.strip(), "\nflags (docs/flags.md; --flagfile=FILE reads them from a "
            "file):"]
    for title, names in sections + flagdefs.help_sections():
        for name in names:
            flagdefs.FLAGS.register_key_flag_for_module(title, flagdefs.FLAGS[name])
        text.append(flagdefs.FLAGS.module_help(title))
    return "\n".join(text) + "\n\n--helpfull lists absl's flags too.\n"


def quiet_logging():
    """TensorFlow logs through absl at INFO (e.g. every SavedModel file it writes);
    shown only with an explicit --verbosity."""
    # absl's app.run sets --verbosity itself, so "given by the user" is `.present`.
    if not flagdefs.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors(multi_worker=False):
    """Turns a user error raised inside into `fail`; with `multi_worker`, also the
    errors TensorFlow raises when another worker of the cluster stopped."""
    try:
        yield
    except USER_ERRORS as e:
        fail(e)
    except Exception as e:  # noqa: BLE001 (re-raised unless it is a peer's failure)
        if multi_worker and type(e).__name__ in PEER_ERRORS:
            fail(f"the cluster stopped: another worker failed or left ({type(e).__name__}); "
                 "its output says why")
        raise
