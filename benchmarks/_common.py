"""Helpers shared by the benchmark scripts: model list, model and input construction,
running one job in a fresh subprocess with a timeout, and writing results.

The scripts import this module as ``_common`` (``python benchmarks/<script>.py`` puts
``benchmarks/`` first on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS",
    "SubprocessOutcome",
    "build",
    "classification_models",
    "crash_reason",
    "first_line",
    "input_size",
    "library_label",
    "machine",
    "memory_watchdog",
    "parse_models",
    "run_child",
    "write_json",
]

RESULTS = Path(__file__).resolve().parent / "results"

# Models whose constructors fix the input resolution (position embeddings, window sizes).
_FIXED_224 = ("vit_", "swin", "maxvit")
# Constructor arguments beyond ``weights=None``.
_EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def classification_models() -> list[str]:
    """Every torchvision classification model, sorted by name."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def parse_models(spec: str | None, default: Sequence[str]) -> list[str]:
    """``"a,b,c"`` -> ``["a", "b", "c"]`` (unknown names raise), or ``default``.

    Names with a ``timm/``, ``yolo/`` or ``tv/`` prefix (see :func:`build`) are taken as
    they are."""
    if not spec:
        return list(default)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    known = set(classification_models())
    unknown = [n for n in names if n not in known and not n.startswith(_PREFIXES)]
    if unknown:
        raise SystemExit(f"unknown torchvision classification model(s): {', '.join(unknown)}")
    return names


def input_size(name: str, size: int | None) -> int:
    """Side of the square input: ``size`` (default 224, 299 for inception_v3), but always
    224 for models built for a fixed resolution."""
    if name.startswith(_FIXED_224):
        return 224
    if size is None:
        return 299 if name == "inception_v3" else 224
    return size


_PREFIXES = ("timm/", "yolo/", "tv/")


def _build_library_model(name: str, size: int | None) -> tuple[Any, int]:
    """``timm/<model>`` (``pretrained=False``, its own input size), ``yolo/<yaml>``
    (Ultralytics, from the yaml config shipped in the package, 640x640) or
    ``tv/<function>`` (a torchvision segmentation model or detection backbone)."""
    kind, _, model_name = name.partition("/")
    if kind == "timm":
        import timm

        model = timm.create_model(model_name, pretrained=False)
        return model, size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    if kind == "yolo":
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel

        cls = SegmentationModel if "-seg" in model_name else DetectionModel
        return cls(model_name, verbose=False), size or 640
    import torchvision.models.detection.backbone_utils as bb
    import torchvision.models.segmentation as seg

    if model_name.endswith("_fpn"):  # a detection backbone with its FPN
        backbone = model_name.removesuffix("_fpn")
        if backbone.startswith("mobilenet"):
            model = bb.mobilenet_backbone(backbone_name=backbone, weights=None, fpn=True)
            return model, size or 320
        return bb.resnet_fpn_backbone(backbone_name=backbone, weights=None), size or 320
    fn = getattr(seg, model_name)
    return fn(weights=None, weights_backbone=None), size or 320


def build(name: str, size: int | None = None, seed: int = 0) -> tuple[Any, tuple[Any, ...]]:
    """A freshly initialized model in eval mode (``weights=None``) and its example inputs
    ``(x,)`` with ``x`` of shape ``1x3xSxS``; both drawn from ``seed``."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    if name.startswith(_PREFIXES):
        model, side = _build_library_model(name, size)
        model.eval()
        x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed))
        return model, (x,)
    model = torchvision.models.get_model(name, weights=None, **_EXTRA_KWARGS.get(name, {}))
    model.eval()
    side = input_size(name, size)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed))
    return model, (x,)


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception message (or string), shortened."""
    text = exc if isinstance(exc, str) else str(exc)
    for line in text.splitlines():
        if line.strip():
            text = line.strip()
            break
    else:
        text = ""
    if not isinstance(exc, str):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class SubprocessOutcome:
    """What came back from :func:`run_child`: the JSON result (``None`` when the child did
    not write one), and otherwise why (``timeout``, or a crash with the end of its log)."""

    result: dict[str, Any] | None
    timed_out: bool
    returncode: int | None
    log_tail: str


def run_child(script: str, args: Sequence[str], timeout: float) -> SubprocessOutcome:
    """Run ``python script --child-out FILE *args`` in a fresh interpreter.

    The child writes its result as JSON to FILE. Its stdout and stderr (exporters can be
    very chatty) go to a log file of which only the tail is kept.
    """
    with tempfile.TemporaryDirectory(prefix="rfx_bench_") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "child.log"
        cmd = [sys.executable, script, "--child-out", str(out), *args]
        timed_out, rc = False, None
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.kill()
                proc.wait()
        tail = log.read_bytes()[-4000:].decode("utf-8", "replace")
        result = None
        if out.exists():
            try:
                result = json.loads(out.read_text())
            except json.JSONDecodeError:
                result = None
        return SubprocessOutcome(result, timed_out, rc, tail)


def crash_reason(outcome: SubprocessOutcome) -> str:
    """A one-line reason for a child that wrote no result."""
    if outcome.timed_out:
        return "timeout"
    rc = outcome.returncode
    lines = [ln.strip() for ln in outcome.log_tail.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if rc is not None and rc < 0:
        how = f"killed by signal {-rc}" + (" (out of memory?)" if rc == -9 else "")
    else:
        how = f"exit code {rc}"
    return f"crashed: {how}" + (f"; last output: {last[:200]}" if last else "")


def memory_watchdog(
    out: str | Path, extra: dict[str, Any] | None = None, fraction: float = 0.75,
    period: float = 0.5,
) -> None:  # fmt: skip
    """In a child: exit at once (code 3), leaving ``extra`` plus an error as JSON in ``out``,
    when this process's RSS passes ``fraction`` of the machine's RAM. A run of many models
    must not push the shared machine into swap or the OOM killer."""
    import threading

    try:
        with open("/proc/meminfo") as fh:
            total = int(fh.readline().split()[1]) * 1024
        page = os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    limit = fraction * total

    def watch() -> None:
        while True:
            try:
                with open("/proc/self/statm") as fh:
                    rss = int(fh.read().split()[1]) * page
            except (OSError, ValueError, IndexError):
                return
            if rss > limit:
                msg = f"memory limit: RSS {rss / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB"
                result = {**(extra or {}), "error": msg, "memory_limit": True}
                Path(out).write_text(json.dumps(result))
                os._exit(3)
            time.sleep(period)

    threading.Thread(target=watch, daemon=True, name="memory-watchdog").start()


def machine() -> dict[str, Any]:
    """Versions and hardware of the machine the numbers come from."""
    import torch
    import torchvision

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    info.update(_library_version())
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def _library_version() -> dict[str, Any]:
    """The commit of the checkout and whether reconvene_fx/ differs from it (read-only git
    calls: ``--no-optional-locks`` keeps ``git status`` from touching the index)."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "--no-optional-locks", "-C", str(root)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "reconvene_fx"],
                               capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "library_uncommitted_changes": bool(dirty.strip())}


def library_label(info: dict[str, Any]) -> str:
    """``reconvene_fx at b6402d6 (+ uncommitted changes)`` from :func:`machine`'s dict."""
    if not info.get("commit"):
        return "reconvene_fx (commit unknown)"
    extra = " + uncommitted changes" if info.get("library_uncommitted_changes") else ""
    return f"reconvene_fx at {info['commit']}{extra}"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (a partial run never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
