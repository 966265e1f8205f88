"""DP-SGD for a student's local training, with Opacus.

Only the private data needs protecting. An epoch keeps the trainer's proxy steps (one
public proxy batch each); ``ceil(n / batch)`` of them, spread evenly, are also *private*
steps: the private data is Poisson-sampled (every sample in with probability
``sample_rate = min(1, batch / n)``), per-sample cross-entropy gradients are clipped to
``clip`` and summed with Gaussian noise ``N(0, (z * clip)^2)`` by Opacus
(:class:`opacus.GradSampleModule` + :class:`opacus.optimizers.DPOptimizer`) and divided by
the expected batch size; that gradient is weighted by ``1 - alpha`` (noise included), the
distillation gradient of the public proxy batch by ``alpha`` without noise (public data
costs no privacy), and the optimizer steps once. So an epoch is one expected pass over
the private data, as many private steps as a plain epoch without a proxy set would take.
Opacus' RDP accountant gives epsilon for the private steps at ``sample_rate``
(:mod:`fedkd.privacy.accounting`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn

from fedkd.batch_schedule import distill_schedule, steps_per_epoch
from fedkd.distill_objective import NO_STATS, DistillStats, step_objective
from fedkd.losses import DistillLoss, get_loss
from fedkd.privacy.noise import NoiseSource, SecureNoise

_REGISTERED = False


def _register_grad_samplers() -> None:
    """Teach Opacus the per-sample gradients of :class:`fedkd.models.MatmulConv1d`.

    The layer computes ``windows(x) @ W + b`` with ``windows`` of shape ``(N, L', C k)``,
    so sample ``n``'s gradients are ``windows[n]^T @ g[n]`` and ``g[n].sum(0)``, where
    ``g`` is the gradient of the loss w.r.t. the layer's output. Opacus' hook mode then
    handles the whole CNN (its own samplers cover ``nn.Linear``), far faster than its
    generic functorch fallback (about 2 s per step here).
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from opacus.grad_sample import register_grad_sampler

    from fedkd.models import MatmulConv1d

    @register_grad_sampler(MatmulConv1d)
    def _matmul_conv1d(
        layer: MatmulConv1d, activations: list[torch.Tensor], backprops: torch.Tensor
    ) -> dict[nn.Parameter, torch.Tensor]:
        x = F.pad(activations[0], (0, 0, layer.padding, layer.padding))
        windows = x.unfold(1, layer.kernel, layer.stride).flatten(2)  # (N, L', C k)
        return {
            layer.weight: torch.einsum("nlf,nlo->nfo", windows, backprops),
            layer.bias: backprops.sum(1),
        }

    _REGISTERED = True


class _SourcedDPOptimizer(DPOptimizer):
    """Opacus' DPOptimizer whose Gaussian noise comes from a :class:`NoiseSource`."""

    def __init__(self, optimizer: torch.optim.Optimizer, source: NoiseSource, **kw: Any) -> None:
        super().__init__(optimizer, **kw)
        self.noise_source = source

    def add_noise(self) -> None:
        """``p.grad`` = clipped sum + ``N(0, (z clip)^2)`` from the noise source."""
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            summed = p.summed_grad
            noise = torch.from_numpy(self.noise_source.normal(std, tuple(summed.shape)))
            p.grad = (summed + noise.to(summed.dtype)).view_as(p)
            _mark_as_processed(p.summed_grad)


def sample_rate(n_private: int, batch_size: int) -> float:
    """Poisson sampling rate of private samples: an expected batch of ``batch_size``."""
    return 1.0 if n_private <= batch_size else batch_size / n_private


__all__ = [
    "fit_distill_dp",
    "private_steps_per_epoch",
    "sample_rate",
    "steps_per_epoch",
]


def private_steps_per_epoch(n_private: int, batch_size: int) -> int:
    """DP steps per epoch: one expected pass over the private data (0 without data)."""
    return math.ceil(n_private / batch_size) if n_private else 0


def fit_distill_dp(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x_local: torch.Tensor,
    y_local: torch.Tensor,
    x_proxy: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    temperature: float,
    alpha: float,
    gen: torch.Generator,
    noise_multiplier: float,
    clip: float,
    loss: str | DistillLoss = "response",
    source: NoiseSource | None = None,
) -> tuple[DistillStats, int]:
    """:func:`fedkd.training.fit_distill` with DP-SGD on the private side.

    ``gen`` drives only what is public (the proxy batches); the Poisson sampling of private
    samples and the gradient noise come from ``source`` (default: the cryptographic
    :class:`fedkd.privacy.noise.SecureNoise`), never from the run seed.
    Returns the last epoch's mean losses and the number of DP steps taken (each step
    samples the private data once, also when the Poisson batch comes out empty).
    """
    _register_grad_samplers()
    source = source if source is not None else SecureNoise()
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    n = len(x_local)
    q = sample_rate(n, batch_size)
    # public side: the trainer's proxy batches; the private rows are Poisson-sampled below
    schedule = distill_schedule(
        len(x_proxy) if alpha > 0 else 0,
        n,
        batch_size=batch_size,
        epochs=epochs,
        gen=gen,
        draw_local=False,
    )
    n_steps = steps_per_epoch(len(x_proxy) if alpha > 0 else 0, n, batch_size)
    m = private_steps_per_epoch(n, batch_size) if alpha < 1 else 0
    private_at = {(j * n_steps) // m for j in range(m)} if m else set()
    gsm, dp_opt = _wrap(model, opt, source, noise_multiplier, clip, max(1, round(q * n)))
    model.train()
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    private = _PrivateSide(gsm, dp_opt, model, x_local, y_local, q, alpha, source)
    stats = NO_STATS
    try:
        for epoch in schedule:
            tot = kd_tot = ce_tot = 0.0
            for step, (pi, _) in enumerate(epoch):
                dp_opt.zero_grad(set_to_none=True)
                ce_val = private.step() if step in private_at else 0.0
                kd_val = 0.0
                if pi is not None:
                    gsm.disable_hooks()
                    kd = loss_fn(model(x_proxy[pi]), targets[pi], temperature)
                    (alpha * kd).backward()  # public data: plain gradient, added to p.grad
                    kd_val = kd.item()
                opt.step()
                for p in model.parameters():
                    p.grad_sample = None
                tot += step_objective(0.0, kd_val, ce_val, alpha)
                kd_tot += kd_val
                ce_tot += ce_val
            k = max(n_steps, 1)
            stats = DistillStats(tot / k, kd_tot / k, ce_tot / max(m, 1))
    finally:
        gsm._close()
    return stats, private.steps


def _wrap(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    source: NoiseSource,
    noise_multiplier: float,
    clip: float,
    expected_batch: int,
) -> tuple[Any, DPOptimizer]:
    """Opacus' per-sample-gradient module around ``model`` and the noisy optimizer."""
    from opacus import GradSampleModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure RNG and functorch
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        dp_opt = _SourcedDPOptimizer(
            opt,
            source,
            noise_multiplier=noise_multiplier,
            max_grad_norm=clip,
            expected_batch_size=expected_batch,
            loss_reduction="mean",  # (sum of clipped per-sample grads + noise) / E[batch]
        )
    return gsm, dp_opt


class _PrivateSide:
    """The DP-SGD private step: Poisson sample, clip per sample, sum, add noise."""

    def __init__(
        self,
        gsm: Any,
        dp_opt: DPOptimizer,
        model: nn.Module,
        x_local: torch.Tensor,
        y_local: torch.Tensor,
        q: float,
        alpha: float,
        source: NoiseSource,
    ) -> None:
        self.gsm, self.dp_opt, self.model = gsm, dp_opt, model
        self.x_local, self.y_local, self.q, self.alpha = x_local, y_local, q, alpha
        self.source = source
        self.steps = 0

    def step(self) -> float:
        """Put ``(1 - alpha) *`` the noisy private gradient into ``p.grad``; the mean CE.

        Every call samples the private data once and counts as a DP step, also when the
        Poisson batch comes out empty (Opacus still adds the noise).
        """
        take = torch.from_numpy(self.source.uniform((len(self.x_local),)) < self.q)
        self.gsm.enable_hooks()
        ce_val = 0.0
        if take.any():
            out = self.gsm(self.x_local[take])
            ce = F.cross_entropy(out, self.y_local[take], reduction="sum")
            ce.backward()
            ce_val = ce.item() / int(take.sum())
        else:  # an empty Poisson batch: Opacus still adds the noise
            for p in self.model.parameters():
                p.grad_sample = torch.zeros((0, *p.shape))
        self.dp_opt.pre_step()  # clip per sample, sum, add noise, / expected batch
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 - self.alpha)
        self.steps += 1
        return ce_val
