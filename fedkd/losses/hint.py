"""FitNets hint loss (Romero et al., 2015): student features regress onto teacher features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
