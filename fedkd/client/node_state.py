"""What persists in a node's Context between rounds: the student, its optimizer, aux modules.

Each entry is a dict of tensors (and plain values) saved with ``torch.save`` into one
``ConfigRecord`` (``{"blob": bytes}``) of ``context.state``.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, RecordDict

from fedkd import seeds
from fedkd.client.public_data import PublicData
from fedkd.config import FedkdConfig
from fedkd.models import build_seeded_model
from fedkd.training import make_optimizer

STUDENT_KEY = "fedkd-student"
"""State key of the student's ``{"model": state_dict, "opt": optimizer state}``."""

AUX_KEY = "fedkd-aux"
"""State key of the modules a catalogue method keeps on the device."""


def fresh_student(
    cfg: FedkdConfig, public: PublicData, partition_id: int, generation: int = 0
) -> torch.nn.Module:
    """The client's initial student (``generation`` > 0: a born-again or peer student)."""
    return build_seeded_model(
        cfg.student_model(partition_id),
        public.input_shape,
        public.num_classes,
        seeds.node_seed(cfg.seed, "node.student_init", partition_id, generation),
    )


def load_student(
    context: Context, cfg: FedkdConfig, public: PublicData, partition_id: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The node's student and optimizer as saved (fresh ones before the first save)."""
    model = fresh_student(cfg, public, partition_id)
    opt = make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)
    state = load_blob(context, STUDENT_KEY)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    return model, opt


def save_student(context: Context, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Save the student and its optimizer state in the node's Context."""
    save_blob(context, STUDENT_KEY, {"model": model.state_dict(), "opt": opt.state_dict()})


def student_weights(state: RecordDict) -> dict[str, torch.Tensor] | None:
    """The student's ``state_dict`` saved in a node state (None before its first train)."""
    if STUDENT_KEY not in state:
        return None
    blob = state.config_records[STUDENT_KEY]["blob"]
    return torch.load(io.BytesIO(blob), weights_only=True)["model"]  # type: ignore[arg-type]


def load_blob(context: Context, key: str) -> dict[str, Any]:
    """The tensors dict stored under ``key`` in the node's state ({} when absent)."""
    if key not in context.state:
        return {}
    blob = context.state.config_records[key]["blob"]
    return dict(torch.load(io.BytesIO(blob), weights_only=True))  # type: ignore[arg-type]


def save_blob(context: Context, key: str, state: dict[str, Any]) -> None:
    """Store a dict of tensors (and plain values) under ``key`` in the node's state."""
    buf = io.BytesIO()
    torch.save(state, buf)
    context.state[key] = ConfigRecord({"blob": buf.getvalue()})


def load_aux(context: Context) -> dict[str, Any]:
    """Modules a catalogue method keeps on the device (adapter, peers, previous generation)."""
    return load_blob(context, AUX_KEY)


def save_aux(context: Context, state: dict[str, Any]) -> None:
    """Save a catalogue method's device-side modules (nothing when ``state`` is empty)."""
    if state:
        save_blob(context, AUX_KEY, state)
