"""Shared runs made by commands (`python -m idn_tf.train`, `idn_tf.compare`, kill and
resume), started early: in one background thread from the session's first test, one after
another in the order the selected tests need them, while the tests before run.

A fixture registers its run with `@early.job("fixture_name", __name__)` on a function of
tmp_path_factory (the module: where the fixture is defined, None for conftest.py), and
returns `early.result("fixture_name", tmp_path_factory)`: the
background run's value (waiting for it), or, when it was not started (the fixture is not
needed by any selected test, or the session began without conftest's start), the function's
value computed there and then. A job must do its work in subprocesses: the thread shares
the interpreter (and its TensorFlow) with the tests.
"""

import concurrent.futures

_JOBS = {}      # fixture name -> (module name or None, function(tmp_path_factory))
_FUTURES = {}   # fixture name -> Future
_POOL = []


def job(fixture_name, module=None):
    """Decorator: registers a function(tmp_path_factory) as the run of `fixture_name`, a
    fixture of the test module `module` (None: of conftest.py, for every module)."""
    def register(function):
        assert fixture_name not in _JOBS, f"two early runs for the fixture {fixture_name}"
        _JOBS[fixture_name] = module, function
        return function
    return register


def start(items, tmp_path_factory):
    """Starts the jobs whose fixture one of `items` (the selected tests) uses, in order of
    first use."""
    wanted = []
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in _JOBS and name not in wanted and _JOBS[name][0] in (
                    None, getattr(getattr(item, "module", None), "__name__", None)):
                wanted.append(name)
    if not wanted:
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="early")
    _POOL.append(pool)
    for name in wanted:
        _FUTURES[name] = pool.submit(_JOBS[name][1], tmp_path_factory)


def result(fixture_name, tmp_path_factory):
    future = _FUTURES.get(fixture_name)
    if future is None:
        return _JOBS[fixture_name][1](tmp_path_factory)
    return future.result()


def stop():
    """Drops the jobs not started yet and waits for the running one."""
    for future in _FUTURES.values():
        future.cancel()
    for pool in _POOL:
        pool.shutdown(wait=True)
    _FUTURES.clear()
    _POOL.clear()
