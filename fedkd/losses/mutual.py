"""Deep mutual learning (Zhang et al., 2018): peers learn from each other's predictions.

Each client holds ``distill.peers`` co-located students; at every step each peer adds the
soft-target loss towards the mean of the *other* peers' current logits (detached). Across
devices, the server's consensus of the clients' uploads (cross-client strategies) plays the
same role between cohorts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.losses.method import ExtraTerm, KDMethod, StepBatch, TermContext, register_method
from fedkd.losses.response import soft_target_loss

if TYPE_CHECKING:
    from fedkd.config import DistillConfig


def mutual_loss(logits: list[torch.Tensor], index: int, temperature: float) -> torch.Tensor:
    """``mean_{j != index} T**2 KL(softmax(z_j / T) || softmax(z_index / T))``.

    Parameters
    ----------
    logits : list of Tensor of shape (N, C)
        Every peer's logits on the same batch.
    index : int
        The peer whose loss this is; the others are constant targets.

    """
    others = [z for j, z in enumerate(logits) if j != index]
    if not others:
        raise ValueError("mutual learning needs at least two peers")
    terms = [soft_target_loss(logits[index], z.detach(), temperature) for z in others]
    return torch.stack(terms).mean()


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


@register_method
class Mutual(KDMethod):
    """``distill.peers`` co-located students per device learning from each other."""

    name = "mutual"
    kind = "online (mutual)"
    default_beta = 1.0
    formula = "response + beta * mean_j T^2 KL(p_peer_j || p_s) on proxy and private batches"
    paper = "Zhang et al. 2018, Deep Mutual Learning"
    keeps_students = True
    rank = 5
    loss = staticmethod(soft_target_loss)

    def students_per_device(self, distill: DistillConfig) -> int:  # noqa: D102
        return distill.peers

    def client_term(self, ctx: TermContext) -> ExtraTerm | None:
        """Peers ``1..peers-1`` next to the reporting student, restored from ``ctx.aux``."""
        peers = [ctx.fresh_student(100 + i) for i in range(1, ctx.distill.peers)]
        opts = [ctx.new_optimizer(list(p.parameters())) for p in peers]
        for i, (peer, opt) in enumerate(zip(peers, opts, strict=True)):
            if "peers" in ctx.aux and i < len(ctx.aux["peers"]):
                peer.load_state_dict(ctx.aux["peers"][i])
                opt.load_state_dict(ctx.aux["peer_opts"][i])
            for group in opt.param_groups:
                group["lr"] = ctx.lr
            peer.train()
        return MutualTerm(ctx.beta, peers, opts)
