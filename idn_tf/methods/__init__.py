"""The methods, one module each, and their registry: the only list of method names.

Everything that names methods reads the registry: --method's choices and the
configuration's fields (`config`), compare's --methods and its table, the closing
table's row, the restart check (`semantic_dict`), the stage names and the run
folder's files. A new method is its Keras model, one module here with a `Method`
subclass (`methods.base`), one `register` line below and its flags (`flagdefs`);
docs/architecture.md walks through one.
"""

from idn_tf.methods import (bootstrap, ce, coteaching, dividemix, elr, forward, idn, ldmi,
                            pencil, sop, tanaka)
from idn_tf.methods.base import Method, Run  # noqa: F401 (the interface)

_REGISTRY = {}

# The method a run trains when --method is not given: the paper's.
DEFAULT = idn.METHOD.name


def register(method):
    """Adds `method` (a `Method`) to the registry; returns it. Its name and its fields must
    be new (a field belongs to one method)."""
    if method.name in _REGISTRY:
        raise ValueError(f"a method named {method.name!r} is registered already")
    taken = {f: m.name for m in _REGISTRY.values() for f in m.fields}
    clash = sorted(set(method.fields) & set(taken))
    if clash:
        raise ValueError(f"{method.name}: field {clash[0]!r} belongs to {taken[clash[0]]}")
    _REGISTRY[method.name] = method
    return method


def unregister(name):
    """Removes a method added with `register` (tests of an extra method)."""
    _REGISTRY.pop(name)


def get(name):
    """The registered method `name`; KeyError if there is none."""
    return _REGISTRY[name]


def names():
    """The registered methods' names, in registration order."""
    return tuple(_REGISTRY)


def all_methods():
    return tuple(_REGISTRY.values())


def field_defaults():
    """Every registered method's own configuration fields -> defaults, in order."""
    return {f: d for m in _REGISTRY.values() for f, d in m.fields.items()}


def derived_fields():
    """The names of the values methods derive for the restart check (`semantic_extra`)."""
    return tuple(f for m in _REGISTRY.values() for f in m.derived_fields)


def run_files():
    """The run-folder files the registered methods write: their stages' json and selected
    classifier (`runfolder.RunFolder.selected_name`), and their own files."""
    stages = [s for m in _REGISTRY.values() for s in m.stage_names]
    files = [f"{s}.json" for s in stages] + [f"{s}.selected.npz" for s in stages]
    files += [f for m in _REGISTRY.values() for f in m.files]
    return tuple(dict.fromkeys(files))


for _method in (idn.METHOD, ce.METHOD, forward.METHOD, bootstrap.SOFT, bootstrap.HARD,
                ldmi.METHOD, coteaching.METHOD, tanaka.METHOD, pencil.METHOD, elr.METHOD,
                sop.METHOD, dividemix.METHOD):
    register(_method)
