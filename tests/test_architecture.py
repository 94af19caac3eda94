"""The package's import graph: no import circle between modules, and no module of a lower
layer importing a higher one (docs/architecture.md). Read from the source with ``ast``, so
imports inside functions count too (a lazy import is still a dependency)."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "seg_plugins")

# Low to high; a module may import its own layer and the layers below it. The package's
# __init__ (which imports everything to register it) and `python -m` entry points
# (__main__) sit above all.
LAYERS = [
    {"utils", "compat", "structures"},
    {"config", "model_zoo"},
    {"data"},
    {"evaluation"},
    {"modeling"},
    {"engine", "export"},
    {"tools"},
]


def _modules() -> dict:
    """Dotted module name -> path, for every .py file of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path[:-3], REPO).split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _imports(module: str, path: str, modules: dict) -> set:
    """The package modules that ``module`` imports (``from x import y`` where y is a
    submodule counts as importing x.y)."""
    is_package = path.endswith("__init__.py")
    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.add(sub if sub in modules else source)
    return {t for t in targets if t in modules and t != module}


def _graph() -> dict:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _layer(module: str):
    parts = module.split(".")
    if len(parts) < 2 or parts[-1] == "__main__":
        return None  # the package root / an entry point: above every layer
    top = parts[1]
    for rank, layer in enumerate(LAYERS):
        if top in layer:
            return rank
    raise AssertionError(f"{module}: add seg_plugins.{top} to a layer in LAYERS")


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_no_lower_layer_imports_a_higher_one():
    wrong = []
    for module, targets in sorted(_graph().items()):
        mine = _layer(module)
        if mine is None:
            continue
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs is None or theirs > mine:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


@pytest.mark.parametrize(
    "graph, cycles",
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_circle_finder_finds_circles(graph, cycles):
    assert _cycles(graph) == cycles


def test_the_layer_check_sees_a_lazy_upward_import(tmp_path):
    source = tmp_path / "build.py"
    source.write_text("def f():\n    from ..engine.trainer import Trainer\n")
    modules = {"seg_plugins.data.build": str(source), "seg_plugins.engine.trainer": ""}
    imports = _imports("seg_plugins.data.build", str(source), modules)
    assert imports == {"seg_plugins.engine.trainer"}
    assert _layer("seg_plugins.engine.trainer") > _layer("seg_plugins.data.build")


_MUTATORS = {"append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear",
             "add", "discard", "remove"}  # fmt: skip


def _run_state_writes(source: str) -> list:
    """Where ``source`` keeps run state in its module: ``global`` statements, and writes
    into a module-level name (item assignment, augmented assignment, a mutating method call)
    from inside a function or class."""
    tree = ast.parse(source)
    module_names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        module_names |= {t.id for t in targets if isinstance(t, ast.Name)}
    found = []
    for top in tree.body:
        if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(top):
            if isinstance(node, ast.Global):
                found.append(f"line {node.lineno}: global {', '.join(node.names)}")
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    base = target.value if isinstance(target, ast.Subscript) else target
                    if isinstance(node, ast.AugAssign) or isinstance(target, ast.Subscript):
                        if isinstance(base, ast.Name) and base.id in module_names:
                            found.append(f"line {node.lineno}: writes {base.id}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if (
                    node.func.attr in _MUTATORS
                    and isinstance(owner, ast.Name)
                    and owner.id in module_names
                ):
                    found.append(f"line {node.lineno}: {owner.id}.{node.func.attr}(...)")
    return sorted(found, key=lambda line: int(line.split(":")[0].split()[1]))


def test_data_keeps_no_run_state_in_its_modules():
    found = {
        module: writes
        for module, path in sorted(_modules().items())
        if module.startswith("seg_plugins.data")
        for writes in [_run_state_writes(open(path).read())]
        if writes
    }
    assert found == {}


def test_the_run_state_check_sees_each_kind():
    source = (
        "_SEEN = {}\n_FLAG = None\nLIMIT = 3\n"
        "def f(name):\n    _SEEN[name] = 1\n    local = {}\n    local['x'] = 2\n"
        "def g():\n    global _FLAG\n    _FLAG = True\n"
        "class C:\n    def h(self):\n        _SEEN.pop('a', None)\n        LIMIT += 1\n"
    )
    assert _run_state_writes(source) == [
        "line 5: writes _SEEN",
        "line 9: global _FLAG",
        "line 13: _SEEN.pop(...)",
        "line 14: writes LIMIT",
    ]
