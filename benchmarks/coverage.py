"""Coverage: compile, verify and export every torchvision classification model, one model
per timm convnet family, Ultralytics YOLO, torchvision segmentation models, detection
backbones and full detectors.

For each model (``weights=None``, eval mode, seed 0; input 1x3x224x224, 299 for
inception_v3, or ``--size``; vit/swin/maxvit always 224):

1. ``rfx.compile(model, budget, method="magnitude", reinit=False)`` (default strategy,
   ``reconvene`` since 0.2.0)
2. ``rfx.verify(model, gm, (x,))``: the compact model equals the original with the removed
   channels zeroed (``exact`` False: approximate ops, shapes/finiteness only)
3. ``reconvene_fx.emit.export_onnx(gm, ...)`` into a temp dir, which checks the file with
   ``onnx.checker`` and compares onnxruntime's output with PyTorch's (atol scaled down to
   1e-4 x max|output| when the outputs are smaller than 1)

Status per model:
    ok       all three passed, the achieved params ratio is within the budget and the
             model came out of analyze/compile/verify/export bit-identical
    refused  compile raised a ReconveneError (TraceError, BudgetError, ...) while tracing,
             analysing or planning: the library declined the model
    failed   anything else: another exception; a ReconveneError raised after the plan was
             made (the shrunk model no longer runs, a bug rather than a refusal); verify or
             ONNX failure; budget not met; timeout or crash (each model runs in its own
             subprocess)

Whether the plan was made is read from the library's logger (``reconvene_fx.log.logger``),
captured during compile: every pass logs ``"<PassName> done in X.XXs"`` when it finishes,
so a ``PlanPass done`` line means the error came after planning. An error whose message
names ``ShrinkPass`` counts as after planning too.

Suites (``--suite``): ``torchvision`` (default: every classification model),
``timm`` (:data:`TIMM_MODELS`, ``pretrained=False``, each at its own input size) and
``detection`` (:data:`DETECTION_MODELS`: YOLOv8n/-seg and YOLO11n from their yaml configs
at 640x640, torchvision segmentation models and FPN detection backbones at 320x320, and
four full torchvision detectors, ``tv/detection/<function>``, ``weights=None,
weights_backbone=None``, on one 3x256x256 image in a list, as their forward takes it).
Every call is plain: no leaf modules, rules or wrappers. The detectors' own forward cannot
be traced (it iterates over the images): compile returns the model with its traceable
submodules compiled in place, verify checks each of them against the original on the
inputs the model gives it, and ONNX is not checked for them (the model as a whole does
not export; ``onnx`` is ``"not checked"`` in their record). For the timm and detection suites
Torch-Pruning runs beside ours in its own subprocess (MagnitudePruner, L1 importance,
pruning_ratio 0.3, the last conv/linear or the YOLO head ignored): ``ok`` (pruned, the model
runs and its outputs keep their shapes), ``wrong`` (pruned but it no longer runs, or an
output changed shape), ``crash`` (the pruner raised) or ``timeout``.

Usage:
    .venv/bin/python benchmarks/coverage.py                      # all models
    .venv/bin/python benchmarks/coverage.py --suite timm         # results/coverage_timm.*
    .venv/bin/python benchmarks/coverage.py --models resnet18,vgg16 --update
    .venv/bin/python benchmarks/coverage.py --size 128 --budget 0.25

Writes benchmarks/results/coverage.json and coverage.md (after every model, so an
interrupted run keeps what it measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _common as C

if TYPE_CHECKING:
    import torch

__all__ = ["main", "run_one"]

_SCRIPT = str(Path(__file__).resolve())

# "<PassName> done in 1.23s": what each pass logs when it finishes.
_PASS_DONE = re.compile(r"^(\w+) done in ")
# Passes whose errors mean the plan was made: the library accepted the model.
_AFTER_PLAN = ("ShrinkPass",)


class _LogRecorder(logging.Handler):
    """Keeps the messages logged to the library's logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _library_log() -> Iterator[list[str]]:
    """The INFO (and higher) messages of ``reconvene_fx.log.logger`` while active."""
    from reconvene_fx.log import logger

    recorder = _LogRecorder()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    try:
        yield recorder.messages
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


