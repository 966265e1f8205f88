"""FitNets hint loss (Romero et al., 2015): student features regress onto teacher features.

The server sends teacher ``distill.feature_teacher``'s last-block features of every proxy
row; the client regresses its own, through a learned adapter, onto them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.losses.forward import features_and_logits, teacher_features
from fedkd.losses.method import (
    ExtraTerm,
    KDMethod,
    StepBatch,
    TermContext,
    received_knowledge,
    register_method,
    require_teachers,
)
from fedkd.losses.response import soft_target_loss
from fedkd.models import seeded_init

if TYPE_CHECKING:
    from fedkd.config import DistillConfig


class HintAdapter(nn.Module):
    """Learned regressor from student features ``(N, L_s, C_s)`` to teacher ``(N, L_t, C_t)``.

    A per-position linear map over channels (a 1x1 convolution), then linear interpolation
    along the length when ``L_s != L_t``. It lives on the client and trains with the student;
    it never travels.
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_length: int) -> None:
        super().__init__()
        self.proj = nn.Linear(student_channels, teacher_channels)
        self.teacher_length = teacher_length

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.proj(feats)  # (N, L_s, C_t)
        if out.shape[1] != self.teacher_length:
            out = F.interpolate(
                out.transpose(1, 2), size=self.teacher_length, mode="linear", align_corners=False
            ).transpose(1, 2)
        return out


def hint_loss(adapted_student: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``mean((r(f_s) - f_t)**2)`` over every element.

    Parameters
    ----------
    adapted_student : Tensor of shape (N, L, C_t)
        Student features after the :class:`HintAdapter` ``r``.
    teacher_features : Tensor of shape (N, L, C_t)
        Teacher features (a constant target: detached).

    """
    return F.mse_loss(adapted_student, teacher_features.detach(), reduction="mean")


class HintTerm(ExtraTerm):
    """FitNets: ``mean((r(f_s) - f_t)**2)``; the adapter ``r`` trains with the student."""

    needs_features = True

    def __init__(
        self,
        beta: float,
        knowledge: torch.Tensor,
        adapter: HintAdapter,
        opt: torch.optim.Optimizer,
    ) -> None:
        super().__init__(beta)
        self.knowledge = knowledge
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


@register_method
class Hint(KDMethod):
    """Teacher features down, a learned adapter and an MSE term on the client."""

    name = "hint"
    kind = "feature-based"
    knowledge = "features"
    default_beta = 1.0
    formula = "response + beta * mean((r(f_s) - f_t)^2), r a learned 1x1 adapter"
    paper = "Romero et al. 2015, FitNets: Hints for Thin Deep Nets"
    needs_teachers = True
    rank = 1
    loss = staticmethod(soft_target_loss)

    def client_term(self, ctx: TermContext) -> ExtraTerm | None:  # noqa: D102
        knowledge = received_knowledge(self, ctx)
        if knowledge is None:
            return None
        probe = ctx.x_proxy[:1] if len(ctx.x_proxy) else ctx.x_local[:1]
        with torch.no_grad():
            channels = features_and_logits(ctx.model, probe)[0].shape[-1]
        with seeded_init(ctx.init_seed):  # the lock every student's init takes
            adapter = HintAdapter(channels, knowledge.shape[-1], knowledge.shape[1])
        opt = ctx.new_optimizer(list(adapter.parameters()))
        if "adapter" in ctx.aux:
            adapter.load_state_dict(ctx.aux["adapter"])
            opt.load_state_dict(ctx.aux["adapter_opt"])
        return HintTerm(ctx.beta, knowledge, adapter, opt)

    def teacher_knowledge(  # noqa: D102
        self, teachers: list[nn.Module], x_proxy: torch.Tensor, distill: DistillConfig, seed: int
    ) -> np.ndarray | None:
        require_teachers(self, teachers)
        return teacher_features(teachers, x_proxy, distill.feature_teacher)
