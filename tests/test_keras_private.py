"""The private Keras (and TensorFlow) attributes idn_tf overrides or relies on still exist.

Keras may rename, remove or re-sign a private method in any release without notice;
an override of a method Keras no longer calls is silently dead code (a multi-worker
run then fails, or averages the wrong logs), and an override whose signature drifted
fails only when Keras calls it with the new arguments. `PRIVATE` lists each such
attribute once; the tests check every entry against the installed Keras / TensorFlow
(no training, no strategy set up) and check that the list is complete: every private
name an idn_tf class shares with a Keras or TensorFlow base class, every private
attribute reached through a callback's `self.model`, and every private name passed
to `getattr`, must be listed here.

The [1]-shaped multi-worker logs (`CrossEntropyModel._logs`) depend on how Keras
reduces a step's logs over workers, which no attribute check can see:
tests/test_distribution.py runs that.
"""

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap

import keras
import pytest
import tensorflow as tf

import idn_tf
from idn_tf import callbacks, model


@dataclasses.dataclass(frozen=True)
class Private:
    """One private attribute of a Keras / TensorFlow class that idn_tf depends on.

    kind: "override" (an idn_tf class redefines the base method: same parameters),
      "call" (idn_tf calls the base method with `call_args` keyword names, or none),
      "attribute" (an instance attribute the base class sets in `__init__`, which
      idn_tf reads or writes).
    owner: the idn_tf class ("override") or the class whose base has it.
    callers: names of the base's methods (looked up on `owner`) whose source must
      still use it as `self.<name>`: Keras calls the override / reads the attribute.
    required: False for a name idn_tf only shares with the base (its own methods call
      it): a base without it is fine, a base with it must agree ("override": the same
      parameters, since Keras may call ours).
    """

    owner: type
    name: str
    kind: str
    why: str
    callers: tuple = ()
    call_args: tuple = ()
    required: bool = True


PRIVATE = [
    Private(model.CrossEntropyModel, "_maybe_symbolic_build", "override",
            "builds only the optimizer: Keras's version fails on a dict batch with "
            "several workers", callers=("fit", "evaluate")),
    Private(model.CrossEntropyModel, "_get_metrics_result_or_logs", "override",
            "the epoch's logs from the (replica-aggregated) metrics, also for the "
            "test step's subset of them", callers=("fit", "evaluate")),
    Private(model.CrossEntropyModel, "get_metrics_result", "call",
            "public, but what the override above reads"),
    # Backup's own on_train_begin / on_epoch_end call these (Keras 3.6 had no _load_model).
    Private(callbacks.Backup, "_load_model", "override",
            "restores the latest complete epoch folder", required=False),
    Private(callbacks.Backup, "_save_model", "override",
            "writes an epoch folder atomically", required=False),
    Private(callbacks.Backup, "_current_epoch", "attribute",
            "the epoch count BackupAndRestore keeps; Backup keeps it too", required=False),
    Private(keras.Model, "_initial_epoch", "attribute",
            "Backup sets model._initial_epoch; fit starts from it", callers=("fit",)),
]

# The one private TensorFlow name: StrategyExtended's, which model._multi_worker calls
# (test_multi_worker_check_still_there).
TF_PRIVATE = {"_in_multi_worker_mode"}


def _base_definer(owner, name):
    """The first non-idn_tf class in `owner`'s MRO whose own namespace has `name`."""
    for cls in owner.__mro__:
        if not cls.__module__.startswith("idn_tf") and name in vars(cls):
            return cls
    return None


def _self_assigned(cls):
    """Names `n` of the `self.n = …` (or `self.n: … = …`, `a = self.n = …`) in `cls`'s source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return set()
    names = set()
    for node in ast.walk(ast.parse(source)):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                   else [])
        for target in targets:
            for t in ast.walk(target):
                if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                        and t.value.id == "self"):
                    names.add(t.attr)
    return names


def _instance_definer(owner, name):
    """The first non-idn_tf class in `owner`'s MRO that assigns `self.<name>`."""
    for cls in owner.__mro__:
        if not cls.__module__.startswith("idn_tf") and cls is not object:
            if name in _self_assigned(cls):
                return cls
    return None


def _params(function):
    """[(name, kind)] of `function`'s parameters after `self`."""
    return [(p.name, p.kind.name) for p in list(inspect.signature(function).parameters.values())[1:]]


