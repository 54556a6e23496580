"""The fixed training recipe of the accuracy study.

Chosen before any test accuracy was looked at, and the same for every model, condition and
seed: SGD with Nesterov momentum 0.9, learning rate 0.05 decayed by a per-step cosine to 0
over the whole run, weight decay 5e-4 on every parameter, batch 128 (the last, smaller batch
of an epoch kept), cross-entropy, no augmentation; ``EPOCHS`` epochs per data set: 5 on
MNIST (140 steps), 15 on the tiny digits set (165 steps), chosen from measured training
times alone so that the full study fits 45 minutes on 2 cores. The run seed fixes the global
RNG and, through its own generator, the order of the training batches. Test accuracy is
measured once, after the last epoch, in eval mode.

Models may be ``torch.fx.GraphModule``s with weight parametrizations (composite masks
registered with ``torch.nn.utils.parametrize``): the optimizer sees ``model.parameters()``
(the masked weights' ``original``), and after training every weight a mask holds is checked
to be exactly zero.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from .data import Dataset

__all__ = ["EPOCHS", "Recipe", "TrainResult", "check_masks", "evaluate", "recipe", "train"]

EPOCHS = {"mnist": 5, "digits": 15}


@dataclass(frozen=True)
class Recipe:
    """The hyper-parameters (recorded with the results)."""

    epochs: int
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine per step to 0"
    augmentation: str = "none"

    def as_dict(self) -> dict:
        return asdict(self)


def recipe(dataset: str, epochs: int | None = None) -> Recipe:
    """The recipe for ``dataset`` (``epochs`` overrides its epoch count, e.g. for --quick)."""
    return Recipe(epochs=EPOCHS[dataset] if epochs is None else epochs)


@dataclass(frozen=True)
class TrainResult:
    accuracy: float  # test accuracy in percent
    train_s: float  # wall time of the training loop
    final_loss: float  # mean training loss of the last epoch


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Accuracy in percent, in eval mode."""
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return 100.0 * correct / len(x)


def check_masks(model: nn.Module) -> int:
    """Assert that every weight a parametrization mask holds is exactly zero; return how
    many weights the masks hold."""
    held = 0
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        for p in module.parametrizations["weight"]:
            mask = getattr(p, "mask", None)
            if mask is None:
                continue
            off = ~mask.to(torch.bool)
            assert bool((module.weight.detach()[off] == 0).all()), f"{name}: masked weight moved"
            held += int(off.sum())
    return held


def train(model: nn.Module, data: Dataset, seed: int, rec: Recipe | None = None) -> TrainResult:
    """Train ``model`` on ``data`` with ``rec`` (default: :func:`recipe` of the data set);
    return its test accuracy (percent) and the training time."""
    rec = rec or recipe(data.name)
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        model.parameters(), lr=rec.lr, momentum=rec.momentum, nesterov=rec.nesterov,
        weight_decay=rec.weight_decay,
    )  # fmt: skip
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / rec.batch_size)
    total = max(rec.epochs * steps_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )
    start = time.perf_counter()
    loss_sum = 0.0
    for _ in range(rec.epochs):
        model.train()
        loss_sum = 0.0
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, rec.batch_size):
            idx = perm[i : i + rec.batch_size]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
    train_s = time.perf_counter() - start
    check_masks(model)
    accuracy = evaluate(model, data.x_test, data.y_test)
    return TrainResult(accuracy, train_s, loss_sum / n if rec.epochs else float("nan"))
