"""Importing reconvene_fx: no heavy optional dependencies, no cycles among its own modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest

import reconvene_fx

PACKAGE_DIR = Path(reconvene_fx.__file__).parent

# Imported only when a feature that needs them is used (ONNX export, torchvision models).
HEAVY = ("onnx", "onnx_graphsurgeon", "onnxruntime", "onnxscript")


def _modules_after_import(names: tuple[str, ...]) -> list[str]:
    """The ``names`` present in ``sys.modules`` after ``import reconvene_fx``, in a fresh
    interpreter (this process has imported them already)."""
    code = f"import sys, reconvene_fx; print(*[m for m in {names!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return result.stdout.split()


def test_import_does_not_load_torch() -> None:
    # every public name is imported when first read: the CLI's --help starts fast
    assert _modules_after_import(("torch", "torch.fx")) == []


def test_import_does_not_load_onnx() -> None:
    assert _modules_after_import(HEAVY) == []


def test_import_does_not_load_torchvision() -> None:
    assert _modules_after_import(("torchvision",)) == []


def test_lazy_export_onnx_is_reachable() -> None:
    from reconvene_fx import export_onnx
    from reconvene_fx.emit.onnx import export_onnx as defined

    assert export_onnx is defined is reconvene_fx.export_onnx
    assert "export_onnx" in reconvene_fx.__all__ and "export_onnx" in dir(reconvene_fx)
    with pytest.raises(AttributeError, match="no_such_name"):
        reconvene_fx.no_such_name  # noqa: B018


# --- the import graph -------------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    """``root/pkg/a/b.py`` -> ``pkg.a.b``; ``root/pkg/a/__init__.py`` -> ``pkg.a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported: top level and inside top-level
    ``if``/``try``/``with``/``class`` blocks, not inside functions or ``if TYPE_CHECKING:``."""
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            yield stmt
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _import_time_statements(stmt.body)
            yield from _import_time_statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody):
                yield from _import_time_statements(block)
            for handler in stmt.handlers:
                yield from _import_time_statements(handler.body)
        elif isinstance(stmt, ast.With | ast.ClassDef):
            yield from _import_time_statements(stmt.body)


def _from_module(stmt: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute name of the module a ``from ... import`` in ``importer`` reads."""
    base = stmt.module or ""
    if stmt.level:
        parts = importer.split(".")[: len(importer.split(".")) - stmt.level + is_package]
        base = ".".join([*parts, *([base] if base else [])])
    return base


def import_graph(root: Path, package: str) -> nx.DiGraph:
    """Edges ``a -> b``: importing module ``a`` runs module ``b`` (both in ``package``).

    A package is one node, its ``__init__``. ``from p import name`` is an edge to the
    submodule ``p.name`` if there is one, else to ``p`` (the name lives there).
    Importing ``p.q`` also runs ``p``'s ``__init__``, an edge too unless the importer lies
    inside ``p`` (then ``p`` has started already: its own imports carry that cycle).
    """
    paths = sorted((root / package).rglob("*.py"))
    modules = {_module_name(p, root): p for p in paths}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for stmt in _import_time_statements(ast.parse(path.read_text(), str(path)).body):
            targets: list[str] = []
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            else:
                base = _from_module(stmt, name, is_package)
                for alias in stmt.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target not in modules:
                    continue  # not ours
                graph.add_edge(name, target)
                parts = target.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    inside = name == parent or name.startswith(parent + ".")
                    if parent in modules and not inside:
                        graph.add_edge(name, parent)
    graph.remove_edges_from(nx.selfloop_edges(graph))
    return graph


def _cycles(graph: nx.DiGraph) -> list[str]:
    """Each cycle as ``a -> b -> a``, starting from its first module in sorted order."""
    found = []
    for cycle in nx.simple_cycles(graph):
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        found.append(" -> ".join([*cycle, cycle[0]]))
    return sorted(found)


def test_no_import_cycles_among_the_package_modules() -> None:
    graph = import_graph(PACKAGE_DIR.parent, "reconvene_fx")
    assert graph.number_of_edges() > 20  # the graph was read at all
    assert ("reconvene_fx.rules", "reconvene_fx.rules.layers") in graph.edges
    cycles = _cycles(graph)
    assert not cycles, "module-level import cycles:\n" + "\n".join(cycles)


FAKE_PACKAGE = {
    "__init__.py": "from . import passes\nfrom .analysis import analyze\n",
    "analysis.py": "from . import passes\n\ndef analyze():\n    from .passes import shrink\n",
    "passes/__init__.py": "from .sensitivity import SensitivityPass\nfrom . import shrink\n",
    "passes/sensitivity.py": "from ..analysis import analyze\nSensitivityPass = 1\n",
    "passes/shrink.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..report import Report\n"
    ),
    "report.py": "from .passes import shrink\n",
}