def _qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _uses_self_attr(function, name):
    """Whether `function`'s source uses `self.<name>` (as a call or a value)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return any(isinstance(n, ast.Attribute) and n.attr == name and isinstance(n.value, ast.Name)
               and n.value.id == "self" for n in ast.walk(tree))


def _id(entry):
    return f"{entry.owner.__name__}.{entry.name}"


@pytest.mark.parametrize("entry", PRIVATE, ids=_id)
def test_private_keras_attribute_still_there(entry):
    where = f"{_qualname(entry.owner)}.{entry.name} ({entry.why})"
    if entry.kind == "attribute":
        base = _instance_definer(entry.owner, entry.name)
        if base is None and not entry.required:
            return
        assert base is not None, (
            f"{where}: no Keras base class of {entry.owner.__name__} sets self.{entry.name} "
            f"(keras {keras.__version__}); idn_tf relies on it")
    else:
        base = _base_definer(entry.owner, entry.name)
        if base is None and not entry.required:
            return
        assert base is not None and callable(vars(base)[entry.name]), (
            f"{where}: the Keras method {entry.name} does not exist on any base class of "
            f"{entry.owner.__name__} (keras {keras.__version__}); idn_tf "
            f"{'overrides' if entry.kind == 'override' else 'calls'} it")
        base_params = _params(vars(base)[entry.name])
        if entry.kind == "override":
            ours = _params(vars(entry.owner)[entry.name])
            assert ours == base_params, (
                f"{where}: {_qualname(base)}.{entry.name} now takes {base_params}, "
                f"our override takes {ours} (keras {keras.__version__})")
        else:
            required = [n for n, k in base_params
                        if k in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")
                        and inspect.signature(vars(base)[entry.name]).parameters[n].default
                        is inspect.Parameter.empty]
            accepted = {n for n, k in base_params} | (
                set(entry.call_args) if any(k == "VAR_KEYWORD" for _, k in base_params) else set())
            assert set(required) <= set(entry.call_args) <= accepted, (
                f"{where}: {_qualname(base)}.{entry.name} now takes {base_params}; "
                f"idn_tf calls it with {list(entry.call_args) or 'no arguments'} "
                f"(keras {keras.__version__})")
    for caller in entry.callers:
        method = getattr(entry.owner, caller)
        assert _uses_self_attr(method, entry.name), (
            f"{where}: {method.__qualname__} does not use self.{entry.name} "
            f"(keras {keras.__version__}): our "
            f"{'override' if entry.kind == 'override' else 'use of it'} is dead")


def test_multi_worker_check_still_there():
    """`model._multi_worker` asks strategy.extended._in_multi_worker_mode() (private TF):
    without it every run would count as one worker and the step logs stay scalars."""
    (name,) = TF_PRIVATE
    extended = [tf.distribute.StrategyExtended]
    mwms_module = inspect.getmodule(tf.distribute.MultiWorkerMirroredStrategy)
    extended += [c for c in vars(mwms_module).values()
                 if inspect.isclass(c) and issubclass(c, tf.distribute.StrategyExtended)
                 and c.__module__ == mwms_module.__name__]
    assert len(extended) > 1, f"no StrategyExtended class found in {mwms_module.__name__}"
    for cls in extended:
        method = getattr(cls, name, None)
        assert callable(method), (
            f"{_qualname(cls)}.{name} does not exist (tensorflow {tf.__version__}); "
            "idn_tf.model._multi_worker calls it")
        assert _params(method) == [], (
            f"{_qualname(cls)}.{name} now takes {_params(method)} (tensorflow "
            f"{tf.__version__}); idn_tf.model._multi_worker calls it with no arguments")
    assert model._multi_worker(tf.distribute.get_strategy()) is False


# --- the list is complete --------------------------------------------------------------

def _idn_modules():
    """Every idn_tf module, imported."""
    modules = [idn_tf]
    for info in pkgutil.walk_packages(idn_tf.__path__, "idn_tf."):
        modules.append(importlib.import_module(info.name))
    return modules


def _external_subclasses():
    """idn_tf's classes that derive from a Keras or TensorFlow class."""
    found = []
    for module in _idn_modules():
        for value in vars(module).values():
            if (inspect.isclass(value) and value.__module__ == module.__name__
                    and any(c.__module__.split(".")[0] in ("keras", "tensorflow")
                            for c in value.__mro__)):
                found.append(value)
    return found


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_shared_private_name_is_listed():
    """A private name an idn_tf class defines (method, property, or self._x = …) that a
    Keras/TF base also has is an override or a collision: listed, or renamed."""
    listed = {(e.owner, e.name) for e in PRIVATE}
    classes = _external_subclasses()
    assert model.CrossEntropyModel in classes and callbacks.Backup in classes
    unlisted = []
    for cls in classes:
        ours = {n for n in vars(cls) if _private(n)} | {n for n in _self_assigned(cls) if _private(n)}
        for name in sorted(ours):
            base = _base_definer(cls, name) or _instance_definer(cls, name)
            if base is None:
                continue
            # Listed on this class or on the idn_tf class it inherits the entry from.
            if not any((c, name) in listed for c in cls.__mro__):
                unlisted.append(f"{_qualname(cls)}.{name} (also on {_qualname(base)})")
    assert not unlisted, (
        "private names shared with a Keras/TensorFlow base class but missing from "
        "tests/test_keras_private.py's PRIVATE (list them, or rename ours): "
        + "; ".join(unlisted))


def test_every_private_reach_into_keras_is_listed():
    """`<x>.model._name` (a callback's model) and getattr(x, "_name") in idn_tf's code."""
    listed = {e.name for e in PRIVATE} | TF_PRIVATE
    found = []
    for module in _idn_modules():
        try:
            source = inspect.getsource(module)
        except OSError:  # an empty __init__
            continue
        for node in ast.walk(ast.parse(source)):
            name = None
            if (isinstance(node, ast.Attribute) and _private(node.attr)
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "model"):
                name = node.attr
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str) and _private(node.args[1].value)):
                name = node.args[1].value
            if name is not None and name not in listed:
                found.append(f"{module.__name__}:{node.lineno} {name}")
    assert not found, ("private Keras/TensorFlow attributes used but missing from "
                       "tests/test_keras_private.py's PRIVATE: " + "; ".join(found))
