"""Born-again networks (Furlanello et al., 2018): a student distils from its earlier self.

Rounds are cut into ``distill.generations`` equal generations. When a client first trains
in generation ``g >= 2`` it freezes its current student as the teacher of the new
generation and starts a freshly initialised student of the same architecture.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fedkd.losses.forward import predict_logits
from fedkd.losses.method import ExtraTerm, KDMethod, StepBatch, TermContext, register_method
from fedkd.losses.response import soft_target_loss


def generation_of(server_round: int, rounds: int, generations: int) -> int:
    """Generation (1-based) of ``server_round``: ``ceil(rounds / generations)`` rounds each."""
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    per = max(1, math.ceil(rounds / generations))
    return min(generations, (server_round - 1) // per + 1)


def self_distill_loss(
    student_logits: torch.Tensor, previous_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Soft-target loss towards the previous generation's logits (the same KL convention)."""
    return soft_target_loss(student_logits, previous_logits, temperature)


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


@register_method
class BornAgain(KDMethod):
    """Generations of students on the device, each taught by the previous one."""

    name = "born_again"
    kind = "self-distillation"
    default_beta = 1.0
    formula = "response + beta * T^2 KL(p_prev || p_s) on proxy and private batches"
    paper = "Furlanello et al. 2018, Born-Again Neural Networks"
    keeps_students = True
    rank = 4
    loss = staticmethod(soft_target_loss)

    def client_term(self, ctx: TermContext) -> ExtraTerm | None:
        """The previous generation's term; a new generation replaces ``ctx.model`` / ``opt``."""
        aux = ctx.aux
        gen = generation_of(ctx.server_round, ctx.rounds, ctx.distill.generations)
        if gen > int(aux.get("generation", 1)):  # a new generation: the student becomes teacher
            aux = {"generation": gen, "previous": ctx.model.state_dict()}
            ctx.model = ctx.fresh_student(gen)
            ctx.opt = ctx.new_optimizer(list(ctx.model.parameters()))
        if "previous" not in aux:
            return None  # first generation: plain response distillation
        previous = ctx.fresh_student(0)
        previous.load_state_dict(aux["previous"])
        return BornAgainTerm(
            ctx.beta,
            predict_logits(previous, ctx.x_proxy) if len(ctx.x_proxy) else torch.zeros((0, 0)),
            predict_logits(previous, ctx.x_local),
            keep=aux,
        )