def _passes_done(messages: list[str]) -> list[str]:
    """The passes that logged that they finished, in order."""
    return [m.group(1) for m in map(_PASS_DONE.match, messages) if m]


def _after_plan(exc: BaseException, passes_done: list[str]) -> bool:
    """Whether a compile error came after the plan was made (a bug, not a refusal)."""
    return "PlanPass" in passes_done or str(exc).lstrip().startswith(_AFTER_PLAN)


def _plain(value: Any) -> Any:
    """A comparable summary of a plain module attribute."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return tuple(value)
    if isinstance(value, (dict, list, tuple, set)):
        return (type(value).__name__, len(value))
    return type(value).__name__


def _fingerprint(model: torch.nn.Module) -> list[tuple[Any, ...]]:
    return [
        (name, type(m).__name__, m.training,
         tuple(sorted((k, _plain(v)) for k, v in vars(m).items() if not k.startswith("_"))))
        for name, m in model.named_modules()
    ]  # fmt: skip


def _changed(
    model: torch.nn.Module, state: dict[str, torch.Tensor], shape: list[tuple[Any, ...]]
) -> str | None:
    """What of the caller's model differs from the snapshot, or None."""
    import torch

    now = model.state_dict(keep_vars=True)
    if now.keys() != state.keys():
        return "its state_dict keys"
    for key, value in state.items():
        if now[key].shape != value.shape or not torch.equal(now[key].detach(), value.detach()):
            return f"tensor {key}"
    for before, after in zip(shape, _fingerprint(model), strict=False):
        if before != after:
            return f"module {before[0] or '(root)'} ({before[1]}) attributes or flags"
    return None if len(shape) == len(_fingerprint(model)) else "its modules"


# full torchvision detectors: ``tv/detection/<function in torchvision.models.detection>``
_DETECTORS = "tv/detection/"


def _build(name: str, size: int | None) -> tuple[Any, tuple[Any, ...]]:
    """:func:`_common.build`, and the full detectors: in eval mode, ``weights=None`` and
    ``weights_backbone=None``, their example inputs one image (3x256x256, or ``size``) in
    a list."""
    if not name.startswith(_DETECTORS):
        return C.build(name, size)
    import torch
    import torchvision.models.detection as detection

    torch.manual_seed(0)
    fn = getattr(detection, name.removeprefix(_DETECTORS))
    model = fn(weights=None, weights_backbone=None).eval()
    side = size or 256
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(0))
    return model, ([image],)


def _first_tensor(inputs: tuple[Any, ...]) -> torch.Tensor:
    from torch.utils._pytree import tree_leaves

    return next(t for t in tree_leaves(inputs) if hasattr(t, "shape"))


