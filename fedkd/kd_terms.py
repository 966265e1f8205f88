"""Client-side extra terms of the catalogue methods (see :mod:`fedkd.knowledge`).

A term adds ``beta * term`` to the distillation side of each training step of
:func:`fedkd.training.fit_distill`. Terms may own modules that persist on the device
between rounds (the hint adapter, mutual-learning peers, the previous born-again
generation); :meth:`ExtraTerm.state` / :meth:`ExtraTerm.load_state` carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.losses.attention import attention_loss
from fedkd.losses.born_again import self_distill_loss
from fedkd.losses.hint import HintAdapter, hint_loss
from fedkd.losses.mutual import mutual_loss
from fedkd.losses.rkd import rkd_loss
from fedkd.losses.soft_target import soft_target_loss


@dataclass
class StepBatch:
    """One training step: the batch the student saw and its outputs.

    ``x`` is the proxy batch followed by the private batch (``n_proxy`` proxy rows);
    ``pi`` / ``li`` index the round's proxy rows and the private data (None when absent).
    """

    x: torch.Tensor
    n_proxy: int
    pi: torch.Tensor | None
    li: torch.Tensor | None
    logits: torch.Tensor
    features: torch.Tensor | None
    targets: torch.Tensor | None
    y: torch.Tensor | None
    temperature: float
    alpha: float


class ExtraTerm:
    """Base: ``term`` is added as ``alpha * beta * term``; modules persist via ``state``."""

    needs_features = False

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def term(self, batch: StepBatch) -> torch.Tensor | None:
        """The method's term on this step (None: nothing to add)."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Clear the gradients of modules trained with the student."""

    def step(self) -> None:
        """Update modules trained with the student (after the student's step)."""

    def state(self) -> dict[str, Any]:
        """What must persist on the device until the next round."""
        return {}


class _TeacherKnowledgeTerm(ExtraTerm):
    needs_features = True

    def __init__(self, beta: float, knowledge: torch.Tensor) -> None:
        super().__init__(beta)
        self.knowledge = knowledge


class HintTerm(_TeacherKnowledgeTerm):
    """FitNets: ``mean((r(f_s) - f_t)**2)``; the adapter ``r`` trains with the student."""

    def __init__(
        self,
        beta: float,
        knowledge: torch.Tensor,
        adapter: HintAdapter,
        opt: torch.optim.Optimizer,
    ) -> None:
        super().__init__(beta, knowledge)
        self.adapter, self.opt = adapter, opt

    def term(self, batch: StepBatch) -> torch.Tensor | None:  # noqa: D102
        if batch.pi is None or batch.features is None:
            return None
        return hint_loss(self.adapter(batch.features[: batch.n_proxy]), self.knowledge[batch.pi])

    def zero_grad(self) -> None:  # noqa: D102
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:  # noqa: D102
        self.opt.step()

    def state(self) -> dict[str, Any]:  # noqa: D102
        return {"adapter": self.adapter.state_dict(), "adapter_opt": self.opt.state_dict()}


class RKDTerm(_TeacherKnowledgeTerm):
    """Relational KD on the proxy batch's flattened last-block features.

    Relations are taken among the first ``rows`` samples of each (shuffled) proxy batch:
    the angle term costs O(rows**3).
    """

    def __init__(self, beta: float, knowledge: torch.Tensor, rows: int = 64) -> None:
        super().__init__(beta, knowledge)
        self.rows = rows

    def term(self, batch: StepBatch) -> torch.Tensor | None:  # noqa: D102
        if batch.pi is None or batch.features is None or len(batch.pi) < 3:
            return None
        n = min(batch.n_proxy, self.rows)
        return rkd_loss(batch.features[:n], self.knowledge[batch.pi[:n]])


class AttentionTerm(_TeacherKnowledgeTerm):
    """Attention transfer towards the teachers' maps on the proxy batch."""

    def term(self, batch: StepBatch) -> torch.Tensor | None:  # noqa: D102
        if batch.pi is None or batch.features is None:
            return None
        return attention_loss(batch.features[: batch.n_proxy], self.knowledge[batch.pi])


class BornAgainTerm(ExtraTerm):
    """Soft targets of the frozen previous generation on the proxy and private batches."""

    def __init__(
        self,
        beta: float,
        previous_proxy: torch.Tensor,
        previous_local: torch.Tensor,
        keep: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(beta)
        self.previous_proxy, self.previous_local = previous_proxy, previous_local
        self.keep = keep or {}

    def state(self) -> dict[str, Any]:  # noqa: D102
        return self.keep  # generation number and the previous generation's weights

    def term(self, batch: StepBatch) -> torch.Tensor | None:  # noqa: D102
        prev = []
        if batch.pi is not None:
            prev.append(self.previous_proxy[batch.pi])
        if batch.li is not None:
            prev.append(self.previous_local[batch.li])
        return self_distill_loss(batch.logits, torch.cat(prev), batch.temperature)


class MutualTerm(ExtraTerm):
    """Deep mutual learning with co-located peers, trained in the same steps.

    Each peer minimises ``alpha * [soft_target(targets) + beta * mutual] + (1 - alpha) CE``
    on the student's batch; all use the predictions of this step (simultaneous update).
    """

    def __init__(
        self, beta: float, peers: list[nn.Module], opts: list[torch.optim.Optimizer]
    ) -> None:
        super().__init__(beta)
        self.peers, self.opts = peers, opts

    def term(self, batch: StepBatch) -> torch.Tensor:  # noqa: D102
        outs = [peer(batch.x) for peer in self.peers]
        everyone = [batch.logits, *outs]
        for i, (peer_out, opt) in enumerate(zip(outs, self.opts, strict=True), start=1):
            loss = batch.alpha * self.beta * mutual_loss(everyone, i, batch.temperature)
            if batch.targets is not None:
                kd = soft_target_loss(peer_out[: batch.n_proxy], batch.targets, batch.temperature)
                loss = loss + batch.alpha * kd
            if batch.y is not None:
                ce = F.cross_entropy(peer_out[batch.n_proxy :], batch.y)
                loss = loss + (1.0 - batch.alpha) * ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return mutual_loss(everyone, 0, batch.temperature)

    def state(self) -> dict[str, Any]:  # noqa: D102
        return {
            "peers": [p.state_dict() for p in self.peers],
            "peer_opts": [o.state_dict() for o in self.opts],
        }
