"""What the three commands share: flag parsing, one-line errors with exit code 2, quiet logs.

`python -m idn_tf.train`, `python -m idn_tf.compare` and `python -m idn_tf.audit` each
parse absl flags with `parse_flags`, report a user error (a bad flag, bad data, an
unusable run folder, a diverged loss) as one `error:` line on stderr with exit code 2
(`user_errors`), and show TensorFlow's INFO logs, its start-up lines among them, only when
--verbosity asks for them (`quiet_logging`). The commands that parse with `parse_flags`
answer --help with their usage and their flags by section (`usage`).
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

from absl import app, flags, logging

from idn_tf import artifacts, flagdefs
from idn_tf.data.sources import DataError
from idn_tf.errors import ConfigError

# Errors reported as one line (exit 2); FloatingPointError is a diverged loss.
USER_ERRORS = (ConfigError, DataError, artifacts.RunDirError, FloatingPointError)

# What TensorFlow raises in a worker whose peer stopped (e.g. the chief refused its run
# folder): the collective ops are aborted and the connection drops.
PEER_ERRORS = ("UnavailableError", "CancelledError", "AbortedError", "DeadlineExceededError")

# The level of TensorFlow's C++ logs when neither the user's environment nor --verbosity
# sets one: warnings and INFO lines hidden, errors shown.
TF_LOG_LEVEL = "2"

# What TensorFlow (2.21) writes to stderr while it is imported, before it applies
# TF_CPP_MIN_LOG_LEVEL: absl's notice that logging is not set up yet, and log lines such as
# "I0000 00:00:1796687155.211139   16703 port.cc:153] oneDNN custom operations are on …"
# (severity I, W, E or F first).
ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
LOG_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ \S+:\d+\] ")


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
    """Without an explicit --verbosity: absl's INFO logs hidden (TensorFlow's Python side
    logs there, e.g. every SavedModel file it writes), and TensorFlow's C++ logs at the
    environment's TF_CPP_MIN_LOG_LEVEL, else `TF_LOG_LEVEL`, its start-up lines too
    (`QuietImport`)."""
    # absl's app.run sets --verbosity itself, so "given by the user" is `.present`.
    if flagdefs.FLAGS["verbosity"].present:
        return
    logging.set_verbosity(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, QuietImport(os.environ["TF_CPP_MIN_LOG_LEVEL"]))


class QuietImport(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, once, with the start-up lines its log level hides left out.

    TensorFlow 2.21 writes them to file descriptor 2 from C++ while it is imported,
    before it reads TF_CPP_MIN_LOG_LEVEL, so no setting hides them (oneDNN stays on:
    TF_ENABLE_ONEDNN_OPTS would change the numerics). This finder, first on
    `sys.meta_path`, lets the other finders find `tensorflow` and runs its module with
    fd 2 in a temporary file; then it writes to stderr the lines that level shows.
    """

    def __init__(self, level):
        self.level = int(level) if str(level).isdigit() else 0

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # its first import only (and not to find itself)
        spec = importlib.util.find_spec(name)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with stderr_without(self.hidden):
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec

    def hidden(self, line):
        """Whether the level hides a line TensorFlow wrote before it read the level."""
        if line.startswith(ABSL_NOTICE):
            return self.level >= 1
        match = LOG_LINE.match(line)
        return bool(match) and "IWEF".index(match.group(1)) < self.level


@contextlib.contextmanager
def stderr_without(hidden):
    """Runs the body with file descriptor 2 (C++ code's stderr, and Python's) in a
    temporary file, then writes its lines to stderr, but those `hidden(line)` takes."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not hidden(line)))
            sys.stderr.flush()


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