SENSITIVITY_CYCLE = "fake.analysis -> fake.passes -> fake.passes.sensitivity -> fake.analysis"
NO_SENSITIVITY_IMPORT = {"passes/sensitivity.py": "SensitivityPass = 1\n"}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({}, [SENSITIVITY_CYCLE]),
        (NO_SENSITIVITY_IMPORT, []),
        # importing passes.shrink runs passes/__init__ first, which imports sensitivity
        ({"analysis.py": "from .passes.shrink import x\n"}, [SENSITIVITY_CYCLE]),
        ({**NO_SENSITIVITY_IMPORT, "passes/shrink.py": "from ..report import Report\n"}, [
            "fake.passes -> fake.passes.shrink -> fake.report -> fake.passes",
            "fake.passes.shrink -> fake.report -> fake.passes.shrink",
        ]),
    ],
)  # fmt: skip
def test_the_cycle_check_sees_module_level_cycles_only(
    tmp_path: Path, edit: dict[str, str], expected: list[str]
) -> None:
    for relative, text in {**FAKE_PACKAGE, **edit}.items():
        path = tmp_path / "fake" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert _cycles(import_graph(tmp_path, "fake")) == expected


# --- the import direction: passes call engines, engines never import passes -------------

PASSES = "reconvene_fx.passes"
# Modules outside reconvene_fx/passes/ that build or run pipelines of passes, and why.
ORCHESTRATORS = {
    "reconvene_fx": "the public API: rfx.passes and rfx.UnknownOpWarning are exports",
    "reconvene_fx.compiler": "compile() is one run of compile_passes",
    "reconvene_fx.analysis": "analyze() runs the analysis passes (ShapePass ... SensitivityPass)",
    "reconvene_fx._submodules": "compile_in_place() runs compile_passes on the traced parts",
    "reconvene_fx.cli": "the command line wraps compile/analyze and may build their "
    "pipelines (it imports no pass today)",
}
# Engine code that still reaches into passes/ for a name that should move out; drop the
# entry when it has (the test fails on an entry that no longer imports the passes).
NOT_YET_MOVED = {
    "reconvene_fx.verification": "LiftedLayer (how LiftLayersPass lifted a functional layer) "
    "is defined in passes/lift.py; it belongs beside the layer handlers",
    "reconvene_fx.emit.torch": "words a rejected input with passes/shape.py's private "
    "_own_message/_shapes/_target_name (imported inside _rejected)",
}


def importers_of(root: Path, package: str, target: str) -> dict[str, int]:
    """``{module: line}``: the modules of ``package`` outside ``target`` that import it
    (or a module inside it) anywhere: at the top, inside functions, under
    ``if TYPE_CHECKING:``. Examples in docstrings are text, not imports."""
    found: dict[str, int] = {}
    for path in sorted((root / package).rglob("*.py")):
        name = _module_name(path, root)
        if name == target or name.startswith(target + "."):
            continue
        is_package = path.name == "__init__.py"
        for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(stmt, ast.Import):
                names = [alias.name for alias in stmt.names]
            elif isinstance(stmt, ast.ImportFrom):
                base = _from_module(stmt, name, is_package)
                names = [base, *(f"{base}.{alias.name}" for alias in stmt.names)]
            else:
                continue
            if any(n == target or n.startswith(target + ".") for n in names):
                found[name] = min(found.get(name, stmt.lineno), stmt.lineno)
    return found


def test_only_orchestrators_import_the_passes() -> None:
    found = importers_of(PACKAGE_DIR.parent, "reconvene_fx", PASSES)
    assert "reconvene_fx.compiler" in found  # the imports were read at all
    unexpected = [
        f"{name} (line {line})"
        for name, line in sorted(found.items())
        if name not in ORCHESTRATORS and name not in NOT_YET_MOVED
    ]
    assert not unexpected, (
        f"engine modules import {PASSES} (a pass calls an engine, never the reverse; move "
        "the name they need out of passes/, or list an orchestrator in ORCHESTRATORS "
        "with its reason):\n" + "\n".join(unexpected)
    )
    moved = sorted(set(NOT_YET_MOVED) - set(found))
    assert not moved, f"no longer import {PASSES}, drop them from NOT_YET_MOVED: {moved}"


def test_the_direction_check_sees_imports_anywhere(tmp_path: Path) -> None:
    files = {
        **FAKE_PACKAGE,
        "engine.py": "def run():\n    import fake.passes.shrink\n",
        "typed.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .passes import s\n"
        ),
        "clean.py": '"""\n>>> from fake.passes import shrink\n"""\nfrom .passes_util import x\n',
        "passes_util.py": "from .report import y\n",
    }
    for relative, text in files.items():
        path = tmp_path / "fake" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert importers_of(tmp_path, "fake", "fake.passes") == {
        "fake": 1,
        "fake.analysis": 1,
        "fake.engine": 2,
        "fake.report": 1,
        "fake.typed": 3,
    }
