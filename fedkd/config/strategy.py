"""The ``[strategy]``, ``[evaluate]`` and ``[baselines]`` tables: what the server does.

Strategy and fusion names are checked against their registries by :mod:`fedkd.validation`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedkd.config.section import MAX_SECONDS, Section


class StrategyConfig(Section):
    """Server strategy: who is sampled, which soft targets are sent."""

    name: str = Field("multi_teacher", description="Registered strategy name.")
    fusion: str = Field(
        "mean",
        description="Teacher ensemble rule: 'mean' (mean of logits), 'mean_probs' (mean "
        "of probabilities at distill.temperature), 'accuracy_weighted' (logits weighted "
        "by each teacher's accuracy on the teacher split), 'era' (DS-FL entropy "
        "reduction), 'median', 'trimmed_mean', 'confidence_weighted', 'entropy_weighted'.",
    )
    client_weights: Literal["data_size", "uniform"] = Field(
        "data_size",
        description="Weights of clients in the consensus rules (mean, mean_probs, era, "
        "median, trimmed_mean, confidence/entropy_weighted): their private data sizes as "
        "reported, or equal. Weighted median/trimmed_mean are robust to clients holding "
        "less than half/trim_fraction of the weight; clients that lie about their size "
        "can gain weight: use 'uniform' when sizes cannot be trusted.",
    )
    teacher_fusion: str = Field(
        "mean", description="'hybrid' only: rule for the teachers' ensemble."
    )
    teacher_weight_floor: float = Field(
        0.5, ge=0, le=1, description="'hybrid': the teachers' final weight in the targets."
    )
    teacher_decay_rounds: int = Field(
        10,
        ge=0,
        le=100_000,
        description="'hybrid': rounds over which the teacher weight falls to its floor.",
    )
    trim_fraction: float = Field(
        0.2, ge=0, lt=0.5, description="'trimmed_mean' fusion: share cut at each end."
    )
    era_temperature: float = Field(
        0.1, gt=0, le=1000, description="'era' fusion: sharpening temperature (DS-FL uses 0.1)."
    )
    warm_start_epochs: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Epochs of server-side training of the initial student that every "
        "client receives at first contact: KD towards the teachers on the proxy set, or "
        "(no teachers) supervised on the labeled teacher split as in FedMD; 0 = clients "
        "start from random students.",
    )
    server_epochs: int = Field(
        5,
        ge=0,
        le=10_000,
        description="'feddf': epochs of server-side ensemble distillation of the averaged "
        "student on the proxy rows, per round; 'centralized_kd' ignores it.",
    )
    server_lr: float = Field(
        1e-3, gt=0, le=10, description="'feddf': Adam learning rate of server-side distillation."
    )
    fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of clients sampled per round, in (0, 1]."
    )
    min_clients: int = Field(
        1, ge=1, le=1_000_000, description="Sample at least this many clients."
    )
    proxy_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction of the proxy set whose soft targets are sent each round "
        "(a fresh seeded subset per round).",
    )
    max_reply_bytes: int = Field(
        64 * 2**20, ge=1, le=2**34, description="Replies larger than this are rejected."
    )
    min_valid_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The run stops (exit 1, one line naming the phase, the counts and the "
        "rejection kinds) when fewer than this fraction of the clients asked in a phase "
        "send a valid reply: discovery, each round's train replies, the local-only "
        "baseline (evaluate replies are checked one by one, not counted). Rejected replies "
        "(broken, out of range, too large, no reply within round_timeout_s) count against "
        "it; with devices.tiers, replies the round policy drops as late and simulated "
        "crashes (failure_prob) do not, and void rounds are not checked. Discovery and the "
        "baseline need at least one valid reply, and a run in which no train reply was "
        "valid fails, even at 0 (0 = no per-round check).",
    )
    round_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds the server waits for the replies of one phase; clients that "
        "have not answered by then are counted as 'no reply' and the round goes on.",
    )
    wait_for_clients_s: float = Field(
        300.0,
        ge=0,
        le=MAX_SECONDS,
        description="At the start, seconds to wait for num_clients nodes to connect "
        "(deployment); the run then goes on with those connected (at least min_clients).",
    )


class EvaluateConfig(Section):
    """Federated evaluation of the students on the test split."""

    every: int = Field(
        1, ge=1, le=100_000, description="Evaluate every N rounds (the last always)."
    )
    fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of clients evaluated (the last round: all)."
    )


class BaselinesConfig(Section):
    """Baselines computed in the same run."""

    local_only: bool = Field(
        True,
        description="Each client trains the same student on its private data only, for "
        "rounds x local_epochs epochs; reported as baselines.local_only_accuracy_mean.",
    )
