"""Teacher-free and hybrid cross-client distillation: fedmd, dsfl, hybrid, local.

All follow one loop: clients reply with logits on this round's proxy rows; the server fuses
them (``strategy.fusion``, weighted by clients' data sizes where the rule allows) into a
*consensus*, which is next round's soft targets. Differences from the papers are stated
in each class.
"""

from __future__ import annotations

import numpy as np
from fedkd.strategies import register_strategy
from fedkd.strategies.base import KDStrategy
from fedkd.strategies.fusion import apply_fusion, softmax
from fedkd.strategies.teacher_targets import teacher_targets

from fedkd.config import FedkdConfig
from fedkd.teachers import TeacherBundle

#: rules that take per-client weights (``strategy.client_weights``: data sizes or uniform)
WEIGHTED_RULES = {
    "mean",
    "mean_probs",
    "era",
    "confidence_weighted",
    "entropy_weighted",
    "median",
    "trimmed_mean",
}


class ConsensusStrategy(KDStrategy):
    """Fuse the clients' proxy logits into next round's targets (teacher-free).

    Round 1 has no consensus: clients train on private data only and reply with their
    logits. From round 2 on, the targets are the consensus of the previous round on the
    rows it covered.
    """

    name = "consensus"
    checkpoint_attrs = (*KDStrategy.checkpoint_attrs, "consensus_idx", "consensus")

    def __init__(self, cfg: FedkdConfig, num_proxy: int, num_classes: int) -> None:
        super().__init__(cfg, num_proxy, num_classes)
        self.consensus_idx = np.zeros(0, np.int64)
        self.consensus = np.zeros((0, num_classes), np.float32)

    def client_fusion(self) -> str:
        """The fusion rule for client logits."""
        return self.cfg.strategy.fusion

    def round_targets(
        self, server_round: int, proxy_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Last round's consensus (empty in round 1)."""
        return self.consensus_idx, self.consensus

    def fuse_client_logits(
        self, server_round: int, proxy_idx: np.ndarray, logits: np.ndarray, weights: np.ndarray
    ) -> None:
        """Consensus of this round's replies (K, P, C) -> next round's targets."""
        rule = self.client_fusion()
        self.consensus = apply_fusion(
            rule,
            logits,
            weights=weights
            if rule in WEIGHTED_RULES and self.cfg.strategy.client_weights == "data_size"
            else None,
            temperature=self.cfg.distill.temperature,
            **self.cfg.fusion_params,
        )
        self.consensus_idx = proxy_idx


class FedMD(ConsensusStrategy):
    """FedMD (Li & Wang, 2019, arXiv:1910.03581): average of client logits as consensus.

    Differs from the paper: digest (distil on the consensus) and revisit (train on private
    data) are one joint step per batch, ``alpha * KD + (1 - alpha) * CE``; the optional
    transfer-learning warm start on a labeled public set is not implemented.
    """

    name = "fedmd"


class DSFL(ConsensusStrategy):
    """DS-FL (Itahara et al., 2020, arXiv:2008.06180): entropy reduction aggregation.

    Consensus = ``softmax(mean_k softmax(z_k) / T_era)`` (``strategy.fusion = "era"``,
    ``strategy.era_temperature``; DS-FL's plain averaging "SA" is ``mean_probs``). Differs
    from the paper: clients upload logits (the server applies softmax); one joint step.
    """

    name = "dsfl"

    def client_fusion(self) -> str:
        """``era`` unless the config names another rule than the default ``mean``."""
        return "era" if self.cfg.strategy.fusion == "mean" else self.cfg.strategy.fusion


class Hybrid(ConsensusStrategy):
    """Server teachers and client consensus combined per proxy sample.

    Target probabilities ``w(r) * p_teachers + (1 - w(r)) * p_consensus`` at the
    distillation temperature, with the teacher weight ``w`` decaying linearly from 1 in
    round 1 to ``strategy.teacher_weight_floor`` after ``strategy.teacher_decay_rounds``
    rounds. Rows without a consensus yet get the teachers' targets.
    """

    name = "hybrid"
    uses_teachers = True

    def __init__(self, cfg: FedkdConfig, teachers: TeacherBundle) -> None:
        targets = teacher_targets(cfg, teachers, cfg.strategy.teacher_fusion)
        super().__init__(cfg, *targets.shape)
        self.teacher_targets = targets

    def teacher_weight(self, server_round: int) -> float:
        """``w(r)``: 1 in round 1, linear down to the floor."""
        s = self.cfg.strategy
        if s.teacher_decay_rounds <= 0:
            return s.teacher_weight_floor
        frac = min(1.0, (server_round - 1) / s.teacher_decay_rounds)
        return 1.0 - frac * (1.0 - s.teacher_weight_floor)

    def round_targets(
        self, server_round: int, proxy_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher/consensus mixture on this round's rows."""
        t = self.cfg.distill.temperature
        w = self.teacher_weight(server_round)
        p = softmax(self.teacher_targets[proxy_idx], t)
        if len(self.consensus_idx):
            pos = {int(r): i for i, r in enumerate(self.consensus_idx)}
            rows = np.array([pos.get(int(r), -1) for r in proxy_idx])
            known = rows >= 0
            pc = softmax(self.consensus[rows[known]], t)
            p[known] = w * p[known] + (1 - w) * pc
        return proxy_idx, (t * np.log(np.clip(p, 1e-30, None))).astype(np.float32)


class LocalOnly(KDStrategy):
    """Baseline in the same harness: no soft targets, clients train on private data only."""

    name = "local"
    privacy_modes = ("dp_sgd",)  # uploads nothing: client_dp has nothing to protect

    def round_targets(
        self, server_round: int, proxy_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nothing to distil."""
        return proxy_idx[:0], np.zeros((0, self.num_classes), np.float32)

    def reply_rows(self, server_round: int, proxy_idx: np.ndarray) -> np.ndarray:
        """Nothing to upload: no proxy logits."""
        return proxy_idx[:0]


def _shape(cfg: FedkdConfig, teachers: TeacherBundle) -> tuple[int, int]:
    from fedkd.data import make_splits

    splits = make_splits(cfg.data, cfg.seed)
    return len(splits.proxy), splits.data.num_classes


@register_strategy("fedmd")
def make_fedmd(cfg: FedkdConfig, teachers: TeacherBundle) -> FedMD:
    """``strategy.name = "fedmd"`` (teachers, if any, are ignored)."""
    return FedMD(cfg, *_shape(cfg, teachers))


@register_strategy("dsfl")
def make_dsfl(cfg: FedkdConfig, teachers: TeacherBundle) -> DSFL:
    """``strategy.name = "dsfl"`` (teachers, if any, are ignored)."""
    return DSFL(cfg, *_shape(cfg, teachers))


@register_strategy("hybrid")
def make_hybrid(cfg: FedkdConfig, teachers: TeacherBundle) -> Hybrid:
    """``strategy.name = "hybrid"``."""
    return Hybrid(cfg, teachers)


@register_strategy("local")
def make_local(cfg: FedkdConfig, teachers: TeacherBundle) -> LocalOnly:
    """``strategy.name = "local"``."""
    return LocalOnly(cfg, *_shape(cfg, teachers))
