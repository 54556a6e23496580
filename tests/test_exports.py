"""The package's public names: written once (the ``if TYPE_CHECKING:`` imports of
``__init__.py``), each reachable as ``rfx.Name``, and the only names ``dir(rfx)`` shows."""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import reconvene_fx as rfx
from reconvene_fx._lazy import type_checking_imports

PACKAGE = Path(rfx.__file__).parent
ROOT = PACKAGE.parent
INIT = PACKAGE / "__init__.py"
# documents whose ``rfx.Name`` (``rfx.passes.Name``) and ``SomethingError`` must resolve
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "examples").glob("*.py")]
# public error and warning classes that are no export, and why
NOT_EXPORTED = {"ModelSpecError": "raised by the command line's model spec parser only"}


def _declared() -> dict[str, tuple[str, str]]:
    return type_checking_imports(INIT.read_text(), "reconvene_fx")


def test_the_exports_are_the_type_checking_imports() -> None:
    declared = _declared()
    assert len(declared) > 40  # the block was read at all
    assert rfx.__all__ == list(declared)
    for name, (module, attribute) in declared.items():
        if module == "reconvene_fx":
            defined = importlib.import_module(f"reconvene_fx.{attribute}")
        else:
            defined = getattr(importlib.import_module(module), attribute)
        assert getattr(rfx, name) is defined, name


def test_each_public_name_is_written_once_as_an_explicit_reexport() -> None:
    tree = ast.parse(INIT.read_text())
    declared = _declared()
    # ``from .x import A`` alone would make A private to type checkers (pyright: "A is not
    # exported from module reconvene_fx"): the redundant alias marks it public
    plain = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level
        for alias in node.names
        if alias.asname != alias.name and alias.name in declared
    ]
    assert plain == []
    # no second list of them: no __all__, no table of strings
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert not set(declared) & {s for s in strings if isinstance(s, str)}
    assigned = [t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)]  # fmt: skip
    assert "__all__" not in assigned


def test_dir_shows_only_the_public_names() -> None:
    assert dir(rfx) == sorted(rfx.__all__)
    assert not [name for name in dir(rfx) if name.startswith("_")]
    assert {"sys", "types", "TYPE_CHECKING", "annotations", "declared_exports"}.isdisjoint(dir(rfx))
    importlib.import_module("reconvene_fx.meta")  # binds rfx.meta: a submodule, unlisted
    assert rfx.reporting is importlib.import_module("reconvene_fx.reporting")
    assert dir(rfx) == sorted(rfx.__all__)


def test_report_and_verify_stay_functions_when_their_modules_are_imported() -> None:
    code = (
        "import reconvene_fx as rfx\n"
        "import reconvene_fx.reporting, reconvene_fx.verification\n"
        "from reconvene_fx import report, verify\n"
        "assert report is rfx.report is reconvene_fx.reporting.report\n"
        "assert verify is rfx.verify is reconvene_fx.verification.verify\n"
        "try:\n"
        "    import reconvene_fx.report\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert exc.name == 'reconvene_fx.report', exc\n"
        "else:\n"
        "    raise AssertionError('reconvene_fx.report is a module again')\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr


def _resolve(dotted: str) -> bool:
    value = rfx
    for part in dotted.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            return False
    return True


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_rfx_name_in_the_docs_resolves(doc: Path) -> None:
    text = doc.read_text()
    dotted = set(re.findall(r"\brfx\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", text))
    classes = {
        name
        for name in re.findall(r"\b([A-Z]\w*(?:Error|Warning))\b", text)
        if not hasattr(builtins, name)
    }
    if doc.name == "README.md" and doc.parent == ROOT:
        assert len(dotted) > 20 and "UnknownOpWarning" in classes  # the text was read
    missing = sorted(d for d in dotted if not _resolve(d) or d.split(".")[0] not in rfx.__all__)
    missing += sorted(name for name in classes if name not in rfx.__all__)
    assert missing == []


def test_every_public_error_and_warning_class_is_an_export() -> None:
    defined = {
        node.name
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and node.name.endswith(("Error", "Warning"))
    }
    assert set(NOT_EXPORTED) <= defined  # the reasons are about classes that exist
    assert sorted(defined - set(NOT_EXPORTED) - set(rfx.__all__)) == []


def test_the_version_is_the_one_pyproject_declares() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)[1] == rfx.__version__
