"""The ``[devices]`` and ``[ray]`` tables, the device presets and the tier assignment.

The seeded assignment of clients to tiers is pure numpy, so the config answers
``tier_index`` without the device simulator (:mod:`fedkd.devices`).

A tier's student spec is checked by :mod:`fedkd.validation`.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from fedkd.config.section import MAX_SECONDS, Section
from fedkd.seeds import rng

# Figures behind the presets: see docs/devices.md (sources and reasoning). Compute is the
# *effective* FP32 training throughput of a small CNN on the device's CPU/GPU, far below
# the chip's peak; memory is what a training process may use.
PRESETS: dict[str, dict[str, Any]] = {
    "microcontroller": {
        "gflops": 0.05,
        "memory_mb": 1.0,
        "downlink_mbps": 0.25,
        "uplink_mbps": 0.1,
        "latency_ms": 100.0,
        "availability": 0.9,
        "failure_prob": 0.05,
    },
    "low_end_phone": {
        "gflops": 1.0,
        "memory_mb": 512.0,
        "downlink_mbps": 2.0,
        "uplink_mbps": 0.5,
        "latency_ms": 150.0,
        "availability": 0.6,
        "failure_prob": 0.1,
    },
    "high_end_phone": {
        "gflops": 20.0,
        "memory_mb": 2048.0,
        "downlink_mbps": 30.0,
        "uplink_mbps": 10.0,
        "latency_ms": 40.0,
        "availability": 0.8,
        "failure_prob": 0.02,
    },
    "edge_gpu": {
        "gflops": 200.0,
        "memory_mb": 4096.0,
        "downlink_mbps": 100.0,
        "uplink_mbps": 100.0,
        "latency_ms": 5.0,
        "availability": 0.95,
        "failure_prob": 0.01,
    },
}


def assign_tiers(shares: list[float], num_clients: int, seed: int) -> np.ndarray:
    """Tier index of every client: counts by largest remainder, order shuffled by ``seed``.

    ``shares`` need not sum to 1 (they are normalized). Each tier with a positive share
    gets ``floor(share * N)`` clients plus one of the leftovers in order of the largest
    fractional parts, so counts differ from ``share * N`` by less than one.
    """
    w = np.asarray(shares, dtype=float)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"tier shares must be non-negative with a positive sum, got {shares}")
    exact = w / w.sum() * num_clients
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: num_clients - counts.sum()]] += 1
    tiers = np.repeat(np.arange(len(w)), counts)
    rng(seed, "devices.tiers").shuffle(tiers)
    return tiers


@functools.lru_cache(maxsize=8)
def tier_table(shares: tuple[float, ...], num_clients: int, seed: int) -> np.ndarray:
    """:func:`assign_tiers`, cached and read-only (every client asks for its tier)."""
    table = assign_tiers(list(shares), num_clients, seed)
    table.setflags(write=False)
    return table


class TierConfig(Section):
    """One class of simulated device (``[[devices.tiers]]``).

    A ``preset`` fills the hardware figures the table does not set (docs/devices.md
    gives the presets' sources).
    """

    name: str = Field(description="Tier name, used in summary.json final.by_tier.NAME.")
    preset: str | None = Field(
        None,
        description="Fill unset hardware figures from a preset: 'microcontroller', "
        "'low_end_phone', 'high_end_phone', 'edge_gpu'.",
    )
    share: float = Field(
        gt=0, le=1e6, description="Share of the clients in this tier (normalized)."
    )
    student: str | None = Field(
        None,
        description="Model spec of this tier's students (default: student.model). Only "
        "logits travel, so tiers may mix architectures.",
    )
    gflops: float = Field(
        gt=0, le=1e9, description="Effective training throughput in GFLOP/s (virtual clock)."
    )
    memory_mb: float = Field(
        gt=0,
        le=1e9,
        description="Memory a training process may use; a student whose estimated "
        "training memory exceeds it is a config error.",
    )
    downlink_mbps: float = Field(gt=0, le=1e7, description="Download bandwidth, Mbit/s.")
    uplink_mbps: float = Field(gt=0, le=1e7, description="Upload bandwidth, Mbit/s.")
    latency_ms: float = Field(
        ge=0, le=MAX_SECONDS * 1000, description="One-way latency added to each transfer, ms."
    )
    availability: float = Field(
        gt=0, le=1, description="Probability that a client is online in a round."
    )
    failure_prob: float = Field(
        ge=0, lt=1, description="Probability that a sampled client crashes mid-round."
    )
    cpus: float = Field(
        1.0, gt=0, le=1024, description="engine='ray': CPUs each of this tier's actors reserves."
    )
    actors: int = Field(
        0,
        ge=0,
        le=100_000,
        description="engine='ray': actors in this tier's pool (0 = by share of CPUs).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        preset = data["preset"]
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(sorted(PRESETS))}")
        return {**PRESETS[preset], **data}


class DevicesConfig(Section):
    """Simulated device tiers, the virtual clock and the round policy (no tiers: off)."""

    tiers: list[TierConfig] = Field(
        default_factory=list,
        description="Device tiers ([[devices.tiers]] tables); empty = no device simulation.",
    )
    policy: Literal["sync", "deadline", "over_select"] = Field(
        "sync",
        description="'sync' waits for every sampled client; 'deadline' drops replies "
        "later than deadline_s virtual seconds; 'over_select' samples k(1 + over_select) "
        "clients and keeps the first k replies.",
    )
    deadline_s: float = Field(
        60.0, gt=0, le=MAX_SECONDS, description="'deadline': virtual seconds per round."
    )
    over_select: float = Field(
        0.3, ge=0, le=10, description="'over_select': extra share x of clients sampled."
    )
    min_replies: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="A round with fewer kept replies is void: the server keeps its "
        "soft targets and the round is marked void in metrics.jsonl.",
    )

    @field_validator("tiers")
    @classmethod
    def _unique_names(cls, v: list[TierConfig]) -> list[TierConfig]:
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        return v


class RayConfig(Section):
    """engine='ray': where ClientApp calls run."""

    address: str | None = Field(
        None,
        description="Join an existing Ray cluster (e.g. '127.0.0.1:6379' after "
        "`ray start --head`); unset = start a local Ray instance for the run and stop it "
        "at the end.",
    )
    num_cpus: int = Field(
        0,
        ge=0,
        le=100_000,
        description="CPUs of the local Ray instance (0 = all cores); ignored with address.",
    )
