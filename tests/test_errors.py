"""Every error a user can cause is a ReconveneError: the package's raise sites, and the
public entry points called with bad arguments."""

from __future__ import annotations

import ast
import builtins
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import reconvene_fx as rfx
from reconvene_fx import errors

PACKAGE = Path(rfx.__file__).parent

# builtin exceptions the package may raise on purpose, and why
ALLOWED_BUILTINS = {
    ("_lazy.py", "AttributeError"): "a module __getattr__ must raise AttributeError",
    ("layers/init.py", "AttributeError"): "InitScale.__getattr__ (weight_std read lazily)",
    ("__main__.py", "SystemExit"): "python -m reconvene_fx exits with the CLI's status",
    ("layers/base.py", "NotImplementedError"): "abstract methods of LayerHandler",
    ("tracing.py", "TypeError"): "int()/index() of a traced value that is no known size: "
    "Python's number protocol (__int__, __index__) signals it with a TypeError",
    # a path that cannot be written: the OSError subclass open() would raise, said first
    ("_atomic.py", "FileNotFoundError"): "",
    ("_atomic.py", "IsADirectoryError"): "",
    ("_atomic.py", "NotADirectoryError"): "",
    ("_atomic.py", "PermissionError"): "",
    # an optional dependency that is missing: ImportError naming the pip install
    ("emit/onnx.py", "ImportError"): "",
    ("latency/_onnxruntime.py", "ImportError"): "",
    ("plot.py", "ImportError"): "",
}
# the package's own exceptions that are signals between its parts, never raised to a user
INTERNAL_SIGNALS = {
    "NoValue": "a rule asks for a value tracing could not give; the rule catches it",
    "Unsupported": "SynFlow's scaled flow meets an op it cannot scale; falls back to float64",
}


