"""Pure PyTorch training: supervised fitting, distillation, evaluation. Knows nothing of Flower.

All randomness comes from an explicit ``torch.Generator`` so results are reproducible.
Batches are drawn by index from tensors already in memory (no DataLoader): for the small
models fedkd simulates, this is several times faster.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.kd_terms import ExtraTerm, StepBatch
from fedkd.knowledge import features_and_logits
from fedkd.losses import DistillLoss, get_loss
from fedkd.parse_lock import PARSE_LOCK

_FIRST_OPTIMIZER = threading.Event()


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (``adam``, ``sgd`` with momentum 0.9, ``adamw``).

    Adam and AdamW use the fused CPU kernel (about 20% faster for small students). The
    first one built in a process imports ``torch._dynamo`` (which parses ASTs); it is built
    under :data:`fedkd.parse_lock.PARSE_LOCK` so client threads cannot race it.
    """
    if not _FIRST_OPTIMIZER.is_set():
        with PARSE_LOCK:
            opt = _make_optimizer(name, params, lr)
            _FIRST_OPTIMIZER.set()
            return opt
    return _make_optimizer(name, params, lr)


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer '{name}'; allowed: adam, adamw, sgd")


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    return list(perm.split(batch_size))


def fit_supervised(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
) -> float:
    """Train ``model`` with cross-entropy on ``(x, y)``; returns the last epoch's mean loss."""
    model.train()
    last = float("nan")
    for _ in range(epochs):
        total, steps = 0.0, 0
        for idx in _batches(len(x), batch_size, gen):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        last = total / max(steps, 1)
    return last


@dataclass(frozen=True)
class DistillStats:
    """Mean losses of the last epoch of :func:`fit_distill`."""

    loss: float
    distill_loss: float
    ce_loss: float


def fit_distill(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x_local: torch.Tensor,
    y_local: torch.Tensor,
    x_proxy: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    temperature: float,
    alpha: float,
    gen: torch.Generator,
    loss: str | DistillLoss = "response",
    extra: ExtraTerm | None = None,
) -> DistillStats:
    """Train a student on private data plus soft targets on the proxy set.

    Each step takes one proxy batch and one private batch and minimises
    ``alpha * [distill(s(x_proxy), targets, T) + beta * extra] + (1 - alpha) *
    CE(s(x_local), y_local)``, where ``alpha`` is the weight of the *distillation* side
    and ``extra`` an optional catalogue term (:mod:`fedkd.kd_terms`) of weight
    ``extra.beta``. One epoch is
    ``ceil(max(len(x_proxy), len(x_local)) / batch_size)`` steps; the shorter side is
    reshuffled and cycled.

    Parameters
    ----------
    targets : Tensor of shape (len(x_proxy), C)
        Soft targets as logits (not probabilities).
    loss : str or callable
        Registered distillation loss name (see :mod:`fedkd.losses`) or the loss itself.
    extra : ExtraTerm, optional
        The catalogue method's own term (hint, rkd, attention, born_again, mutual).

    """
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    schedule = distill_schedule(
        len(x_proxy) if alpha > 0 else 0,
        len(x_local) if alpha < 1 else 0,
        batch_size=batch_size,
        epochs=epochs,
        gen=gen,
    )
    model.train()
    stats = DistillStats(float("nan"), float("nan"), float("nan"))
    for epoch in schedule:
        tot = kd_tot = ce_tot = 0.0
        for pi, li in epoch:
            # one forward pass over both batches (the models have no batch statistics)
            parts = ([x_proxy[pi]] if pi is not None else []) + (
                [x_local[li]] if li is not None else []
            )
            x = torch.cat(parts) if len(parts) > 1 else parts[0]
            feats = None
            if extra is not None and extra.needs_features:
                feats, out = features_and_logits(model, x)
            else:
                out = model(x)
            n_p = len(pi) if pi is not None else 0
            s_proxy = out[:n_p] if pi is not None else None
            s_local = out[n_p:] if li is not None else None
            total = torch.zeros(())
            if s_proxy is not None:
                kd = loss_fn(s_proxy, targets[pi], temperature)
                total = total + alpha * kd
                kd_tot += kd.item()
            if s_local is not None:
                ce = F.cross_entropy(s_local, y_local[li])
                total = total + (1.0 - alpha) * ce
                ce_tot += ce.item()
            if extra is not None:
                extra.zero_grad()
                term = extra.term(
                    StepBatch(
                        x=x,
                        n_proxy=n_p,
                        pi=pi,
                        li=li,
                        logits=out,
                        features=feats,
                        targets=targets[pi] if pi is not None else None,
                        y=y_local[li] if li is not None else None,
                        temperature=temperature,
                        alpha=alpha,
                    )
                )
                if term is not None:
                    total = total + alpha * extra.beta * term
                    kd_tot += extra.beta * term.item()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if extra is not None:
                extra.step()
            tot += total.item()
        n = max(len(epoch), 1)
        stats = DistillStats(tot / n, kd_tot / n, ce_tot / n)
    return stats


Step = tuple[torch.Tensor | None, torch.Tensor | None]


def distill_schedule(
    n_proxy: int, n_local: int, *, batch_size: int, epochs: int, gen: torch.Generator
) -> list[list[Step]]:
    """The batches of :func:`fit_distill`: per epoch, per step ``(proxy rows, local rows)``.

    ``n_proxy = 0`` (no distillation) or ``n_local = 0`` (no cross-entropy) leaves that
    side ``None``. An epoch is ``ceil(max(n_proxy, n_local) / batch_size)`` steps; the
    shorter side is reshuffled and cycled. Random draws come from ``gen`` in a fixed order
    (proxy permutation before local permutation), so the sequential and the vectorized
    trainers see the same batches for the same generator.
    """
    n_steps = math.ceil(max(n_proxy, n_local) / batch_size)
    proxy_it: list[torch.Tensor] = []
    local_it: list[torch.Tensor] = []
    out: list[list[Step]] = []
    for _ in range(epochs):
        steps: list[Step] = []
        for _step in range(n_steps):
            pi = li = None
            if n_proxy:
                if not proxy_it:
                    proxy_it = _batches(n_proxy, batch_size, gen)
                pi = proxy_it.pop()
            if n_local:
                if not local_it:
                    local_it = _batches(n_local, batch_size, gen)
                li = local_it.pop()
            steps.append((pi, li))
        out.append(steps)
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, computed in chunks."""
    model.eval()
    if len(x) == 0:
        return torch.zeros((0, 0))
    return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``logits`` whose argmax equals ``y``."""
    if len(y) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == y).float().mean())


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of ``model`` on ``(x, y)``."""
    return accuracy(predict_logits(model, x), y)
