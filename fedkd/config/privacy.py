"""The ``[privacy]`` table: differential privacy (docs/privacy.md).

Checks that need the strategy (which modes it supports) are in :mod:`fedkd.validation`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fedkd.config.section import Section


class PrivacyConfig(Section):
    """Differential privacy (docs/privacy.md); mode unset = not private."""

    mode: Literal["client_dp", "pate", "dp_sgd"] | None = Field(
        None,
        description="'client_dp' (clip each client's logit upload, Gaussian noise on the "
        "aggregate or per client), 'pate' (teachers on disjoint shards, GNMax noisy-argmax "
        "labels as targets), 'dp_sgd' (Opacus per-sample clipping and noise in local "
        "training); unset = no DP.",
    )
    epsilon: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Target epsilon: the noise multiplier is solved for it. Unset: epsilon "
        "is reported for privacy.noise_multiplier.",
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="Target delta (must be < 1/N).")
    noise_multiplier: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="Noise std in units of the clip (used when epsilon is unset).",
    )
    clip: float = Field(
        1.0,
        gt=0,
        le=1e6,
        description="L2 clip: of each row (one proxy sample's logit vector, centred) of a "
        "client's upload (client_dp; the upload's sensitivity is clip * sqrt(rows)), or of "
        "each per-sample gradient (dp_sgd).",
    )
    local: bool = Field(
        False,
        description="client_dp: each client adds the noise to its own upload (local DP, "
        "replace-one sensitivity 2 * clip * sqrt(rows), with the noise parameters the "
        "client itself holds); default: the server adds it once to the sum (central DP).",
    )
    amplification: bool = Field(
        True,
        description="client_dp (central): account for privacy amplification by client "
        "sampling (Poisson, rate q = sampled / all clients, drawn from a cryptographic "
        "source). false: account every client as present in every round (q = 1), which "
        "holds whatever decides who takes part (needed with devices.tiers).",
    )
    reproducible_noise: bool = Field(
        False,
        description="Debugging only: draw DP noise and private sampling from the run seed "
        "instead of the OS's cryptographic source. Anyone with the seed can then remove the "
        "noise: summary.json marks the run as not private (privacy.private = false).",
    )
    queries: int = Field(
        500,
        ge=1,
        le=10_000_000,
        description="pate: proxy rows labeled by the noisy teacher vote (once, before "
        "round 1); students distil on those rows only.",
    )

    @field_validator("epsilon")
    @classmethod
    def _positive_epsilon(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("epsilon must be > 0 (leave it unset for no target)")
        return v

    @field_validator("clip")
    @classmethod
    def _positive_clip(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("clip must be > 0")
        return v
