"""Build a model from a command-line spec, and parse input shapes.

A model spec is one of:

- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None)``;
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False)`` (needs ``pip install timm``);
- ``path/to/file.py:factory``: the file is imported by path and ``factory()`` is called
  with no arguments; it must return a ``torch.nn.Module``.

Models are always freshly initialized: pruning at initialization has no use for weights.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ReconveneError

if TYPE_CHECKING:  # torch is imported where a model is built, so the CLI starts fast
    import torch

__all__ = ["ModelSpecError", "default_input_shape", "load_model", "parse_input_shape"]

_SPEC_FORMS = "torchvision:NAME, timm:NAME or path/to/file.py:factory"
_LIST_TORCHVISION = 'python -c "import torchvision; print(torchvision.models.list_models())"'
_LIST_TIMM = "python -c \"import timm; print(timm.list_models('*'))\""

# torchvision models whose default graph has auxiliary classifier outputs in training mode.
_AUX_LOGITS = frozenset({"googlenet", "inception_v3"})
# torchvision models that expect a larger input than the usual 224x224.
_INPUT_SIZE = {"inception_v3": 299}


class ModelSpecError(ReconveneError, ValueError):
    """A model spec or input shape given by the user cannot be used.

    The message says what was wrong and what form is expected.
    """


def load_model(spec: str) -> torch.nn.Module:
    """Build the freshly initialized model that ``spec`` names.

    Args:
        spec: ``torchvision:NAME``, ``timm:NAME`` or ``path/to/file.py:factory``.

    Returns:
        The model, in training mode as its constructor left it.

    Raises:
        ModelSpecError: unknown model name, timm missing, file or factory missing, or the
            factory did not return a ``torch.nn.Module``.

    Example:
        >>> net = load_model("torchvision:resnet18")
        >>> type(net).__name__
        'ResNet'
    """
    source, sep, name = spec.partition(":")
    if sep and source == "torchvision":
        return _load_torchvision(_require_name(spec, name))
    if sep and source == "timm":
        return _load_timm(_require_name(spec, name))
    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return _load_from_file(Path(path), _require_name(spec, factory))
    if spec.endswith(".py"):
        raise ModelSpecError(
            f"model spec {spec!r} names a file but no factory; use {spec}:FACTORY, where "
            "FACTORY is a function in the file that returns the model"
        )
    raise ModelSpecError(f"cannot read model spec {spec!r}; expected {_SPEC_FORMS}")


def default_input_shape(spec: str) -> tuple[int, ...]:
    """The input shape to trace ``spec`` with when the user gives none.

    Example:
        >>> default_input_shape("torchvision:resnet18")
        (1, 3, 224, 224)
        >>> default_input_shape("torchvision:inception_v3")
        (1, 3, 299, 299)
    """
    name = spec.rpartition(":")[2]
    size = _INPUT_SIZE.get(name, 224)
    return (1, 3, size, size)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape such as ``"1,3,224,224"`` (``"1x3x224x224"`` also works).

    Raises:
        ModelSpecError: the text is not a list of at least two positive integers.

    Example:
        >>> parse_input_shape("1,3,64,64")
        (1, 3, 64, 64)
    """
    parts = [p.strip() for p in re.split(r"[,x]", text.strip().strip("()[]"))]
    if not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
        raise ModelSpecError(
            f"cannot read input shape {text!r}; expected comma-separated integers "
            "such as 1,3,224,224"
        )
    dims = tuple(int(p) for p in parts)
    if len(dims) < 2:
        raise ModelSpecError(
            f"input shape {text!r} has {len(dims)} dimension; give at least batch and "
            "channels, such as 1,3,224,224"
        )
    if any(d <= 0 for d in dims):
        raise ModelSpecError(f"input shape {text!r} has a dimension that is not positive")
    return dims


def _require_name(spec: str, name: str) -> str:
    if not name.strip():
        raise ModelSpecError(f"model spec {spec!r} has no name after ':'; expected {_SPEC_FORMS}")
    return name.strip()


def _load_torchvision(name: str) -> torch.nn.Module:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        hint = difflib.get_close_matches(name, known, n=3)
        maybe = f"did you mean {', '.join(hint)}? " if hint else ""
        raise ModelSpecError(
            f"unknown torchvision model {name!r}; {maybe}list the valid names with: "
            f"{_LIST_TORCHVISION}"
        )
    config: dict[str, Any] = {"weights": None}
    if name in _AUX_LOGITS:
        config["aux_logits"] = False  # one output, so the traced graph has one output
    return torchvision.models.get_model(name, **config)


def _load_timm(name: str) -> torch.nn.Module:
    try:
        import timm
    except ImportError as err:
        raise ModelSpecError(
            f"timm:{name} needs the timm package, which is not installed; run: pip install timm"
        ) from err
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as err:  # timm's "Unknown model (...)"
        raise ModelSpecError(
            f"unknown timm model {name!r} ({err}); list the valid names with: {_LIST_TIMM}"
        ) from err
    return _check_module(model, f"timm:{name}")


def _load_from_file(path: Path, factory_name: str) -> torch.nn.Module:
    if not path.is_file():
        raise ModelSpecError(f"model file {str(path)!r} does not exist")
    module = _import_file(path)
    factory = getattr(module, factory_name, None)
    where = f"{path}:{factory_name}"
    if factory is None:
        public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ModelSpecError(
            f"{str(path)!r} has no attribute {factory_name!r}; "
            f"callables it defines: {', '.join(public) or 'none'}"
        )
    if not callable(factory):
        raise ModelSpecError(f"{where} is a {type(factory).__name__}, not a callable factory")
    try:
        model = factory()
    except Exception as err:
        raise ModelSpecError(
            f"{where}() raised {type(err).__name__}: {err} (it is called with no arguments)"
        ) from err
    return _check_module(model, where)


def _import_file(path: Path) -> Any:
    """Import ``path`` as a module, with its folder on ``sys.path`` while it runs."""
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"_reconvene_model_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so pickling and dataclasses inside it work
    folder = str(path.parent)
    sys.path.insert(0, folder)  # so the file can import its sibling modules
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        message = f"importing {str(path)!r} failed: {type(err).__name__}: {err}"
        raise ModelSpecError(message) from err
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _check_module(model: object, where: str) -> torch.nn.Module:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{where} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