def run_one(name: str, budget: float, size: int | None) -> dict[str, Any]:
    """Compile, verify and export one model in this process; return its record."""
    import io
    import tempfile
    import warnings

    import torch

    import reconvene_fx as rfx
    from reconvene_fx.emit import export_onnx

    model, inputs = _build(name, size)
    rec: dict[str, Any] = {
        "model": name,
        "input": list(_first_tensor(inputs).shape),
        "status": "failed",
        "reason": "",
        "stage": "compile",
    }
    # the caller's model must come out bit-identical: state, flags, plain attributes
    state_before = {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()}
    shape_before = _fingerprint(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        try:
            with _library_log() as messages, contextlib.redirect_stderr(io.StringIO()):
                # checked for leaving the model alone; a model whose own forward cannot be
                # traced is not analysed, but compile may still compile it in place
                with contextlib.suppress(rfx.TraceError):
                    rfx.analyze(model, budget, inputs)
                t0 = time.perf_counter()
                gm = rfx.compile(model, budget=budget, example_inputs=inputs,
                                 method="magnitude", reinit=False, progress=True)  # fmt: skip
        except rfx.ReconveneError as exc:
            done = _passes_done(messages)
            rec["passes_done"] = done
            planned = _after_plan(exc, done)
            rec["compile_stage"] = "after plan" if planned else "trace/analyse/plan"
            cause = exc.__cause__
            rec["cause"] = None if cause is None else C.first_line(cause)
            if planned:
                # The plan was made and shrinking broke the model: not a refusal of the input.
                rec["reason"] = f"compile (after the plan): {C.first_line(exc)}"
            else:
                rec.update(status="refused", reason=C.first_line(exc))
            return rec
        except Exception as exc:
            rec["reason"] = f"compile: {C.first_line(exc)}"
            return rec
        finally:
            rec["compile_s"] = round(time.perf_counter() - t0, 3)
    # Only our own warnings (unknown ops made boundaries, ...), not torch's or torchvision's.
    ours = [str(w.message) for w in caught if "reconvene_fx" in w.category.__module__
            and w.category.__name__ != "SubmoduleCompileWarning"]  # fmt: skip
    rec["warnings"] = len(ours)
    rec["warning_examples"] = sorted({C.first_line(m, 200) for m in ours})[:3]

    rep = rfx.report(gm)
    rec.update(
        params_before=rep.params_before,
        params_after=rep.params_after,
        params_ratio=round(rep.params_ratio, 4),
        # the keys of the stored results, which --update merges with (they count MACs)
        flops_before=rep.macs_before,
        flops_after=rep.macs_after,
        flops_ratio=round(rep.macs_ratio, 4),
        layers=len(rep.layers),
        layers_narrowed=sum(1 for lp in rep.layers.values() if lp.narrowed),
        approximate=len(rep.approximate),
    )
    in_place = not isinstance(gm, torch.fx.GraphModule)
    if in_place:
        rec["compiled_in_place"] = rep.compiled
        rec["left_as_is"] = rep.left

    rec["stage"] = "verify"
    t0 = time.perf_counter()
    try:
        res = rfx.verify(model, gm, inputs)
        rec.update(verify_exact=bool(res.exact), verify_max_error=float(res.max_error))
        if in_place:  # errors are the compiled submodules'; the outputs are boxes
            rec.update(output_scale=None, verify_rel_error=None)
        else:
            rec.update(_relative_error(gm, inputs, float(res.max_error)))
    except Exception as exc:
        rec["verify_max_error"] = getattr(exc, "max_error", None)
        rec["reason"] = f"verify: {C.first_line(exc)}"
        return rec
    finally:
        rec["verify_s"] = round(time.perf_counter() - t0, 3)
    if rec["output_scale"] == 0.0:
        # torchvision zero-initializes some classifier heads (ViT): the output is 0 whatever
        # the body computes and verify compares zeros. Check again with that head drawn.
        rec["stage"] = "verify (zero head redrawn)"
        try:
            rec.update(_verify_with_drawn_head(model, inputs, budget))
        except Exception as exc:
            rec["reason"] = f"verify with the zero-initialized head redrawn: {C.first_line(exc)}"
            return rec

    rec["stage"] = "onnx"
    # export_onnx's default atol (1e-4) would pass anything on outputs of ~1e-15
    # (efficientnet at init): scale it down with the outputs, never up.
    scale = rec["output_scale"]
    atol = min(1e-4, 1e-4 * scale) if scale else 1e-4
    rec["onnx_atol"] = atol
    t0 = time.perf_counter()
    try:
        if in_place:
            raise _NotChecked
        with tempfile.TemporaryDirectory(prefix="rfx_cov_") as tmp:
            path = export_onnx(gm, Path(tmp) / f"{name}.onnx", inputs, atol=atol)
            rec["onnx_mb"] = round(sum(p.stat().st_size for p in path.parent.iterdir()) / 2**20, 2)
    except _NotChecked:
        rec["onnx"] = "not checked"
    except Exception as exc:
        rec["reason"] = f"onnx: {C.first_line(exc)}"
        return rec
    finally:
        rec["onnx_s"] = round(time.perf_counter() - t0, 3)

    rec["stage"] = "model untouched"
    changed = _changed(model, state_before, shape_before)
    rec["model_untouched"] = changed is None
    if changed is not None:
        rec["reason"] = f"the caller's model changed: {changed}"
        return rec

    rec["stage"] = "done"
    if rep.params_ratio > budget + 1e-9:
        rec["reason"] = f"budget not met: params ratio {rep.params_ratio:.4f} > {budget}"
        return rec
    rec["status"] = "ok"
    rec["reason"] = "exact" if rec["verify_exact"] else "approximate (verify checked shapes only)"
    return rec


class _NotChecked(Exception):
    """ONNX is not checked for a model whose submodules were compiled in place."""


def _verify_with_drawn_head(model: Any, inputs: tuple, budget: float) -> dict[str, Any]:
    """Compile and verify a copy of ``model`` whose all-zero conv/linear weights are drawn
    from N(0, 0.02) (seeded), so the output depends on the pruned body."""
    import copy

    import torch

    import reconvene_fx as rfx

    drawn = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    names = []
    with torch.no_grad():
        for name, m in drawn.named_modules():
            w = getattr(m, "weight", None)
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and not w.any():
                w.copy_(torch.randn(w.shape, generator=gen) * 0.02)
                names.append(name)
    gm = rfx.compile(drawn, budget=budget, example_inputs=inputs, method="magnitude",
                     reinit=False)  # fmt: skip
    res = rfx.verify(drawn, gm, inputs)
    rel = _relative_error(gm, inputs, float(res.max_error))
    return {
        "head_redrawn": names,
        "head_redrawn_verify_exact": bool(res.exact),
        "head_redrawn_max_error": float(res.max_error),
        "head_redrawn_output_scale": rel["output_scale"],
        "head_redrawn_rel_error": rel["verify_rel_error"],
    }


def _relative_error(gm: Any, inputs: tuple, max_error: float) -> dict[str, float]:
    """verify's tolerance is ``atol + rtol * max|ref|`` with atol=1e-5, which any error
    passes when a model's outputs at initialization are tiny (efficientnet: ~1e-14). So also
    record the output scale and the error relative to it."""
    import torch
    from torch.utils._pytree import tree_leaves

    with torch.no_grad():
        outs = [t for t in tree_leaves(gm(*inputs)) if isinstance(t, torch.Tensor)]
    scale = max((float(t.abs().max()) for t in outs if t.numel()), default=0.0)
    rel = max_error / scale if scale > 0 else (0.0 if max_error == 0 else float("inf"))
    return {"output_scale": scale, "verify_rel_error": rel}


# one model per timm convnet family (hybrids with conv stems included), at most ~60 M params
TIMM_MODELS = [
    "resnet18", "resnet50d", "resnext26ts", "seresnet50", "ecaresnet26t", "resnest14d",
    "res2net50_14w_8s", "skresnet18", "regnetx_002", "regnety_004", "regnetz_b16",
    "efficientnet_b0", "tf_efficientnet_b0", "efficientnetv2_rw_t", "tf_efficientnetv2_b0",
    "mobilenetv3_large_100", "tf_mobilenetv3_small_100", "mobilenetv2_100",
    "mobilenetv4_conv_small", "mixnet_s", "tf_mixnet_s", "mnasnet_100", "fbnetc_100",
    "spnasnet_100", "ghostnet_100", "ghostnetv2_100", "lcnet_050", "tinynet_a",
    "hardcorenas_a", "densenet121", "dla34", "dpn68", "cspresnet50", "cspdarknet53",
    "darknet17", "cs3darknet_s", "vgg11", "rexnet_100", "repvgg_a0", "repghostnet_050",
    "hrnet_w18_small", "inception_v3", "xception41", "selecsls42b", "ese_vovnet19b_dw",
    "tresnet_m", "gernet_s", "convnext_atto", "convnextv2_atto", "nf_resnet26",
    "dm_nfnet_f0", "resnetv2_50x1_bit", "mobileone_s0", "fastvit_t8", "repvit_m1",
    "inception_next_tiny", "poolformer_s12", "edgenext_xx_small", "hgnet_tiny",
    "hgnetv2_b0", "starnet_s1", "efficientformer_l1", "mobilevit_xxs", "gcresnext26ts",
    "bat_resnext26ts", "lambda_resnet26t",
]  # fmt: skip
DETECTION_MODELS = [
    "yolo/yolov8n.yaml", "yolo/yolov8n-seg.yaml", "yolo/yolo11n.yaml",
    "tv/fcn_resnet50", "tv/deeplabv3_resnet50", "tv/deeplabv3_mobilenet_v3_large",
    "tv/lraspp_mobilenet_v3_large", "tv/resnet18_fpn", "tv/resnet50_fpn",
    "tv/mobilenet_v3_large_fpn",
    "tv/detection/fasterrcnn_mobilenet_v3_large_fpn", "tv/detection/retinanet_resnet50_fpn",
    "tv/detection/maskrcnn_resnet50_fpn", "tv/detection/ssdlite320_mobilenet_v3_large",
]  # fmt: skip
SUITES = {
    "torchvision": ("Coverage: torchvision classification models", None),
    "timm": ("Coverage: timm convnets (one per family)", [f"timm/{n}" for n in TIMM_MODELS]),
    "detection": ("Coverage: YOLO, segmentation and detection backbones", DETECTION_MODELS),
}
TP_RATIO = 0.3


def run_torch_pruning(name: str, size: int | None) -> dict[str, Any]:
    """Torch-Pruning on the same model: ok, wrong (does not run / output shapes changed)
    or crash."""
    import torch
    import torch_pruning as tp
    from torch.utils._pytree import tree_leaves

    model, inputs = _build(name, size)
    detector = name.startswith(_DETECTORS)

    def shapes_of(out: Any) -> list[Any]:  # a detector's count of boxes varies: not compared
        return [t.shape[1:] if detector else t.shape
                for t in tree_leaves(out) if isinstance(t, torch.Tensor)]  # fmt: skip

    with torch.no_grad():
        shapes = shapes_of(model(*inputs))
    ignored = [m for m in model.modules() if type(m).__name__ in ("Detect", "Segment")]
    if not ignored:
        last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        ignored = last[-1:]
    before = sum(p.numel() for p in model.parameters())
    try:
        pruner = tp.pruner.MagnitudePruner(
            model, inputs if detector else inputs[0],
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=TP_RATIO, ignored_layers=ignored,
        )  # fmt: skip
        pruner.step()
    except Exception as exc:
        return {"tp": "crash", "tp_reason": C.first_line(exc, 160)}
    after = sum(p.numel() for p in model.parameters())
    try:
        with torch.no_grad():
            out = shapes_of(model(*inputs))
    except Exception as exc:
        return {"tp": "wrong", "tp_reason": f"does not run: {C.first_line(exc, 160)}"}
    if out != shapes:
        return {"tp": "wrong", "tp_reason": "output shapes changed"}
    return {"tp": "ok", "tp_params_ratio": round(after / before, 4)}


def _line(rec: dict[str, Any]) -> str:
    status = rec["status"]
    if status == "ok":
        detail = (f"params {rec['params_ratio']:.3f} MACs {rec['flops_ratio']:.3f} "
                  f"narrowed {rec['layers_narrowed']}/{rec['layers']} "
                  f"verify {'exact' if rec['verify_exact'] else 'approx'} "
                  f"err {rec['verify_max_error']:.1e}")  # fmt: skip
    else:
        detail = rec["reason"]
    secs = rec.get("compile_s")
    timing = f"compile {secs:7.2f}s" if isinstance(secs, (int, float)) else "compile     n/a"
    tp = f"  TP {rec['tp']}" if "tp" in rec else ""
    return (f"{rec['model']:<20} {status:<8} {timing}  wall {rec.get('wall_s', 0):6.1f}s  "
            f"{detail}{tp}")  # fmt: skip


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _notes(r: dict[str, Any]) -> str:
    """Remarks on an ok model: zero-initialized head, unknown ops left as boundaries."""
    notes = []
    if r.get("compiled_in_place"):
        parts = r["compiled_in_place"]
        notes.append(f"forward not traceable: {len(parts)} submodules compiled in place "
                     f"({', '.join(parts)}), ONNX not checked")  # fmt: skip
    if r.get("head_redrawn"):
        heads = ", ".join(r["head_redrawn"])
        rel = r["head_redrawn_rel_error"]
        notes.append(f"output is 0 at init (zero-initialized {heads}); with it redrawn: "
                     f"verify rel error {rel:.1e}")  # fmt: skip
    if r.get("warnings"):
        ops = sorted({m.split("'")[1] if "'" in m else m for m in r["warning_examples"]})
        notes.append(f"{r['warnings']} ops without a channel rule left as boundaries "
                     f"(e.g. {', '.join(ops[:2])})")  # fmt: skip
    return "; ".join(notes)


def _tp_cell(r: dict[str, Any]) -> str:
    if r.get("tp") == "ok":
        return f"ok ({r['tp_params_ratio']:.3f})"
    detail = r.get("tp_reason", "")
    return f"{r.get('tp', '-')}{': ' + detail if detail else ''}".replace("|", "\\|")


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    recs = data["results"]
    counts = {s: sum(1 for r in recs if r["status"] == s) for s in ("ok", "refused", "failed")}
    exact = sum(1 for r in recs if r["status"] == "ok" and r.get("verify_exact"))
    cfg = data["config"]
    suite = cfg.get("suite", "torchvision")
    if cfg["size"]:
        side = f"1x3x{cfg['size']}x{cfg['size']}"
    elif suite == "torchvision":
        side = "1x3x224x224 (inception_v3 299)"
    else:
        side = ("each model's own (timm's pretrained_cfg; YOLO 640, segmentation/FPN 320; "
                "full detectors one 3x256x256 image in a list)")  # fmt: skip
    with_tp = any("tp" in r for r in recs)
    tp_counts = {s: sum(1 for r in recs if r.get("tp") == s)
                 for s in ("ok", "wrong", "crash", "timeout")}  # fmt: skip
    lines = [
        f"# {SUITES[suite][0]}",
        "",
        f"compile(budget={cfg['budget']}, method=magnitude, strategy="
        f"{cfg.get('strategy', 'uniform')}, reinit=False) -> verify -> "
        f"export_onnx (onnxruntime check); input {side}"
        f"{' (vit/swin/maxvit always 224)' if suite == 'torchvision' else ''}; "
        f"per-model timeout {cfg['timeout_s']} s.",
        "",
        f"Machine: {data['machine'].get('cpu', '?')}, {data['machine']['cpu_count']} cores, "
        f"torch {data['machine']['torch']}, torchvision {data['machine']['torchvision']}, "
        f"{C.library_label(data['machine'])}. "
        f"Run: {data['started']}.",
        "",
        f"**{counts['ok']} ok, {counts['refused']} refused, {counts['failed']} failed of "
        f"{len(recs)}** ({exact} of the ok models verified exactly)."
        + (
            f" Torch-Pruning (pruning_ratio {TP_RATIO}): {tp_counts['ok']} ok, "
            f"{tp_counts['wrong']} wrong, {tp_counts['crash']} crash, "
            f"{tp_counts['timeout']} timeout."
            if with_tp
            else ""
        ),
        "",
        "max error = rfx.verify's largest absolute difference; out scale = max |output| of "
        "the compact model; rel error = their ratio. verify's tolerance is "
        "1e-5 + 1e-4 * max|reference|, so on models whose outputs at initialization are tiny "
        "(efficientnet, mobilenet_v3) only the rel error column shows the check has teeth.",
        "",
        "| model | status | params ratio | MACs ratio | compile s | narrowed | verify | "
        "max error | out scale | rel error | reason |" + (" Torch-Pruning |" if with_tp else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_tp else ""),
    ]
    for r in recs:
        verify = {True: "exact", False: "approx"}.get(r.get("verify_exact"), "-")
        narrowed = f"{r['layers_narrowed']}/{r['layers']}" if "layers" in r else "-"
        reason = _notes(r) if r["status"] == "ok" else r["reason"]
        reason = reason.replace("|", "\\|")
        lines.append(
            f"| {r['model']} | {r['status']} | {_fmt(r.get('params_ratio'), '.3f')} | "
            f"{_fmt(r.get('flops_ratio'), '.3f')} | {_fmt(r.get('compile_s'), '.2f')} | "
            f"{narrowed} | {verify} | {_fmt(r.get('verify_max_error'), '.1e')} | "
            f"{_fmt(r.get('output_scale'), '.1e')} | {_fmt(r.get('verify_rel_error'), '.1e')} | "
            f"{reason} |" + (f" {_tp_cell(r)} |" if with_tp else "")
        )
    lines += ["", f"Totals: {counts['ok']} ok, {counts['refused']} refused, "
              f"{counts['failed']} failed of {len(recs)}", ""]  # fmt: skip
    path.write_text("\n".join(lines))


def _child(args: argparse.Namespace) -> int:
    C.memory_watchdog(args.child_out, {"model": args.models, "status": "failed"})
    if args.tp:
        Path(args.child_out).write_text(json.dumps(run_torch_pruning(args.models, args.size)))
        return 0
    rec = run_one(args.models, args.budget, args.size)
    Path(args.child_out).write_text(json.dumps(rec))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="comma-separated names (default: the suite's models)")
    p.add_argument("--suite", choices=sorted(SUITES), default="torchvision",
                   help="which models (default torchvision classifiers)")  # fmt: skip
    p.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning's runs")
    p.add_argument("--budget", type=float, default=0.5, help="fraction of params kept (0.5)")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="input side (default 224, 299 for inception_v3; vit/swin/maxvit: 224)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model (300)")
    p.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing coverage.json instead of replacing it",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default results/coverage.json, coverage_<suite>.json)",
    )
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--tp", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_out:
        return _child(args)

    default = SUITES[args.suite][1]
    if args.out is None:
        stem = "coverage" if args.suite == "torchvision" else f"coverage_{args.suite}"
        args.out = C.RESULTS / f"{stem}.json"
    names = C.parse_models(args.models, default or C.classification_models())
    run_tp = args.suite != "torchvision" and not args.no_tp
    config = {"suite": args.suite, "budget": args.budget, "size": args.size,
              "timeout_s": args.timeout,
              "method": "magnitude", "strategy": "reconvene (default)",
              "reinit": False}  # fmt: skip
    previous: list[dict[str, Any]] = []
    if args.update and args.out.exists():
        old = json.loads(args.out.read_text())
        previous = [r for r in old.get("results", []) if r["model"] not in names]
    data = {"config": config, "machine": C.machine(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "results": []}  # fmt: skip
    results: list[dict[str, Any]] = []
    print(f"coverage of {len(names)} models, budget {args.budget}", flush=True)
    for name in names:
        child_args = ["--models", name, "--budget", str(args.budget)]
        if args.size is not None:
            child_args += ["--size", str(args.size)]
        t0 = time.perf_counter()
        out = C.run_child(_SCRIPT, child_args, args.timeout)
        wall = round(time.perf_counter() - t0, 1)
        rec = out.result or {"model": name, "status": "failed", "reason": C.crash_reason(out)}
        if "reason" not in rec:  # the memory watchdog stopped the child
            rec["reason"] = rec.get("error", "no result")
        rec["wall_s"] = wall
        if run_tp:
            tp = C.run_child(_SCRIPT, [*child_args, "--tp"], args.timeout)
            rec.update(tp.result or {"tp": "timeout" if tp.timed_out else "crash",
                                     "tp_reason": C.crash_reason(tp)})  # fmt: skip
        results.append(rec)
        print(_line(rec), flush=True)
        data["results"] = sorted(previous + results, key=lambda r: r["model"])
        C.write_json(args.out, data)
        write_markdown(args.out.with_suffix(".md"), data)
    recs = data["results"]
    counts = {s: sum(1 for r in recs if r["status"] == s) for s in ("ok", "refused", "failed")}
    print(f"{counts['ok']} ok, {counts['refused']} refused, {counts['failed']} failed "
          f"of {len(recs)}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
