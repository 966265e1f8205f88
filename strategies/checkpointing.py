"""A strategy's checkpoint: its changing attributes plus a server-side model's state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def strategy_state(strategy: object, attrs: Iterable[str]) -> dict[str, Any]:
    """``attrs`` of ``strategy``, plus ``model`` / ``opt`` state dicts when it has them."""
    state: dict[str, Any] = {a: getattr(strategy, a) for a in attrs}
    model = getattr(strategy, "model", None)
    if isinstance(model, torch.nn.Module):
        state["model"] = model.state_dict()
    opt = getattr(strategy, "opt", None)
    if isinstance(opt, torch.optim.Optimizer):
        state["opt"] = opt.state_dict()
    return state


def restore_strategy_state(strategy: Any, attrs: Iterable[str], state: dict[str, Any]) -> None:
    """Undo :func:`strategy_state`: set ``attrs`` back, load ``model`` / ``opt`` states."""
    for a in attrs:
        setattr(strategy, a, state[a])
    if "model" in state:
        strategy.model.load_state_dict(state["model"])
    if "opt" in state:
        strategy.opt.load_state_dict(state["opt"])
