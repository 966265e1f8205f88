"""``centralized_kd``: the ceiling baseline, one student distilled on pooled data.

All clients' private data (the simulated partitions, pooled) train a single student on
the server with ``alpha * KD(teachers' fused targets) + (1 - alpha) * CE``, for
``distill.local_epochs`` epochs per round; without teachers it is plain supervised
training. No message carries data or weights (bytes are those of discovery and the
baselines). Simulation only: it needs the partitions, which real devices never share.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from fedkd.strategies import register_strategy
from fedkd.strategies.base import KDStrategy, RoundCallback
from fedkd.strategies.round_plan import RoundPlan
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedkd import keys
from fedkd.config import FedkdConfig
from fedkd.data import client_partitions, make_splits
from fedkd.models import build_seeded_model
from fedkd.teachers import TeacherBundle
from fedkd.training import evaluate, fit_distill, make_optimizer
from fedkd.views import student_shape, student_x


class CentralizedKD(KDStrategy):
    """One student on the union of the clients' data plus the teachers' soft targets."""

    name = "centralized_kd"
    uses_teachers = True
    privacy_modes = ()  # pools raw client data on the server: a non-private ceiling

    def __init__(self, cfg: FedkdConfig, teachers: TeacherBundle) -> None:
        splits = make_splits(cfg.data, cfg.seed)
        super().__init__(cfg, len(splits.proxy), splits.data.num_classes)
        parts = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)
        pooled = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.x_pool = torch.from_numpy(student_x(cfg.data, splits, pooled, cfg.seed))
        self.y_pool = torch.from_numpy(splits.data.y[pooled])
        self.x_proxy = torch.from_numpy(student_x(cfg.data, splits, splits.proxy, cfg.seed))
        self.x_test = torch.from_numpy(student_x(cfg.data, splits, splits.test, cfg.seed))
        self.y_test = torch.from_numpy(splits.data.y[splits.test])
        if teachers.count:
            fused = teachers.fused(
                teachers.proxy_logits,
                cfg.strategy.fusion,
                cfg.distill.temperature,
                **cfg.fusion_params,
            )
            self.targets = torch.from_numpy(np.ascontiguousarray(fused, np.float32))
        else:
            self.targets = torch.zeros((0, self.num_classes))
        self.model = build_seeded_model(
            cfg.student_model(0),
            student_shape(cfg.data, splits, cfg.seed),
            splits.data.num_classes,
            cfg.seed,
        )
        self.opt = make_optimizer(
            cfg.distill.optimizer, list(self.model.parameters()), cfg.distill.lr
        )

    def set_warm_start(self, weights: ArrayRecord) -> None:
        """The warm-start student is where the pooled training starts."""
        self.model.load_state_dict(weights.to_torch_state_dict())

    def round_targets(
        self, server_round: int, proxy_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unused: nothing is sent to clients."""
        return proxy_idx[:0], np.zeros((0, self.num_classes), np.float32)

    def start(  # type: ignore[override]
        self,
        grid: Grid,
        num_rounds: int,
        *,
        timeout: float | None = None,
        on_round: RoundCallback | None = None,
        start_round: int = 1,
    ) -> list[dict[str, Any]]:
        """Train the pooled student ``num_rounds`` x ``local_epochs`` epochs; a row per round."""
        self.summary()
        d = self.cfg.distill
        x_proxy = self.x_proxy if len(self.targets) else self.x_proxy[:0]
        rows = []
        t_start = time.perf_counter()
        for rnd in range(start_round, num_rounds + 1):
            t0 = time.perf_counter()
            stats = fit_distill(
                self.model,
                self.opt,
                self.x_pool,
                self.y_pool,
                x_proxy,
                self.targets,
                epochs=d.local_epochs,
                batch_size=d.batch_size,
                temperature=d.temperature,
                alpha=d.alpha if len(self.targets) else 0.0,
                gen=torch.Generator().manual_seed(self.cfg.seed * 7919 + rnd),
                loss=d.loss,
            )
            acc = evaluate(self.model, self.x_test, self.y_test)
            # the one student is what every client would receive
            self.latest_accuracy = dict.fromkeys(sorted(self.node_of), acc)
            self.plan = RoundPlan(
                rnd,
                evaluated=sorted(self.node_of),
                train_metrics=[
                    {
                        keys.TRAIN_LOSS: stats.loss,
                        keys.DISTILL_LOSS: stats.distill_loss,
                        keys.CE_LOSS: stats.ce_loss,
                    }
                ],
            )
            down, up = self.traffic.total_down, self.traffic.total_up
            row = self._round_row(rnd, 0, 0, t0, t_start, down, up)
            rows.append(row)
            if on_round is not None:
                on_round(row)
        return rows


@register_strategy("centralized_kd")
def make_centralized_kd(cfg: FedkdConfig, teachers: TeacherBundle) -> CentralizedKD:
    """``strategy.name = "centralized_kd"``."""
    return CentralizedKD(cfg, teachers)
