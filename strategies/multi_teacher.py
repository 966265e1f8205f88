"""multi_teacher: the server's teacher ensemble sends soft targets to sampled clients.

Each round the sampled clients receive the fused teacher logits on a (subset of the)
proxy split, distil their students on them plus private cross-entropy, and reply with
their own proxy logits, which this strategy records but does not fuse (see hybrid
strategies for that).
"""

from __future__ import annotations

import numpy as np
from fedkd.strategies import register_strategy
from fedkd.strategies.base import KDStrategy
from fedkd.strategies.teacher_targets import teacher_targets

from fedkd.config import FedkdConfig
from fedkd.teachers import TeacherBundle


class MultiTeacher(KDStrategy):
    """Soft targets = ``strategy.fusion`` of the teachers' proxy logits."""

    name = "multi_teacher"
    uses_teachers = True
    privacy_modes = ("pate", "dp_sgd")
    privacy_note = (
        "; its targets never use the clients' uploads, so client_dp would protect nothing "
        "(the run would equal the non-private one)"
    )
    checkpoint_attrs = (*KDStrategy.checkpoint_attrs, "client_agreement")

    def __init__(self, cfg: FedkdConfig, teachers: TeacherBundle) -> None:
        targets = teacher_targets(cfg, teachers, cfg.strategy.fusion)
        super().__init__(cfg, *targets.shape)
        self.targets = targets
        self.client_agreement: list[float] = []

    def round_targets(
        self, server_round: int, proxy_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The fused teacher logits on this round's proxy rows."""
        return proxy_idx, self.targets[proxy_idx]

    def fuse_client_logits(
        self, server_round: int, proxy_idx: np.ndarray, logits: np.ndarray, weights: np.ndarray
    ) -> None:
        """Record how often clients agree with the teacher ensemble's argmax."""
        teacher_top = self.targets[proxy_idx].argmax(-1)
        agree = sum(int((chunk.argmax(-1) == teacher_top).sum()) for chunk in logits)
        self.client_agreement.append(agree / max(1, logits.shape[0] * logits.shape[1]))


@register_strategy("multi_teacher")
def make_multi_teacher(cfg: FedkdConfig, teachers: TeacherBundle) -> MultiTeacher:
    """Factory for ``strategy.name = "multi_teacher"``."""
    return MultiTeacher(cfg, teachers)
