"""A train instruction decoded and checked into a :class:`TrainJob`, student loaded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from fedkd import keys
from fedkd.attacks import flip_labels, malicious_partitions
from fedkd.client.local_dp import dp_parameters
from fedkd.client.node import setup_node
from fedkd.client.node_state import load_student
from fedkd.client.private_data import private_data
from fedkd.client.public_data import PublicData
from fedkd.client.streams import round_generator
from fedkd.compression import decode, decode_rows, has_rows
from fedkd.config import FedkdConfig
from fedkd.devices import fails
from fedkd.parse_lock import record_numpy, record_state_dict
from fedkd.training import make_optimizer


class DeviceFailure(RuntimeError):
    """A simulated device crash (``devices.tiers[].failure_prob``)."""


@dataclass
class TrainJob:
    """One client's train instruction, decoded and checked, with its student loaded."""

    cfg: FedkdConfig
    public: PublicData
    pid: int
    rnd: int
    malicious: bool
    x_local: torch.Tensor
    y_local: torch.Tensor
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    proxy_idx: torch.Tensor
    soft: torch.Tensor
    knowledge: torch.Tensor | None
    reply_idx: torch.Tensor
    epochs: int
    temperature: float
    alpha: float
    lr: float
    gen: torch.Generator
    send_weights: bool
    dp_mode: str
    dp_noise: float
    dp_clip: float
    dp_local: bool
    dp_reproducible: bool = False

    def cohort_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can train as one vectorized cohort."""
        d = self.cfg.distill
        return (
            self.cfg.student_model(self.pid),
            d.optimizer,
            d.loss,
            tuple(sorted(d.params.items())),
            d.batch_size,
            self.epochs,
            self.temperature,
            self.alpha,
            self.lr,
            self.proxy_idx.numpy().tobytes(),
            self.soft.numpy().tobytes(),
            self.reply_idx.numpy().tobytes(),
            self.send_weights,
            self.dp_mode,
        )


_Targets = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]


def decode_targets(msg: Message, num_classes: int) -> _Targets:
    """``(proxy rows, soft targets, teacher knowledge or None, reply rows)`` of ``msg``."""
    targets = record_numpy(msg.content.array_records[keys.TARGETS])
    proxy_idx = torch.from_numpy(decode_rows(targets, keys.PROXY_IDX))
    soft = torch.from_numpy(decode(targets, num_classes))
    knowledge = (
        torch.from_numpy(np.asarray(targets[keys.KNOWLEDGE], np.float32))
        if keys.KNOWLEDGE in targets
        else None
    )
    reply_idx = (
        torch.from_numpy(decode_rows(targets, keys.REPLY_IDX))
        if has_rows(targets, keys.REPLY_IDX)
        else proxy_idx
    )
    return proxy_idx, soft, knowledge, reply_idx


def check_device(cfg: FedkdConfig, pid: int, rnd: int) -> None:
    """Raise :class:`DeviceFailure` when the node's device tier crashes in round ``rnd``."""
    tier = cfg.tier(pid)
    if tier is not None and fails(tier.failure_prob, cfg.seed, pid, rnd):
        raise DeviceFailure(
            f"simulated crash of a {tier.name!r} device in round {rnd} "
            f"(failure_prob {tier.failure_prob})"
        )


def check_targets(targets: _Targets, num_classes: int) -> None:
    """Raise ``ValueError`` when the soft targets or the knowledge do not fit the rows."""
    proxy_idx, soft, knowledge, _ = targets
    if (
        proxy_idx.ndim != 1
        or soft.ndim != 2
        or len(soft) != len(proxy_idx)
        or soft.shape[-1] != num_classes
    ):
        raise ValueError(
            f"soft targets {tuple(soft.shape)} do not match proxy rows {tuple(proxy_idx.shape)}"
        )
    if knowledge is not None and len(knowledge) != len(proxy_idx):
        raise ValueError(
            f"teacher knowledge {tuple(knowledge.shape)} does not match proxy rows "
            f"{tuple(proxy_idx.shape)}"
        )


def prepare_train(msg: Message, context: Context) -> TrainJob:
    """Decode and check a train instruction; load the node's data and student.

    Raises
    ------
    DeviceFailure
        When the node's simulated device crashes this round.
    ValueError
        When the instruction does not fit the run (targets, weights, node config).

    """
    cfg, public, pid = setup_node(context)
    targets = decode_targets(msg, public.num_classes)
    conf = msg.content.config_records[keys.CONFIG]
    rnd = int(conf[keys.SERVER_ROUND])  # type: ignore[arg-type]
    check_device(cfg, pid, rnd)
    check_targets(targets, public.num_classes)
    proxy_idx, soft, knowledge, reply_idx = targets
    x_local, y_local = private_data(cfg, context, pid)
    malicious = pid in malicious_partitions(cfg.num_clients, cfg.attack.fraction, cfg.seed)
    if malicious and cfg.attack.kind == "label_flip":
        y_local = torch.from_numpy(flip_labels(y_local.numpy(), public.num_classes))
    model, opt = load_student(context, cfg, public, pid)
    if keys.WEIGHTS in msg.content.array_records:
        opt = adopt_weights(cfg, model, msg.content.array_records[keys.WEIGHTS])
    lr = float(conf.get(keys.LR, cfg.distill.lr))  # type: ignore[arg-type]
    for group in opt.param_groups:
        group["lr"] = lr
    return TrainJob(
        cfg=cfg,
        public=public,
        pid=pid,
        rnd=rnd,
        malicious=malicious,
        x_local=x_local,
        y_local=y_local,
        model=model,
        opt=opt,
        proxy_idx=proxy_idx,
        soft=soft,
        knowledge=knowledge,
        reply_idx=reply_idx,
        lr=lr,
        gen=round_generator(cfg.seed, pid, rnd, "node.batches"),
        **_hyperparameters(cfg, conf),
        **dp_parameters(cfg, context, conf),
    )


def _hyperparameters(cfg: FedkdConfig, conf: ConfigRecord) -> dict[str, int | float | bool]:
    """Epochs, temperature, alpha and ``send_weights`` of the instruction (config defaults)."""
    d = cfg.distill
    return {
        "epochs": int(conf.get(keys.LOCAL_EPOCHS, d.local_epochs)),  # type: ignore[arg-type]
        "temperature": float(conf.get(keys.TEMPERATURE, d.temperature)),  # type: ignore[arg-type]
        "alpha": float(conf.get(keys.ALPHA, d.alpha)),  # type: ignore[arg-type]
        "send_weights": bool(conf.get(keys.SEND_WEIGHTS, False)),
    }


def adopt_weights(
    cfg: FedkdConfig, model: torch.nn.Module, record: ArrayRecord
) -> torch.optim.Optimizer:
    """Load a global student (fedavg, feddf) into ``model``; a fresh optimizer for it.

    Raises
    ------
    ValueError
        When the arrays' names or shapes do not fit the student.

    """
    state = record_state_dict(record)
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ValueError(
            f"received weights do not fit student {cfg.student.model!r}: arrays "
            f"{sorted((k, tuple(v.shape)) for k, v in state.items())}"
        )
    model.load_state_dict(state)
    return make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)
