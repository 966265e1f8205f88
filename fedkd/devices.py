"""Simulated edge hardware: device tiers, presets, the virtual clock and round policies.

Pure functions (numpy / torch in, numbers out), no Flower types. The server and every
client compute the same tier assignment, availability and failure draws from the seed,
so no extra message is needed to agree on them.

Virtual time of one client in one round (seconds)::

    download = latency + bytes_down * 8 / downlink_bps
    compute  = (3 * train_samples + infer_samples) * flops_per_sample / flops_per_s
    upload   = latency + bytes_up * 8 / uplink_bps
    total    = download + compute + upload

``bytes_down`` / ``bytes_up`` are the serialized sizes of the client's actual train
instruction and reply; ``train_samples`` counts every sample forwarded during local
training (:func:`train_samples`), a training sample costing three forward passes
(forward + backward); ``infer_samples`` are the proxy rows the client computes logits on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedkd.losses import method_of
from fedkd.seeds import rng


def _draw(seed: int, stream: str, partition: int, server_round: int) -> float:
    return float(rng(seed, stream, partition, server_round).random())


def is_available(availability: float, seed: int, partition: int, server_round: int) -> bool:
    """Whether the client is online in ``server_round`` (a seeded draw per client and round)."""
    return _draw(seed, "devices.available", partition, server_round) < availability


def fails(failure_prob: float, seed: int, partition: int, server_round: int) -> bool:
    """Whether the client crashes mid-round in ``server_round`` (a seeded draw)."""
    return _draw(seed, "devices.fails", partition, server_round) < failure_prob


def train_samples(n_proxy: int, n_local: int, *, batch_size: int, epochs: int, alpha: float) -> int:
    """Samples forwarded by one local training (:func:`fedkd.training.fit_distill`).

    An epoch is ``ceil(max(P, L) / batch)`` steps, each taking one proxy batch and one
    private batch (the shorter side cycles); ``alpha = 1`` drops the private side and
    ``alpha = 0`` the proxy side, as the trainer does.
    """
    p = n_proxy if alpha > 0 else 0
    n = n_local if alpha < 1 else 0
    steps = math.ceil(max(p, n) / batch_size) * epochs
    return _cycled(p, batch_size, steps) + _cycled(n, batch_size, steps)


def _cycled(n: int, batch_size: int, steps: int) -> int:
    """Samples in ``steps`` batches drawn from reshuffled passes over ``n`` rows.

    A pass is split into batches of ``batch_size`` and taken from its end, so a partly
    used pass starts with its short batch (as :func:`fedkd.batch_schedule.distill_schedule`).
    """
    if n == 0:
        return 0
    per_pass = math.ceil(n / batch_size)
    full, rest = divmod(steps, per_pass)
    short = n - (per_pass - 1) * batch_size
    return full * n + (short + (rest - 1) * batch_size if rest else 0)


def _leaf_outputs(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[nn.Module, Any]]:
    """Every leaf module of ``model`` with its output on one zero sample."""
    seen: list[tuple[nn.Module, Any]] = []
    handles = [
        m.register_forward_hook(lambda mod, _inp, out: seen.append((mod, out)))
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return seen


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs (2 x multiply-adds) of one sample through ``model``'s weight layers.

    A layer with weight ``W`` applied at ``n`` positions (1 for a linear layer, the output
    length for a convolution) costs ``2 * W.numel() * n``.
    """
    total = 0
    for mod, out in _leaf_outputs(model, input_shape):
        weight = getattr(mod, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
            continue
        channels = out.shape[1] if isinstance(mod, nn.Conv1d | nn.Conv2d) else out.shape[-1]
        total += 2 * weight.numel() * (out.numel() // channels)
    return total


def training_memory_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """Estimated bytes to train ``model`` with Adam at ``batch_size``.

    Weights, gradients and two Adam moments (4 x 4 B per parameter), plus every leaf
    module's output (4 B per value) for one step's proxy and private batches, kept for
    the backward pass.
    """
    acts = sum(o.numel() for _, o in _leaf_outputs(model, input_shape) if torch.is_tensor(o))
    params = sum(p.numel() for p in model.parameters())
    return 16 * params + 4 * acts * 2 * batch_size


@dataclass(frozen=True)
class ClientTime:
    """Virtual seconds of one client's round, by part."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:  # noqa: D102
        return self.download_s + self.compute_s + self.upload_s


def client_time(
    *,
    bytes_down: int,
    bytes_up: int,
    train_samples: int,
    infer_samples: int,
    flops_per_sample: int,
    gflops: float,
    downlink_mbps: float,
    uplink_mbps: float,
    latency_ms: float,
) -> ClientTime:
    """The virtual clock of one client (see the module docstring for the formula)."""
    latency = latency_ms / 1e3
    compute = (3 * train_samples + infer_samples) * flops_per_sample / (gflops * 1e9)
    return ClientTime(
        download_s=latency + bytes_down * 8 / (downlink_mbps * 1e6),
        compute_s=compute,
        upload_s=latency + bytes_up * 8 / (uplink_mbps * 1e6),
    )


@dataclass(frozen=True)
class PolicyOutcome:
    """Which replies a round policy keeps, and how long the round took (virtual)."""

    kept: list[int]
    late: list[int]
    round_time_s: float


def apply_policy(
    policy: str, times: dict[int, float], *, deadline_s: float, keep: int
) -> PolicyOutcome:
    """Apply a round policy to the virtual finishing times of the replies.

    Parameters
    ----------
    policy : {"sync", "deadline", "over_select"}
        ``sync`` waits for every reply; ``deadline`` drops replies later than
        ``deadline_s`` (the round then lasts ``deadline_s``); ``over_select`` keeps the
        first ``keep`` replies (the round lasts until the ``keep``-th arrives).
    times : dict
        Client id -> virtual seconds until its reply arrives (failed clients absent).
    deadline_s : float
        ``deadline`` only.
    keep : int
        ``over_select`` only: replies to keep.

    Returns
    -------
    PolicyOutcome
        Kept and late client ids (each sorted) and the round's virtual duration
        (0 without replies).

    """
    order = sorted(times, key=lambda c: (times[c], c))
    if policy == "sync":
        kept, late = order, []
    elif policy == "deadline":
        kept = [c for c in order if times[c] <= deadline_s]
        late = [c for c in order if times[c] > deadline_s]
    elif policy == "over_select":
        kept, late = order[:keep], order[keep:]
    else:
        raise ValueError(f"unknown round policy {policy!r}; allowed: sync, deadline, over_select")
    if policy == "deadline" and late:
        duration = deadline_s
    else:
        duration = max((times[c] for c in kept), default=0.0)
    return PolicyOutcome(sorted(kept), sorted(late), float(duration))


@dataclass(frozen=True)
class TierModel:
    """A tier's student, measured once: what the virtual clock and the summary need."""

    name: str
    spec: str
    parameters: int
    flops_per_sample: int
    train_memory_bytes: int


class DeviceFleet:
    """The simulated fleet of a run: tier per client, availability, virtual clock.

    Parameters
    ----------
    cfg : FedkdConfig
        A config with ``devices.tiers`` (at least one).
    input_shape, num_classes
        The dataset's sample shape and class count (to build each tier's student).

    Raises
    ------
    ValueError
        A tier's student does not fit the data or the tier's memory.

    """

    def __init__(self, cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> None:
        from fedkd.models import build_model, count_parameters

        self.cfg = cfg
        self.tiers = list(cfg.devices.tiers)
        self.models: list[TierModel] = []
        batch = cfg.distill.batch_size
        for i, tier in enumerate(self.tiers):
            spec = tier.student or cfg.student.model
            where = f"devices.tiers[{i}] ({tier.name}): student {spec!r}"
            try:
                model = build_model(spec, input_shape, num_classes)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            mem = training_memory_bytes(model, input_shape, batch)
            if mem > tier.memory_mb * 2**20:
                raise ValueError(
                    f"{where} needs about {mem / 2**20:.2f} MB to train at batch "
                    f"{batch}, the tier has memory_mb = {tier.memory_mb:g}; use a smaller "
                    "student, a smaller distill.batch_size or more memory_mb"
                )
            self.models.append(
                TierModel(
                    tier.name,
                    spec,
                    count_parameters(model),
                    flops_per_sample(model, input_shape),
                    mem,
                )
            )

    def tier_index(self, partition: int) -> int:
        """Tier index of client ``partition``."""
        index = self.cfg.tier_index(partition)
        assert index is not None
        return int(index)

    def online(self, partition: int, server_round: int) -> bool:
        """Whether client ``partition`` is available in ``server_round``."""
        tier = self.tiers[self.tier_index(partition)]
        return is_available(tier.availability, self.cfg.seed, partition, server_round)

    def time(
        self,
        partition: int,
        *,
        bytes_down: int,
        bytes_up: int,
        n_proxy: int,
        n_local: int,
        n_reply: int,
    ) -> ClientTime:
        """Virtual time of client ``partition`` for one train round (see module docs)."""
        i = self.tier_index(partition)
        tier, model = self.tiers[i], self.models[i]
        d = self.cfg.distill
        method = method_of(d.loss)  # mutual learning trains `peers` students per device
        students = method.students_per_device(d) if method is not None else 1
        return client_time(
            bytes_down=bytes_down,
            bytes_up=bytes_up,
            train_samples=students
            * train_samples(
                n_proxy, n_local, batch_size=d.batch_size, epochs=d.local_epochs, alpha=d.alpha
            ),
            infer_samples=n_reply,
            flops_per_sample=model.flops_per_sample,
            gflops=tier.gflops,
            downlink_mbps=tier.downlink_mbps,
            uplink_mbps=tier.uplink_mbps,
            latency_ms=tier.latency_ms,
        )
