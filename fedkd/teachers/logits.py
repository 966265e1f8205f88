"""Teachers' forward passes: logits in batches, without gradients, in eval mode."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_BATCH = 2048
"""Rows per forward pass unless ``teachers.inference_batch_size`` says otherwise."""


@torch.no_grad()
def batched_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = DEFAULT_BATCH,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on ``x``, ``batch_size`` rows at a time, in eval mode.

    No autograd graph is kept and only one batch of activations lives at a time; the
    result is one preallocated ``(N, C)`` CPU tensor (no list of chunks to concatenate).

    Parameters
    ----------
    model : nn.Module
        The teacher (put in eval mode; its weights are not changed).
    x : Tensor
        Inputs, ``(N, ...)``, on the CPU.
    batch_size : int
        Rows per forward pass.
    device : torch.device or str, optional
        Where the forward passes run (default: where ``x`` is); logits come back to the CPU.

    Returns
    -------
    Tensor
        ``(N, C)`` float32 logits on the CPU (``(0, 0)`` for no rows).

    """
    model.eval()
    if len(x) == 0:
        return torch.zeros((0, 0))
    out: torch.Tensor | None = None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        z = model(chunk if device is None else chunk.to(device))
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"the model returned a {type(z).__name__}, not a tensor of logits")
        if out is None:
            out = torch.empty((len(x), *z.shape[1:]), dtype=z.dtype)
        out[start : start + len(z)] = z.cpu()
    assert out is not None
    return out


@torch.no_grad()
def activation_bytes(model: nn.Module, x1: torch.Tensor) -> int:
    """Bytes of every module's output tensors in one forward pass on ``x1`` (one row).

    A bound from above on the activations one row keeps alive during inference (the sum
    over all modules, whether or not they are alive at the same time).
    """
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        outs = output if isinstance(output, tuple | list) else (output,)
        total += sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))

    model.eval()
    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        model(x1)
    finally:
        for h in handles:
            h.remove()
    return total


def bounded_batch(per_row: int, cap: int, budget_mb: float) -> int:
    """Rows per forward pass: at most ``cap``, and ``per_row`` bytes each under the budget."""
    return max(1, min(cap, int(budget_mb * 2**20) // max(per_row, 1)))