def _raised_names() -> list[tuple[str, int, str]]:
    """(file, line, exception name) of every ``raise Name(...)``/``raise Name`` in the
    package; re-raises of a caught variable (``raise exc``) are skipped."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id[:1].isupper():
                found.append((path.relative_to(PACKAGE).as_posix(), node.lineno, exc.id))
    return found


def test_the_package_raises_only_its_own_errors() -> None:
    sites = _raised_names()
    assert len(sites) > 50  # the walk found the raise sites
    reconvene = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.ReconveneError)
    }
    builtin = {
        (file, name)
        for file, _, name in sites
        if name not in reconvene and isinstance(getattr(builtins, name, None), type)
    }
    assert builtin == set(ALLOWED_BUILTINS), sorted(builtin - set(ALLOWED_BUILTINS))
    unknown = [
        (f, line, n) for f, line, n in sites if n not in reconvene and not hasattr(builtins, n)
    ]
    # anything else raised by name is a ReconveneError subclass defined elsewhere
    for file, line, name in unknown:
        module = __import__(
            "reconvene_fx." + file.removesuffix(".py").replace("/", "."), fromlist=[name]
        )
        value = getattr(module, name)
        if name in INTERNAL_SIGNALS:
            continue
        assert issubclass(value, errors.ReconveneError), f"{file}:{line} raises {name}"


def test_typed_errors_keep_their_builtin_bases() -> None:
    assert issubclass(rfx.ArgumentError, ValueError)
    assert issubclass(rfx.ArgumentTypeError, TypeError)
    assert issubclass(rfx.ArgumentTypeError, rfx.ArgumentError)
    assert issubclass(rfx.CompilerError, RuntimeError)
    assert issubclass(rfx.ScoringError, ValueError)
    for name in errors.__all__:
        value = getattr(rfx, name)
        assert value is getattr(errors, name)


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


X = torch.randn(2, 3, 12, 12)

BAD_COMPILES: dict[str, tuple[Callable[..., Any], type[Exception]]] = {
    "budget 0": (lambda: rfx.compile(_net(), 0, (X,)), ValueError),
    "budget 1.5": (lambda: rfx.compile(_net(), 1.5, (X,)), ValueError),
    "budget 'abc'": (lambda: rfx.compile(_net(), "abc", (X,)), TypeError),
    "budget nan": (lambda: rfx.compile(_net(), float("nan"), (X,)), ValueError),
    "empty Budget": (lambda: rfx.Budget(), ValueError),
    "method snp": (lambda: rfx.compile(_net(), 0.5, (X,), method="snp"), ValueError),
    "strategy": (lambda: rfx.compile(_net(), 0.5, (X,), strategy="nope"), ValueError),
    "targets shape": (
        lambda: rfx.compile(_net(), 0.5, (X,), method="snip", targets=torch.zeros(5).long()),
        ValueError,
    ),
    "targets dtype": (
        lambda: rfx.compile(_net(), 0.5, (X,), method="snip", targets=torch.zeros(2)),
        TypeError,
    ),
    "targets range": (
        lambda: rfx.compile(_net(), 0.5, (X,), method="snip", targets=torch.full((2,), 9)),
        ValueError,
    ),
    "data=x": (lambda: rfx.compile(_net(), 0.5, (X,), method="snip", data=X), TypeError),
    "unknown ignore": (lambda: rfx.compile(_net(), 0.5, (X,), ignore=["nope"]), ValueError),
    "ignore as str": (lambda: rfx.compile(_net(), 0.5, (X,), ignore="0"), TypeError),
    "round_to 0": (lambda: rfx.compile(_net(), 0.5, (X,), round_to=0), ValueError),
    "min_width 2": (lambda: rfx.compile(_net(), 0.5, (X,), min_width=2), ValueError),
    "max_batches 0": (lambda: rfx.compile(_net(), 0.5, (X,), max_batches=0), ValueError),
    "seed 'a'": (lambda: rfx.compile(_net(), 0.5, (X,), seed="a"), TypeError),
    "progress 'yes'": (lambda: rfx.compile(_net(), 0.5, (X,), progress="yes"), TypeError),
    "latency backend": (
        lambda: rfx.compile(_net(), 0.5, (X,), latency_backend="tensorrt"),
        ValueError,
    ),
    "unknown option": (lambda: rfx.compile(_net(), 0.5, (X,), methd="snip"), TypeError),
    "option of a scorer": (
        lambda: rfx.compile(_net(), 0.5, (X,), method_options={"steps": 3}),
        TypeError,
    ),
    "not a module": (lambda: rfx.compile("resnet18", 0.5, (X,)), TypeError),
    "no inputs": (lambda: rfx.compile(_net(), 0.5, None), TypeError),
    "wrong input shape": (
        lambda: rfx.compile(_net(), 0.5, (torch.randn(2, 1, 12, 12),)),
        ValueError,
    ),
    "analyze method": (lambda: rfx.analyze(_net(), 0.5, (X,), method="snp"), ValueError),
    "analyze budget": (lambda: rfx.analyze(_net(), 2, (X,)), ValueError),
    "trace a string": (lambda: rfx.trace("net"), TypeError),
    "save suffix": (lambda: rfx.save(rfx.compile(_net(), 0.5, (X,)), "m.txt"), ValueError),
    "load suffix": (lambda: rfx.load("m.txt"), ValueError),
    "save .onnx without inputs": (lambda: rfx.save(_compiled(), "m.onnx"), ValueError),
    "save .pt2 without inputs": (lambda: rfx.save(_compiled(), "m.pt2"), ValueError),
    "export to .pt": (lambda: rfx.export_onnx(_compiled(), "m.pt", X), ValueError),
    "export a wrong shape": (
        lambda: rfx.export_onnx(_compiled(), "m.onnx", torch.randn(2, 1, 12, 12)),
        ValueError,
    ),
    "verify other inputs": (
        lambda: rfx.verify(_net(), _compiled(), (torch.randn(2, 1, 12, 12),)),
        Exception,
    ),
}


def _compiled() -> torch.fx.GraphModule:
    return rfx.compile(_net(), 0.5, (X,))


@pytest.mark.parametrize("case", sorted(BAD_COMPILES))
def test_bad_arguments_raise_a_reconvene_error(case: str) -> None:
    call, builtin_base = BAD_COMPILES[case]
    with pytest.raises(rfx.ReconveneError) as info:
        call()
    assert not Path("m.onnx").exists() and not Path("m.pt").exists()
    assert isinstance(info.value, builtin_base)
    assert str(info.value)  # a message, not a bare class
