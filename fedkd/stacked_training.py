"""Stacked training: a cohort of same-architecture students trained as one batch.

Pure PyTorch (no Flower). The K students' parameters are stacked on a leading axis with
``torch.func.stack_module_state``; one forward pass computes all K models on their own
batches (the model's ``forward_stacked`` when it has one, else ``torch.func.vmap`` over
``functional_call``), one backward pass on the sum of the K clients' losses gives every
client exactly the gradient of its own loss (the parameters are disjoint), and an
elementwise optimizer over the stacked tensors is an exact per-client optimizer.

Equality with one client after another (:func:`fedkd.training.fit_distill`) holds batch for
batch: each client draws its batches from its own generator through the same
:func:`fedkd.batch_schedule.fit_schedule`, and every step's objective is
:func:`fedkd.distill_objective.step_objective`. Clients with different private data sizes get
batches of different sizes and, when cross-entropy dominates, different numbers of steps:
batches are padded to the largest one of the step and padded rows are masked out of the
loss means; a client with no step left is masked out of the optimizer update (its Adam step
count does not advance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fedkd.batch_schedule import fit_schedule
from fedkd.distill_objective import NO_STATS, DistillStats, step_objective
from fedkd.losses import ROW_LOSSES, RowLoss


def stacked_forward(
    template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Outputs of K models (``params`` stacked on axis 0) on their inputs ``x`` (K, N, ...)."""
    fwd = getattr(template, "forward_stacked", None)
    if fwd is not None:
        return fwd(params, x)
    return vmap(lambda p, xb: functional_call(template, (p,), (xb,)))(params, x)


class StackedOptimizer:
    """Adam, AdamW or SGD (momentum) over stacked parameters, exact per client.

    Reads hyperparameters and state from the clients' own ``torch.optim`` optimizers and
    writes the state back in their format (:meth:`write_back`), so a client can go on with
    its ordinary optimizer afterwards. ``step(active)`` updates only the clients where
    ``active`` is true.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        models: Sequence[nn.Module],
        opts: Sequence[torch.optim.Optimizer],
    ) -> None:
        self.params = params
        first = opts[0]
        self.kind = type(first).__name__.lower()
        if self.kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"vectorized training supports adam, adamw, sgd; got {self.kind}")
        self.group = dict(first.param_groups[0])
        if self.kind in ("adam", "adamw") and self.group.get("amsgrad"):
            raise ValueError("vectorized training does not support amsgrad")
        if self.kind == "sgd" and (self.group["nesterov"] or self.group["dampening"]):
            raise ValueError("vectorized training supports SGD without nesterov/dampening")
        names = list(params)
        k = len(models)
        self.steps = torch.zeros(k, dtype=torch.float64)
        self.buffers: dict[str, dict[str, torch.Tensor]] = {
            n: {s: torch.zeros_like(params[n]) for s in self._slots()} for n in names
        }
        for i, (model, opt) in enumerate(zip(models, opts, strict=True)):
            for n, p in model.named_parameters():
                st = opt.state.get(p, {})
                if "step" in st:
                    self.steps[i] = float(st["step"])
                for s in self._slots():
                    if st.get(s) is not None:
                        self.buffers[n][s][i] = st[s]
                if self.kind == "sgd" and st.get("momentum_buffer") is not None:
                    self.steps[i] = max(float(self.steps[i]), 1.0)

    def _slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.kind == "sgd" else ("exp_avg", "exp_avg_sq")

    @torch.no_grad()
    def step(self, active: torch.Tensor, lr: float) -> None:
        """One update of the clients where ``active`` (bool, (K,)) is true."""
        g = self.group
        all_active = bool(active.all())
        self.steps += active.to(torch.float64)
        for n, p in self.params.items():
            grad = p.grad
            if grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            mask = active.view(shape)
            buf = self.buffers[n]
            new_p = p.detach()
            if self.kind == "sgd":
                if g["weight_decay"]:
                    grad = grad + g["weight_decay"] * new_p
                mom = buf["momentum_buffer"] * g["momentum"] + grad
                new_p = new_p - lr * mom
                news = {"momentum_buffer": mom}
            else:
                b1, b2 = g["betas"]
                if self.kind == "adamw":
                    new_p = new_p * (1 - lr * g["weight_decay"])
                elif g["weight_decay"]:
                    grad = grad + g["weight_decay"] * new_p
                m = buf["exp_avg"].lerp(grad, 1 - b1)
                v = buf["exp_avg_sq"] * b2 + (1 - b2) * grad * grad
                steps = self.steps.clamp(min=1).view(shape)
                bc1 = (1 - b1**steps).to(p.dtype)
                bc2_sqrt = ((1 - b2**steps) ** 0.5).to(p.dtype)
                denom = v.sqrt() / bc2_sqrt + g["eps"]
                new_p = new_p - (lr / bc1) * m / denom
                news = {"exp_avg": m, "exp_avg_sq": v}
            if all_active:
                p.copy_(new_p)
                for s, t in news.items():
                    buf[s] = t
            else:
                p.copy_(torch.where(mask, new_p, p))
                for s, t in news.items():
                    buf[s] = torch.where(mask, t, buf[s])

    def write_back(
        self, models: Sequence[nn.Module], opts: Sequence[torch.optim.Optimizer]
    ) -> None:
        """Store each client's slice of the state in its own optimizer."""
        for i, (model, opt) in enumerate(zip(models, opts, strict=True)):
            for n, p in model.named_parameters():
                if self.steps[i] == 0:
                    continue
                if self.kind == "sgd":
                    opt.state[p] = {
                        "momentum_buffer": self.buffers[n]["momentum_buffer"][i].clone()
                    }
                else:
                    opt.state[p] = {
                        "step": torch.tensor(float(self.steps[i]), dtype=torch.float32),
                        "exp_avg": self.buffers[n]["exp_avg"][i].clone(),
                        "exp_avg_sq": self.buffers[n]["exp_avg_sq"][i].clone(),
                    }
            for group in opt.param_groups:
                group["lr"] = self.group["lr"]


