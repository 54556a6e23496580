"""ShrinkPass: rewrite modules to the kept channels (the only pass that mutates)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.passes.shape_prop import TensorMetadata

from ..costs import CONV_TYPES, NORM_TYPES
from ..meta import CHANNELS, KEEP, TENSOR_META, ChannelInfo, ChannelKeep

__all__ = ["ShrinkPass", "default_init"]

InitFn = Callable[[nn.Module, torch.Generator], None]


def default_init(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialize a narrowed layer at its new shape, as torchvision initializes CNNs.

    Convs: Kaiming normal (fan-out, ReLU), zero bias. Linear: PyTorch's default
    (Kaiming uniform, a=sqrt(5)) at the new fan-in. Norms: weight 1, bias 0, fresh stats.
    """
    with torch.no_grad():
        if isinstance(module, CONV_TYPES):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features) if module.in_features else 0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()


class ShrinkPass(PassBase):
    """Slices every conv, linear and norm module to the kept channels of PlanPass.

    Modules stay at their qualified names; weights, biases, norm affine parameters and
    running statistics are sliced; ``groups`` is recomputed. With ``reinit=True`` narrowed
    layers are re-initialized by ``init_fn`` (default :func:`default_init`) from a generator
    seeded with ``seed``. The graph is linted and recompiled.

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(torch.randn(1, 3, 8, 8),))
        >>> gm.get_submodule("0").out_channels < 16
        True
    """

    def __init__(self, *, reinit: bool = True, seed: int = 0, init_fn: InitFn | None = None):
        super().__init__()
        self.reinit = reinit
        self.seed = seed
        self.init_fn = init_fn or default_init

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        generator = torch.Generator().manual_seed(self.seed)
        done: set[str] = set()
        modified = False
        for node in graph_module.graph.nodes:
            if node.op != "call_module" or node.target in done:
                continue
            done.add(str(node.target))
            module = graph_module.get_submodule(str(node.target))
            out_keep = _keep(node)
            in_keep = _keep(node.args[0]) if node.args else None
            try:
                if isinstance(module, CONV_TYPES):
                    changed = _shrink_conv(module, in_keep, out_keep)
                elif isinstance(module, nn.Linear):
                    changed = _shrink_linear(module, in_keep, out_keep)
                elif isinstance(module, NORM_TYPES) and _norms_channel_dim(module, node):
                    changed = _shrink_norm(module, out_keep)
                else:
                    changed = False
            except Exception as exc:
                raise RuntimeError(
                    f"ShrinkPass failed on module {node.target!r} ({type(module).__name__}) "
                    f"at node {node.format_node()}: {exc}"
                ) from exc
            if changed and self.reinit:
                self.init_fn(module, generator)
            modified |= changed
        graph_module.graph.lint()
        graph_module.recompile()
        return PassResult(graph_module, modified)


def _keep(arg: object) -> ChannelKeep | None:
    if isinstance(arg, torch.fx.Node):
        keep = arg.meta.get(KEEP)
        if isinstance(keep, ChannelKeep) and keep.narrowed:
            return keep
    return None


def _norms_channel_dim(module: nn.Module, node: torch.fx.Node) -> bool:
    """A LayerNorm's parameters follow the channels only when it normalises them alone."""
    if not isinstance(module, nn.LayerNorm):
        return True
    info = node.meta.get(CHANNELS)
    meta = node.meta.get(TENSOR_META)
    return (
        isinstance(info, ChannelInfo)
        and isinstance(meta, TensorMetadata)
        and info.dim == len(meta.shape) - 1
        and len(module.normalized_shape) == 1
    )


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    """A parameter from a sliced tensor (advanced indexing has already copied it)."""
    return nn.Parameter(t.detach().contiguous(), requires_grad=like.requires_grad)


def _shrink_conv(m: nn.Module, in_keep: ChannelKeep | None, out_keep: ChannelKeep | None) -> bool:
    assert isinstance(m, CONV_TYPES)
    if in_keep is not None and in_keep.size != m.in_channels:
        in_keep = None
    if out_keep is not None and out_keep.size != m.out_channels:
        out_keep = None
    if in_keep is None and out_keep is None:
        return False
    g, per_in = m.groups, m.in_channels // m.groups
    in_idx = in_keep.index if in_keep is not None else torch.arange(m.in_channels)
    out_idx = out_keep.index if out_keep is not None else torch.arange(m.out_channels)
    weight = m.weight[out_idx]
    if per_in == 1:
        new_groups = g if g == 1 else in_idx.numel()
        if g > 1 and new_groups * (m.out_channels // g) != out_idx.numel():
            raise ValueError("depthwise groups lost some but not all of their outputs")
    else:
        positions = (in_idx % per_in).view(g, -1) if in_idx.numel() % g == 0 else None
        if positions is None or not bool((positions == positions[:1]).all()):
            raise ValueError("grouped conv keeps different input positions in its groups")
        weight = weight[:, positions[0]]
        new_groups = g
    m.weight = _param(weight, m.weight)
    if m.bias is not None:
        m.bias = _param(m.bias[out_idx], m.bias)
    m.in_channels, m.out_channels, m.groups = in_idx.numel(), out_idx.numel(), new_groups
    return True


def _shrink_linear(m: nn.Linear, in_keep: ChannelKeep | None, out_keep: ChannelKeep | None) -> bool:
    if in_keep is not None and in_keep.size != m.in_features:
        in_keep = None
    if out_keep is not None and out_keep.size != m.out_features:
        out_keep = None
    if in_keep is None and out_keep is None:
        return False
    weight = m.weight
    if out_keep is not None:
        weight = weight[out_keep.index]
        if m.bias is not None:
            m.bias = _param(m.bias[out_keep.index], m.bias)
        m.out_features = out_keep.index.numel()
    if in_keep is not None:
        weight = weight[:, in_keep.index]
        m.in_features = in_keep.index.numel()
    m.weight = _param(weight, m.weight)
    return True


def _shrink_norm(m: nn.Module, keep: ChannelKeep | None) -> bool:
    if keep is None:
        return False
    idx = keep.index
    if isinstance(m, nn.LayerNorm):
        if tuple(m.normalized_shape) != (keep.size,):
            return False
        m.normalized_shape = (idx.numel(),)
    elif isinstance(m, nn.GroupNorm):
        m.num_channels = idx.numel()
    else:
        m.num_features = idx.numel()
    for name, p in list(m.named_parameters(recurse=False)):
        if p.shape[:1] == (keep.size,):
            setattr(m, name, _param(p[idx], p))
    for name, b in list(m.named_buffers(recurse=False)):
        if b is not None and b.dim() >= 1 and b.shape[0] == keep.size:
            m.register_buffer(name, b[idx].clone())
    return True
