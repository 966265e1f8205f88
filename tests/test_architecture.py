"""The shape the code keeps: layers from docs/architecture.md, no import cycle, small units.

The import graph is read from the source (``ast``), so imports inside functions count as
much as module-level ones; importing ``a.b.c`` also imports the packages ``a.b`` and ``a``
(their ``__init__`` runs), except a module's own parent packages, which are always loaded
first anyway. ``strategies/`` is installed as ``fedkd.strategies``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import ROOT

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def source_modules() -> dict[str, Path]:
    """Every module of ``fedkd`` and ``fedkd.strategies``, by dotted name."""
    modules = {}
    for folder, prefix in (("fedkd", ["fedkd"]), ("strategies", ["fedkd", "strategies"])):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(prefix + parts)] = path
    return modules


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(name, node, path.name == "__init__.py"):
                while target:
                    if target in modules and target != name and not name.startswith(f"{target}."):
                        edges.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def documented_layers() -> list[tuple[str, list[str]]]:
    """The ``layers`` block of docs/architecture.md: (layer, module patterns), lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```text layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```text layers block"
    layers = []
    for line in block.group(1).splitlines():
        if line.strip():
            label, _, patterns = line.partition(":")
            layers.append((label.strip(), patterns.split()))
    return layers


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer whose most specific pattern (``pkg`` or ``pkg.*``) matches."""
    best: tuple[int, int] | None = None
    for level, (_, patterns) in enumerate(layers):
        for pattern in patterns:
            exact = pattern == module
            below = pattern.endswith(".*") and module.startswith(pattern[:-1])
            if exact or below:
                specificity = len(pattern) + (1 if exact else 0)
                if best is None or specificity > best[0]:
                    best = (specificity, level)
    return None if best is None else best[1]


def test_the_package_has_no_import_cycle_counting_imports_inside_functions():
    assert cycles(import_graph(source_modules())) == []


def test_every_module_has_a_documented_layer():
    layers = documented_layers()
    unplaced = [m for m in source_modules() if layer_of(m, layers) is None]
    assert unplaced == [], "add these to the layers block of docs/architecture.md"


def test_no_module_imports_a_higher_layer():
    layers = documented_layers()
    graph = import_graph(source_modules())
    upward = [
        f"{src} ({layers[layer_of(src, layers)][0]}) -> {dst} ({layers[layer_of(dst, layers)][0]})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if None not in (layer_of(src, layers), layer_of(dst, layers))
        and layer_of(dst, layers) > layer_of(src, layers)
    ]
    assert upward == []


def unit_sizes() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, name) of every function and every module in fedkd/ and strategies/."""
    functions, modules = [], []
    for name, path in source_modules().items():
        text = path.read_text()
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(functions, reverse=True), sorted(modules, reverse=True)


def test_no_function_over_80_lines_and_no_module_over_500():
    functions, modules = unit_sizes()
    assert [f for f in functions if f[0] > MAX_FUNCTION_LINES] == []
    assert [m for m in modules if m[0] > MAX_MODULE_LINES] == []


def test_the_checks_see_cycles_layers_and_function_level_imports(tmp_path):
    (tmp_path / "low.py").write_text("def f():\n    from pkg import high\n")
    (tmp_path / "high.py").write_text("from pkg import low\n")
    modules = {"pkg.low": tmp_path / "low.py", "pkg.high": tmp_path / "high.py"}
    graph = import_graph(modules)
    assert graph == {"pkg.low": {"pkg.high"}, "pkg.high": {"pkg.low"}}
    assert cycles(graph) == [["pkg.high", "pkg.low"]]
    layers = [("L0", ["pkg.low"]), ("L1", ["pkg.*"])]
    assert layer_of("pkg.low", layers) == 0
    assert layer_of("pkg.high", layers) == 1
    assert layer_of("other", layers) is None
