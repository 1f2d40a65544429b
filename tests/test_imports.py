"""The shape of idn_tf's internal imports: no cycles, and the layers point one way.

Read from the source with `ast` (nothing is imported, so no TensorFlow): every
`import` statement in every module under idn_tf/, those inside functions included.
An import names the idn_tf module it loads:
  `import idn_tf.a.b` → idn_tf.a.b;  `from idn_tf.a import b` → idn_tf.a.b when that is a
  module or subpackage, else idn_tf.a (b is a name defined there);  relative imports are
  resolved against the importing module's package.
The parent packages that Python also initialises on the way are not counted (idn_tf's
`__init__` modules import nothing but their own submodules).

Checks:
  * the graph has no cycle (a cycle is named module by module, with each import's line);
  * the data layer (idn_tf/data/) imports nothing of idn_tf outside idn_tf/data/ but the
    backbones (idn_tf/models/: the CIFAR-10 IDN noise embeds images with ResNet-50), which
    import no training code themselves;
  * no library module imports an entry point (`ENTRY_POINTS`).
"""

import ast
import pathlib
from collections import defaultdict

import pytest

PACKAGE = "idn_tf"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
# The command-line programs: they may import the library, never the other way.
ENTRY_POINTS = ("idn_tf.train", "idn_tf.compare")
DATA_LAYER = "idn_tf.data"
# What the data layer may use besides itself: network architectures and their weights.
BELOW_DATA = ("idn_tf.models", "idn_tf.pretrained")
MAX_CYCLES = 50  # listed in a failure message


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    """{module name: path} of every module and package under idn_tf/."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name, path, modules):
    """[(imported idn_tf module, line)] of module `name`'s import statements."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in modules else source, node.lineno))
    unknown = [(m, line) for m, line in found if m not in modules]
    assert not unknown, f"{name} imports idn_tf modules that do not exist: {unknown}"
    return found


def _graph():
    """{module: {imported module: [lines importing it]}} over idn_tf's modules."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = defaultdict(list)
        for target, line in _imports(name, path, modules):
            if target != name:
                edges[target].append(line)
        graph[name] = {target: sorted(set(lines)) for target, lines in edges.items()}
    return graph


def _lines(lines):
    return f"line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}"


def _cycles(graph, limit=MAX_CYCLES):
    """The elementary cycles of `graph`, each as [m0, m1, …] (m0 → m1 → … → m0), each
    starting at its alphabetically first module; shortest first, at most `limit`."""
    nodes = sorted(graph)
    order = {n: i for i, n in enumerate(nodes)}
    cycles = []
    for start in nodes:
        # Paths from `start` through modules after it only: each cycle is found once.
        stack = [(start, [start], iter(sorted(graph[start])))]
        on_path = {start}
        while stack:
            node, path, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                continue
            if child == start:
                cycles.append(path)
            elif order[child] > order[start] and child not in on_path:
                on_path.add(child)
                stack.append((child, path + [child], iter(sorted(graph[child]))))
            if len(cycles) >= 10 * limit:
                break
    cycles.sort(key=lambda c: (len(c), c))
    return cycles[:limit]


def _describe(cycle, graph):
    steps = [f"{a} ({_lines(graph[a][b])}) → " for a, b in zip(cycle, cycle[1:] + cycle[:1])]
    return "".join(steps) + cycle[0]


def test_cycle_finder_on_a_small_graph():
    graph = {"a": {"b": [1]}, "b": {"c": [1], "a": [2]}, "c": {"a": [3]}, "d": {"a": [1]}}
    assert _cycles(graph) == [["a", "b"], ["a", "b", "c"]]
    assert _describe(["a", "b"], graph) == "a (line 1) → b (line 2) → a"
    assert _cycles({"a": {"b": [1]}, "b": {}}) == []


def test_import_forms(tmp_path):
    """Each form of import, on a made-up idn_tf.data.views."""
    modules = {m: None for m in ("idn_tf", "idn_tf.data", "idn_tf.data.views", "idn_tf.data.noise",
                                 "idn_tf.data.sources", "idn_tf.model", "idn_tf.models",
                                 "idn_tf.models.small_cnn", "idn_tf.config")}
    path = tmp_path / "views.py"
    path.write_text("import os\n"
                    "import idn_tf.models.small_cnn\n"       # 2
                    "from idn_tf import model, data\n"       # 3: a module, a subpackage
                    "from idn_tf.config import METHODS\n"    # 4: a name
                    "from idn_tf.data import noise\n"        # 5
                    "def f():\n"
                    "    from . import sources\n"            # 7: relative, in a function
                    "    from .. import config\n"            # 8
                    "    from ..models import build\n"       # 9
                    "    from .noise import X\n")            # 10
    assert sorted(_imports("idn_tf.data.views", path, modules)) == sorted([
        ("idn_tf.models.small_cnn", 2), ("idn_tf.model", 3), ("idn_tf.data", 3),
        ("idn_tf.config", 4), ("idn_tf.data.noise", 5), ("idn_tf.data.sources", 7),
        ("idn_tf.config", 8), ("idn_tf.models", 9), ("idn_tf.data.noise", 10)])


def test_every_import_resolves():
    graph = _graph()
    # Spot checks of each form of import against known lines of the code.
    assert "idn_tf.posterior" in graph["idn_tf.model"]          # from idn_tf import posterior
    assert "idn_tf.data.dataset" in graph["idn_tf.data.noise"]  # from idn_tf.data.dataset import …
    assert "idn_tf.models.resnet50" in graph["idn_tf.models"]   # from idn_tf.models.resnet50 import
    assert "idn_tf.data.views" in graph["idn_tf.model"]         # from idn_tf.data import views
    assert "idn_tf.models" in graph["idn_tf.stages"]            # from idn_tf.models import name


def test_no_import_cycles():
    graph = _graph()
    cycles = _cycles(graph)
    if cycles:
        pytest.fail(f"{len(cycles)}{'+' if len(cycles) == MAX_CYCLES else ''} import cycle(s) "
                    "among idn_tf's modules (imports inside functions included):\n  "
                    + "\n  ".join(_describe(c, graph) for c in cycles), pytrace=False)


def _within(module, packages):
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_data_layer_imports_only_the_data_layer():
    graph = _graph()
    bad = [f"{m} ({_lines(lines)}) imports {target}"
           for m, edges in sorted(graph.items()) if _within(m, (DATA_LAYER,))
           for target, lines in sorted(edges.items())
           if not _within(target, (DATA_LAYER, *BELOW_DATA))]
    # The backbones must not reach back up into training code either.
    bad += [f"{m} ({_lines(lines)}) imports {target}"
            for m, edges in sorted(graph.items()) if _within(m, BELOW_DATA)
            for target, lines in sorted(edges.items())
            if not _within(target, BELOW_DATA)]
    if bad:
        pytest.fail("idn_tf/data/ must not import idn_tf modules outside idn_tf/data/ (but "
                    "the backbones, which import nothing else):\n  " + "\n  ".join(bad),
                    pytrace=False)


def test_no_library_module_imports_an_entry_point():
    graph = _graph()
    bad = [f"{m} ({_lines(lines)}) imports {target}"
           for m, edges in sorted(graph.items()) if m not in ENTRY_POINTS
           for target, lines in sorted(edges.items()) if target in ENTRY_POINTS]
    if bad:
        pytest.fail(f"library modules must not import the entry points {', '.join(ENTRY_POINTS)}:"
                    "\n  " + "\n  ".join(bad), pytrace=False)