class _Side:
    """One side (proxy or private) of a cohort step: padded rows, inputs and targets.

    ``idx`` (K, B) row indices with -1 for padding; the step uses the first ``width``
    columns, the widest member's batch.
    """

    def __init__(self, idx: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> None:
        self.width = int((idx >= 0).sum(1).max())
        rows = idx[:, : self.width]
        self.mask = rows >= 0
        self.x = x[rows.clamp(min=0)] if self.width else x[:0]
        self.target = target[rows.clamp(min=0)] if self.width else target[:0]

    def mean(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean of ``rows`` (K, width) over real rows, and that mean masked.

        The masked mean is zero for members without a row: the part that enters the
        objective.
        """
        n = self.mask.sum(1)
        mean = (rows * self.mask).sum(1) / n.clamp(min=1)
        return mean, mean * (n > 0)


@dataclass
class Member:
    """One client of a cohort: its student, optimizer, private data and generator."""

    model: nn.Module
    opt: torch.optim.Optimizer
    x_local: torch.Tensor
    y_local: torch.Tensor
    gen: torch.Generator


def _padded(
    batches: list[list[torch.Tensor | None]], offsets: Sequence[int], width: int
) -> torch.Tensor:
    """(K, S, width) int64 row indices (+ offsets), -1 where a client has no row."""
    k, s = len(batches), max((len(b) for b in batches), default=0)
    out = np.full((k, s, width), -1, dtype=np.int64)
    for i, steps in enumerate(batches):
        for t, rows in enumerate(steps):
            if rows is not None:
                out[i, t, : len(rows)] = rows.numpy() + offsets[i]
    return torch.from_numpy(out)


class Cohort:
    """K students of one architecture, stacked; trained and evaluated together.

    Parameters
    ----------
    members : sequence of Member
        The clients; their models must have the same parameter names and shapes.

    """

    def __init__(self, members: Sequence[Member]) -> None:
        if not members:
            raise ValueError("a cohort needs at least one member")
        self.members = list(members)
        models = [m.model for m in members]
        shapes = {n: p.shape for n, p in models[0].named_parameters()}
        for m in models[1:]:
            if {n: p.shape for n, p in m.named_parameters()} != shapes:
                raise ValueError("a cohort's students must share one architecture")
        params, _ = stack_module_state(models)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.template = models[0]
        self.opt = StackedOptimizer(self.params, models, [m.opt for m in members])

    def __len__(self) -> int:
        return len(self.members)

    def fit_distill(
        self,
        x_proxy: torch.Tensor,
        targets: torch.Tensor,
        *,
        epochs: int,
        batch_size: int,
        temperature: float,
        alpha: float,
        lr: float,
        loss: str | RowLoss = "response",
    ) -> list[DistillStats]:
        """Vectorized :func:`fedkd.training.fit_distill` for every member.

        ``x_proxy`` (P, ...) and ``targets`` (P, C) logits are the same for every member;
        ``loss`` is a name of :data:`fedkd.losses.ROW_LOSSES` or a per-row loss itself.
        Returns each member's last-epoch mean losses.
        """
        row_loss = _row_loss(loss)
        k = len(self.members)
        x_loc = torch.cat([m.x_local for m in self.members])
        y_loc = torch.cat([m.y_local for m in self.members])
        offsets = np.cumsum([0] + [len(m.x_local) for m in self.members[:-1]]).tolist()
        schedules = [
            fit_schedule(
                len(x_proxy),
                len(m.x_local),
                alpha=alpha,
                batch_size=batch_size,
                epochs=epochs,
                gen=m.gen,
            )
            for m in self.members
        ]
        stats = [NO_STATS] * k
        self.template.train()
        for epoch in range(epochs):
            pidx = _padded([[s[0] for s in sch[epoch]] for sch in schedules], [0] * k, batch_size)
            lidx = _padded([[s[1] for s in sch[epoch]] for sch in schedules], offsets, batch_size)
            n_steps = torch.tensor([len(sch[epoch]) for sch in schedules])
            sums = torch.zeros(3, k, dtype=torch.float64)  # total, kd, ce
            for t in range(pidx.shape[1]):
                active = t < n_steps
                proxy = _Side(pidx[:, t], x_proxy, targets)
                local = _Side(lidx[:, t], x_loc, y_loc)
                total, kd_k, ce_k = self._step_loss(proxy, local, row_loss, temperature, alpha)
                for p in self.params.values():
                    p.grad = None
                (total * active).sum().backward()
                self.opt.step(active, lr)
                with torch.no_grad():
                    act = active.to(torch.float64)
                    sums += torch.stack([total, kd_k, ce_k]).detach().double() * act
            denom = n_steps.clamp(min=1).double()
            stats = [
                DistillStats(*(float(v) for v in (sums[:, i] / denom[i]).tolist()))
                for i in range(k)
            ]
        return stats

    def _step_loss(
        self, proxy: _Side, local: _Side, row_loss: RowLoss, temperature: float, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every member's step objective ``(K,)`` and its distillation and CE parts."""
        k = len(self.members)
        x = torch.cat([side.x for side in (proxy, local) if side.width], dim=1)
        out = stacked_forward(self.template, self.params, x)
        kd_k = ce_k = torch.zeros(k)
        kd = ce = None
        if proxy.width:
            rows = row_loss(out[:, : proxy.width], proxy.target, temperature)
            kd_k, kd = proxy.mean(rows)
        if local.width:
            logits = out[:, proxy.width :]
            rows = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), local.target.reshape(-1), reduction="none"
            ).view(k, local.width)
            ce_k, ce = local.mean(rows)
        return step_objective(torch.zeros(k), kd, ce, alpha), kd_k, ce_k

    def write_back(self) -> None:
        """Copy the trained parameters and optimizer state into each member's objects."""
        with torch.no_grad():
            for i, m in enumerate(self.members):
                for n, p in m.model.named_parameters():
                    p.copy_(self.params[n][i])
        self.opt.write_back([m.model for m in self.members], [m.opt for m in self.members])


def _row_loss(loss: str | RowLoss) -> RowLoss:
    """The per-row loss ``loss`` names (ValueError when it has no per-row form)."""
    if not isinstance(loss, str):
        return loss
    if loss not in ROW_LOSSES:
        raise ValueError(
            f"distill.loss {loss!r} has no per-row form for vectorized training; "
            f"vectorized losses: {', '.join(sorted(ROW_LOSSES))}"
        )
    return ROW_LOSSES[loss]
