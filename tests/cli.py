"""Running one of the package's command-line modules as a user would, in tests.

`run` and `start`: `python -m <module>`, a fresh interpreter. `Zygote`: the same command
in a fork of a process that has done the commands' imports once, for the many commands
that only refuse their input (a fresh interpreter spends ~2 s of CPU importing
scikit-learn and matplotlib before it can refuse anything).
"""

import json
import os
import subprocess
import sys


def env():
    """The environment of a command: TensorFlow's C++ notices off."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run(module, *args, cwd, timeout=600, environment=None):
    """`python -m <module> <args>` in `cwd` with `environment` (default `env()`: TensorFlow's
    C++ notices off); the CompletedProcess with text stdout and stderr."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          env=env() if environment is None else environment,
                          capture_output=True, text=True, timeout=timeout)


def start(module, *args, cwd, **popen_kwargs):
    """`python -m <module> <args>` in `cwd` started in the background (as `run`); the Popen."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env(),
                            **popen_kwargs)


# The zygote imports what `python -m idn_tf.train` and `python -m idn_tf.compare` import
# before they parse their flags, once; each request forks it: the fork gets the command's
# folder, environment, argv, stdout and stderr, runs the module as __main__ (`runpy`, as
# `-m` does) and exits with its exit code; an uncaught exception prints its traceback, as
# the interpreter would. The zygote checks that those imports did not import TensorFlow,
# so that a command sees TensorFlow (and its stderr start-up lines) exactly when the real
# command would. (idn_tf.compare itself is not imported: it defines flags, and runpy
# runs the module afresh.)
ZYGOTE = r"""
import json, os, runpy, signal, sys, traceback
import idn_tf.train  # the commands' imports, done once
if "tensorflow" in sys.modules:
    sys.exit("importing idn_tf.train imported TensorFlow; the zygote would hide its output")
del sys.modules["idn_tf.train"]  # runpy runs it afresh as __main__, as -m does
print("ready", flush=True)
for line in sys.stdin:
    row = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(row["cwd"])
            os.environ.clear()
            os.environ.update(row["env"])
            for fd, name, flags in ((0, os.devnull, os.O_RDONLY),
                                    (1, row["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                    (2, row["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                os.dup2(os.open(name, flags, 0o644), fd)
            signal.alarm(row["timeout"])
            sys.argv = ["-m", *row["args"]]  # runpy puts the module's path first, as -m does
            runpy.run_module(row["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class Zygote:
    """A process that has imported the commands' modules and runs one command per fork
    (ZYGOTE above). Requests are answered one at a time: one zygote per thread."""

    def __init__(self, log, environment=None):
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE],
                                        env=environment or env(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=open(log, "w"),
                                        text=True)
        if self.process.stdout.readline() != "ready\n":
            self.process.wait()
            raise RuntimeError(f"the zygote did not start: {open(log).read()}")

    def run(self, module, args, cwd, environment, outputs, timeout=600):
        """As `run` (`python -m <module> <args>` in `cwd` with `environment`), with stdout
        and stderr passed through the files <outputs>/stdout and <outputs>/stderr."""
        request = dict(module=module, args=list(args), cwd=str(cwd), env=environment,
                       stdout=str(outputs / "stdout"), stderr=str(outputs / "stderr"),
                       timeout=timeout)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        returncode = int(self.process.stdout.readline())
        return subprocess.CompletedProcess(
            args, returncode, (outputs / "stdout").read_text(), (outputs / "stderr").read_text())

    def close(self):
        self.process.stdin.close()
        self.process.wait()
