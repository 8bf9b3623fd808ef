"""The package layout holds: subpackages in the order of a fit's flow, every import (function-level
ones included) pointing to the importing module's own layer or a lower one, no import cycles,
a documented ``__init__`` per subpackage, and the public names importable from ``pylmem``."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import pylmem

ROOT = Path(pylmem.__file__).parent
REPO = ROOT.parent

#: the layers, lowest first; a module may import from its own layer and the ones before it
LAYERS = ["util", "datasets", "model", "numerics", "estimation", "inference", "postfit", "reports",
          "scaleout", "api", "io"]
TOP_LEVEL_MODULES = {"__init__", "__main__", "_version"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The pylmem modules ``name`` imports anywhere in its body (absolute or relative)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str):
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_top_level_is_only_the_package_face_and_the_subpackages():
    tops = {p.stem for p in ROOT.glob("*.py")}
    assert tops <= TOP_LEVEL_MODULES
    pkgs = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert pkgs == set(LAYERS)


def test_every_module_belongs_to_a_layer():
    loose = [m for m in MODULES if _layer(m) is None and m.rpartition(".")[2] not in
             TOP_LEVEL_MODULES and m != "pylmem"]
    assert loose == []


def test_imports_point_to_the_same_or_a_lower_layer():
    upward = []
    for name, targets in GRAPH.items():
        me = _layer(name)
        if me is None:          # the package face and __main__ may import anything
            continue
        for t in targets:
            other = _layer(t)
            if other is None:
                if t != "pylmem._version":
                    upward.append(f"{name} -> {t}")
            elif other > me:
                upward.append(f"{name} -> {t}")
    assert upward == []


def test_no_import_cycles():
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert [c for c in sccs if len(c) > 1] == []


@pytest.mark.parametrize("layer", LAYERS)
def test_each_subpackage_init_documents_itself_and_imports_nothing(layer):
    path = ROOT / layer / "__init__.py"
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 15, f"pylmem.{layer} needs a docstring saying what it owns"
    if layer != "datasets":
        assert "May import" in doc
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                    and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]


def test_public_names_import_from_the_package():
    for name in pylmem.__all__:
        assert getattr(pylmem, name) is not None
    from pylmem import (ConvergenceWarning, LmerFit, ModelDesign, anova, bootstrap,  # noqa: F401
                        build_design, coef_table, confint, datasets, drop1, em, fit_design, lmer,
                        pb_anova, ranova, read_table, simulate)
    assert callable(lmer) and callable(em) and callable(anova)
    assert importlib.import_module("pylmem.io.cli").main is not None


def test_no_tracker_numbers_in_code_and_docs():
    """Code, comments and docs say what the code does, not which issue asked for it."""
    pattern = re.compile(r"\b(issues?|stop)\s*#?\d+\b", re.I)
    files = [p for p in MODULES.values()]
    files += list((REPO / "tests").glob("*.py")) + list((REPO / "examples").glob("*.py"))
    files += list((REPO / "benchmarks").glob("*.py"))
    files += [REPO / "README.md"] + list((REPO / "docs").glob("*.md"))
    files += list((REPO / "benchmarks").glob("*.md"))
    hits = []
    for p in files:
        if not p.exists():
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    assert hits == []
