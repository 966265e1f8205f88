"""Strategies where student weights travel: ``fedavg`` (baseline) and ``feddf``.

Both keep one global student of ``student.model`` on the server and send it, with each
train and evaluate instruction, under ``keys.WEIGHTS``; sampled clients load it (with a
fresh optimizer), train on their private data and reply with their weights. Since the
global model is what a client holds after each round, student accuracy is the global
model's test accuracy as measured by the evaluated clients. Every client must run the
same student architecture.
"""

from __future__ import annotations

import numpy as np
import torch
from fedkd.strategies import register_strategy
from fedkd.strategies.client_fusion import LocalOnly
from fedkd.strategies.fusion import apply_fusion
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedkd import keys
from fedkd.config import FedkdConfig
from fedkd.data import make_splits
from fedkd.models import build_seeded_model
from fedkd.teachers import TeacherBundle
from fedkd.training import fit_distill, make_optimizer
from fedkd.views import student_shape, student_x


def fedavg_weights(records: list[ArrayRecord], num_examples: np.ndarray) -> ArrayRecord:
    """Flower's FedAvg aggregation (``aggregate_arrayrecords``) weighted by data size."""
    contents = [
        RecordDict({keys.WEIGHTS: r, keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: float(n)})})
        for r, n in zip(records, num_examples, strict=True)
    ]
    return aggregate_arrayrecords(contents, keys.NUM_EXAMPLES)


class FedAvgStudents(LocalOnly):
    """FedAvg (McMahan et al., 2017) over the students: the weight-sharing baseline.

    No soft targets, no proxy logits (as ``local``): clients train with cross-entropy on
    private data (``distill.local_epochs`` epochs) from the global model; the server
    averages their weights by data size with Flower's own ``aggregate_arrayrecords`` (what
    ``flwr.serverapp.strategy.FedAvg`` uses).
    """

    name = "fedavg"
    collects_weights = True
    privacy_modes = ("dp_sgd",)  # weights travel: DP on logits would not cover them
    train_accuracy_counts = False

    def __init__(self, cfg: FedkdConfig) -> None:
        splits = make_splits(cfg.data, cfg.seed)
        super().__init__(cfg, len(splits.proxy), splits.data.num_classes)
        self.x_proxy = torch.from_numpy(student_x(cfg.data, splits, splits.proxy, cfg.seed))
        self.model = build_seeded_model(
            cfg.student_model(0),
            student_shape(cfg.data, splits, cfg.seed),
            splits.data.num_classes,
            cfg.seed,
        )
        self.global_weights = ArrayRecord(self.model.state_dict())

    def set_warm_start(self, weights: ArrayRecord) -> None:
        """The warm-start student is the initial global model."""
        self.global_weights = weights
        self.model.load_state_dict(weights.to_torch_state_dict())

    def fuse_client_weights(
        self, server_round: int, records: list[ArrayRecord], weights: np.ndarray
    ) -> None:
        """Global model = FedAvg of the clients' weights."""
        self.global_weights = fedavg_weights(records, weights)
        self.model.load_state_dict(self.global_weights.to_torch_state_dict())


class FedDF(FedAvgStudents):
    """FedDF (Lin et al., 2020, arXiv:2006.07242): FedAvg, then ensemble distillation.

    Clients train on private data from the global model and reply with weights and proxy
    logits. The server averages the weights, then distils the averaged student on this
    round's proxy rows towards the clients' ensemble (mean of their logits) for
    ``strategy.server_epochs`` epochs (Adam, ``strategy.server_lr``,
    ``distill.temperature``, KD only). Differs from the paper: a fixed number of server
    epochs instead of early stopping on a validation set; logits are computed by the
    clients on the proxy rows (the paper evaluates the received models on the server,
    which needs the same weights; the result is the same ensemble).
    """

    name = "feddf"

    def reply_rows(self, server_round: int, proxy_idx: np.ndarray) -> np.ndarray:
        """Clients reply with logits on this round's proxy rows (the ensemble teacher)."""
        return proxy_idx

    def fuse_client_logits(
        self, server_round: int, proxy_idx: np.ndarray, logits: np.ndarray, weights: np.ndarray
    ) -> None:
        """Distil the averaged student towards the clients' mean logits."""
        cfg = self.cfg
        if cfg.strategy.server_epochs == 0 or len(proxy_idx) == 0:
            return
        ensemble = apply_fusion("mean", logits)
        opt = make_optimizer("adam", list(self.model.parameters()), cfg.strategy.server_lr)
        fit_distill(
            self.model,
            opt,
            self.x_proxy[:0],
            torch.zeros(0, dtype=torch.int64),
            self.x_proxy[torch.from_numpy(proxy_idx)],
            torch.from_numpy(np.ascontiguousarray(ensemble, np.float32)),
            epochs=cfg.strategy.server_epochs,
            batch_size=cfg.distill.batch_size,
            temperature=cfg.distill.temperature,
            alpha=1.0,
            gen=torch.Generator().manual_seed(cfg.seed * 7919 + server_round),
        )
        self.global_weights = ArrayRecord(self.model.state_dict())


@register_strategy("fedavg")
def make_fedavg(cfg: FedkdConfig, teachers: TeacherBundle) -> FedAvgStudents:
    """``strategy.name = "fedavg"`` (teachers, if any, are ignored)."""
    return FedAvgStudents(cfg)


@register_strategy("feddf")
def make_feddf(cfg: FedkdConfig, teachers: TeacherBundle) -> FedDF:
    """``strategy.name = "feddf"`` (teachers, if any, are ignored)."""
    return FedDF(cfg)
