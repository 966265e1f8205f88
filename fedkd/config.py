"""Run configuration: pydantic v2 models (frozen, ``extra="forbid"``), TOML in, object out.

Every field carries a description; ``fedkd config --schema`` prints them all and
``docs/config.md`` is generated from the same models.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fedkd.errors import ConfigError
from fedkd.registry import Registry

_RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


MAX_INT_VALUE = 2**53
"""Safety net: no integer config value may exceed this in size (each field also has its own
sane maximum; every float must be finite, see ``_Section``)."""
MAX_CLASSES = 10_000
"""Most classes a dataset may have (labels 0..MAX_CLASSES-1); also bounds class counts."""
MAX_SAMPLES = 100_000_000
"""Largest split size (a count) a config may ask for."""
MAX_BATCH = 1_048_576
"""Largest mini-batch size."""
MAX_SECONDS = 30 * 24 * 3600.0
"""Longest timeout or deadline, in seconds (30 days)."""


class _Section(BaseModel):
    """Base of every config table: frozen, unknown keys refused, every float finite.

    One generic check runs on every field before its own validation: TOML dates/times,
    ``true``/``false`` where a number is expected, and integers beyond ``MAX_INT_VALUE``
    are refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_value(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, _dt.date | _dt.time):
            raise ValueError(
                "a TOML date/time is not a value of any fedkd key (quote it for a string)"
            )
        field = cls.model_fields.get(info.field_name or "")
        kinds = _kinds(field.annotation) if field is not None else set()
        if type(v) is bool and bool not in kinds and kinds & {int, float}:
            raise ValueError("true/false is not a number")
        bounded = field is not None and any(
            getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
            for m in field.metadata
        )
        if type(v) is int and abs(v) > MAX_INT_VALUE and not bounded:
            raise ValueError(f"integer too large (at most {MAX_INT_VALUE} in size)")
        return v


def _kinds(annotation: Any) -> set[Any]:
    """The plain types of a field annotation (``float | int | None`` -> {float, int, None})."""
    args = typing.get_args(annotation)
    if not args or typing.get_origin(annotation) is Literal:
        return {annotation}
    return {k for a in args for k in _kinds(a)}


Size = float | int


def _registered(registry: Registry[Any], name: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown {registry.kind}; allowed: {registry.allowed()}")
    return name


def _check_model_spec(spec: str) -> str:
    from fedkd.models import parse_spec

    parse_spec(spec)  # raises ValueError with what is allowed
    return spec


class DataConfig(_Section):
    """Dataset and its disjoint splits."""

    name: str = Field(
        "mnist1d",
        description="'mnist1d' (generated offline, cached under $FEDKD_CACHE) or "
        "'npz:PATH' (a file with 'x' of shape (N, features) or (N, channels, length) "
        "and integer labels 'y').",
    )
    num_samples: int = Field(
        20000,
        ge=100,
        le=10_000_000,
        description="mnist1d only: samples to generate (train + test pooled).",
    )
    teacher_size: Size = Field(
        0.4,
        gt=0,
        le=MAX_SAMPLES,
        description="Labeled teacher-train split: a fraction (< 1) or a count.",
    )
    proxy_size: Size = Field(
        0.2, gt=0, le=MAX_SAMPLES, description="Public proxy split (labels never used by students)."
    )
    client_pool_size: Size = Field(
        0.2,
        gt=0,
        le=MAX_SAMPLES,
        description="Private data shared out among clients by the partitioner.",
    )
    test_size: Size = Field(
        0.2, gt=0, le=MAX_SAMPLES, description="Held-out test split for all accuracies."
    )
    normalize: bool = Field(
        True, description="Standardise features with the teacher split's mean and std."
    )
    teacher_view: str = Field(
        "full",
        description="Cross-modal: what the server's teachers see of each sample. 'full', "
        "'downsample:K' (mean of every K samples along the length), 'crop:A:B' (positions "
        "A..B-1), 'channels:I,J' (those channels of (C, L) inputs), 'noise:S' (a fixed "
        "Gaussian noise of std S per sample) or 'array:NAME' (another array of the npz, "
        "same N). See docs/losses.md.",
    )
    student_view: str = Field(
        "full",
        description="Cross-modal: what the clients' students see (private data, proxy, "
        "test); same choices as teacher_view.",
    )

    @field_validator("teacher_view", "student_view")
    @classmethod
    def _known_view(cls, v: str) -> str:
        from fedkd.views import parse_view

        parse_view(v)
        return v

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from fedkd.data import DATASET_REGISTRY

        base = v.split(":", 1)[0]
        if base not in DATASET_REGISTRY:
            raise ValueError(f"unknown dataset; allowed: {DATASET_REGISTRY.allowed()}, npz:PATH")
        if base == "npz" and not v[4:]:
            raise ValueError("npz needs a path: npz:PATH")
        return v


class PartitionConfig(_Section):
    """How the client pool is split among clients (flwr-datasets partitioners)."""

    kind: Literal["iid", "dirichlet", "classes"] = Field(
        "dirichlet",
        description="'iid', 'dirichlet' (label skew with concentration alpha) or "
        "'classes' (each client holds classes_per_client labels).",
    )
    alpha: float = Field(
        0.3,
        gt=0,
        le=10_000,
        description="Dirichlet concentration; smaller is more skewed (0.05-100).",
    )
    classes_per_client: int = Field(
        2, ge=1, le=MAX_CLASSES, description="'classes' partitioner only."
    )
    min_size: int = Field(
        4,
        ge=1,
        le=1_000_000,
        description="Every client ends with at least this many samples: if the "
        "partitioner leaves a client smaller, samples move to it from the largest clients.",
    )


class TeachersConfig(_Section):
    """Server-side teachers, trained on the teacher split (cached by config hash)."""

    count: int = Field(3, ge=0, le=64, description="Number of teachers (0 = teacher-free).")
    models: list[str] = Field(
        default_factory=lambda: ["cnn:width=32"],
        min_length=1,
        description="Model specs, cycled over the teachers (e.g. ['cnn:width=32', "
        "'mlp:width=256']).",
    )
    epochs: int = Field(20, ge=1, le=10_000, description="Training epochs per teacher.")
    lr: float = Field(1e-2, gt=0, le=10, description="Adam learning rate.")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Mini-batch size.")
    bootstrap: bool = Field(
        True, description="Train each teacher on a different bootstrap of the split."
    )
    disjoint: bool = Field(
        False,
        description="Train each teacher on its own disjoint shard of the split (PATE "
        "needs it; overrides bootstrap).",
    )
    checkpoint: str | None = Field(
        None,
        description="Path to a .pt file saved by fedkd (list of state dicts); loads "
        "teachers instead of training.",
    )
    cache: bool = Field(True, description="Reuse teachers trained by an earlier run.")

    @field_validator("models")
    @classmethod
    def _valid_specs(cls, v: list[str]) -> list[str]:
        for spec in v:
            _check_model_spec(spec)
        return v


class StudentConfig(_Section):
    """The clients' student model."""

    model: str = Field("cnn:width=16,depth=2", description="Model spec of every client's student.")

    @field_validator("model")
    @classmethod
    def _valid_spec(cls, v: str) -> str:
        return _check_model_spec(v)


class StrategyConfig(_Section):
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

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        from fedkd.strategies.catalogue import STRATEGY_REGISTRY

        return _registered(STRATEGY_REGISTRY, v)

    @field_validator("fusion", "teacher_fusion")
    @classmethod
    def _known_fusion(cls, v: str) -> str:
        from fedkd.strategies.fusion import FUSION_REGISTRY

        return _registered(FUSION_REGISTRY, v)


class DistillConfig(_Section):
    """Client-side training: ``alpha * distill(proxy) + (1 - alpha) * CE(private)``."""

    loss: str = Field(
        "response",
        description="Distillation loss: 'response' (Hinton), 'hint' (FitNets), 'rkd' "
        "(relational), 'attention' (attention transfer), 'born_again' (self-distillation), "
        "'mutual' (deep mutual learning), 'takd' (teacher assistants) or a name registered "
        "with @fedkd.register_loss. Catalogue methods minimise alpha * [soft_target + beta "
        "* term] + (1 - alpha) * CE; see docs/losses.md.",
    )
    temperature: float = Field(4.0, gt=0, le=1000, description="Softening temperature T > 0.")
    alpha: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Weight of the distillation term in [0, 1]; 1 - alpha weighs the "
        "cross-entropy on private data.",
    )
    local_epochs: int = Field(
        5, ge=1, le=10_000, description="Epochs per round (passes over the proxy)."
    )
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Proxy and private batch size.")
    lr: float = Field(1e-2, gt=0, le=10, description="Client learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="Client optimizer; its state persists across rounds."
    )
    beta: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="Weight of the catalogue method's own term (unset: the method's "
        "default: hint 1, rkd 25 (the paper's distance weight), attention 100, "
        "born_again 1, mutual 1).",
    )
    feature_teacher: int = Field(
        0, ge=0, le=63, description="hint / rkd: index of the teacher whose features travel."
    )
    relation_batch: int = Field(
        64,
        ge=3,
        le=1024,
        description="rkd: relations (distances, triplet angles) are computed among the "
        "first this-many rows of each (shuffled) proxy batch; the angle term costs O(n^3).",
    )
    rkd_projection: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="rkd: send the teacher's flattened features through a seeded Gaussian "
        "random projection to this many dimensions (pairwise distances and angles are "
        "kept approximately, Johnson-Lindenstrauss); 0 sends the features unprojected.",
    )
    generations: int = Field(
        2,
        ge=1,
        le=1000,
        description="born_again: generations; rounds are cut into this many equal parts "
        "and each new generation starts a fresh student taught by the previous one.",
    )
    peers: int = Field(
        2, ge=2, le=8, description="mutual: co-located students per device (peer 0 reports)."
    )
    assistants: list[str] = Field(
        default_factory=lambda: ["cnn:width=24,depth=2"],
        min_length=1,
        description="takd: the teacher-assistant chain, largest first; the server distils "
        "the teachers into the first, each into the next, the last teaches the clients.",
    )
    assistant_epochs: int = Field(
        20,
        ge=1,
        le=10_000,
        description="takd: server-side epochs per assistant (teacher split + proxy).",
    )

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        from fedkd.losses import LOSS_REGISTRY

        return _registered(LOSS_REGISTRY, v)

    @field_validator("assistants")
    @classmethod
    def _assistant_specs(cls, v: list[str]) -> list[str]:
        return [_check_model_spec(s) for s in v]

    @property
    def resolved_beta(self) -> float:
        """``beta``, or the catalogue method's default weight."""
        from fedkd.knowledge import method_of

        if self.beta is not None:
            return self.beta
        method = method_of(self.loss)
        return method.default_beta if method is not None else 0.0


class AttackConfig(_Section):
    """Poisoned clients (robustness studies); the malicious set is drawn with the seed."""

    fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of clients that are malicious, in [0, 1)."
    )
    kind: Literal["random_logits", "label_flip", "scaled_logits"] = Field(
        "random_logits",
        description="'random_logits' (noise instead of logits), 'label_flip' (train on "
        "flipped labels), 'scaled_logits' (logits times attack.scale).",
    )
    scale: float = Field(
        10.0,
        ge=-1e6,
        le=1e6,
        description="'scaled_logits': factor on the logits; 'random_logits': noise std in "
        "units of the honest logits' std.",
    )


class EvaluateConfig(_Section):
    """Federated evaluation of the students on the test split."""

    every: int = Field(
        1, ge=1, le=100_000, description="Evaluate every N rounds (the last always)."
    )
    fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of clients evaluated (the last round: all)."
    )


class BaselinesConfig(_Section):
    """Baselines computed in the same run."""

    local_only: bool = Field(
        True,
        description="Each client trains the same student on its private data only, for "
        "rounds x local_epochs epochs; reported as baselines.local_only_accuracy_mean.",
    )


class TierConfig(_Section):
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
        from fedkd.devices import PRESETS

        preset = data["preset"]
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(sorted(PRESETS))}")
        return {**PRESETS[preset], **data}

    @field_validator("student")
    @classmethod
    def _valid_student(cls, v: str | None) -> str | None:
        return None if v is None else _check_model_spec(v)


class DevicesConfig(_Section):
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


class RayConfig(_Section):
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


class CompressionConfig(_Section):
    """Soft labels on the wire (docs: fedkd/compression.py); bytes are counted as sent."""

    soft_labels: Literal["fp32", "fp16", "int8", "topk"] = Field(
        "fp32",
        description="Encoding of soft-target logits: 'fp32', 'fp16', 'int8' (per-row scale, "
        "centred rows) or 'topk' (the k largest logits plus one remainder per row).",
    )
    topk: int = Field(3, ge=1, le=MAX_CLASSES, description="'topk': logits kept per row.")
    features: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="Encoding of teacher features / attention maps (hint, rkd, attention).",
    )
    uplink: bool = Field(
        True, description="Clients encode their uploaded proxy logits the same way."
    )


class PrivacyConfig(_Section):
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


class FedkdConfig(_Section):
    """A fedkd run."""

    name: str = Field(
        "fedkd",
        description="Run name, used in output folder names (runs/<name>-<time>): 1-64 "
        "letters, digits, '.', '_' or '-', not starting with '.'.",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed of everything (data, models, sampling)."
    )
    engine: str = Field(
        "inprocess",
        description="Transport for Flower Messages: 'inprocess' (default; one client after "
        "another on `workers` threads), 'vectorized' (in-process; each round's sampled "
        "clients of one student architecture train together as one batch, see "
        "`cohort_size`) or 'ray' (ClientApp calls in Ray actors, one pool per device "
        "tier, see [ray]).",
    )
    num_clients: int = Field(20, ge=1, le=1_000_000, description="Number of clients.")
    rounds: int = Field(10, ge=1, le=100_000, description="Federated rounds.")
    threads: int = Field(
        1,
        ge=1,
        le=1024,
        description="torch intra-op threads per client (1 is fastest for small models).",
    )
    workers: int = Field(
        0,
        ge=0,
        le=1024,
        description="Clients trained concurrently by the in-process engine (threads); "
        "0 = one per CPU core. Results do not depend on it.",
    )
    cohort_size: int = Field(
        16,
        ge=1,
        le=100_000,
        description="engine='vectorized': most clients trained together in one batch; "
        "`workers` batches train at once (memory grows with both). 16 measured fastest on "
        "2 CPU cores: smaller cohorts pad private batches less.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    teachers: TeachersConfig = Field(default_factory=TeachersConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    devices: DevicesConfig = Field(default_factory=DevicesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # the name becomes a folder name under runs/: no separators, no '..', no hidden dir
        if not _RUN_NAME.fullmatch(v):
            raise ValueError(
                "must be 1-64 letters, digits, '.', '_' or '-', not starting with '.' "
                "(it names the run's folder under runs/)"
            )
        return v

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from fedkd.engines import ENGINE_REGISTRY

        return _registered(ENGINE_REGISTRY, v)

    @model_validator(mode="after")
    def _one_architecture_where_needed(self) -> FedkdConfig:
        specs = self.student_specs
        if len(specs) > 1:
            from fedkd.strategies.catalogue import strategy_class

            if getattr(strategy_class(self.strategy.name), "collects_weights", False):
                raise ValueError(
                    f"strategy.name={self.strategy.name!r} averages student weights, so every "
                    f"client needs the same student; devices.tiers use {sorted(specs)}"
                )
            if self.strategy.warm_start_epochs:
                raise ValueError(
                    "strategy.warm_start_epochs ships one student to every client; "
                    f"devices.tiers use {sorted(specs)}: set it to 0 or give tiers one student"
                )
        return self

    @model_validator(mode="after")
    def _privacy_supported(self) -> FedkdConfig:
        p = self.privacy
        if p.mode is None:
            return self
        if p.epsilon is None and p.noise_multiplier is None:
            raise ValueError(
                f"privacy.mode={p.mode!r} needs privacy.epsilon (a target) or "
                "privacy.noise_multiplier"
            )
        from fedkd.strategies.catalogue import strategy_class

        cls = strategy_class(self.strategy.name)
        modes = getattr(cls, "privacy_modes", ("client_dp", "pate", "dp_sgd"))
        if p.mode == "pate" and not getattr(cls, "uses_teachers", True):
            modes = tuple(m for m in modes if m != "pate")
        if p.mode not in modes:
            allowed = ", ".join(modes) or "none"
            note = getattr(cls, "privacy_note", "")
            raise ValueError(
                f"privacy.mode={p.mode!r} is not supported by strategy "
                f"{self.strategy.name!r} (it supports: {allowed}){note}"
            )
        if p.mode == "pate" and self.teachers.count < 2:
            raise ValueError("privacy.mode='pate' needs teachers.count >= 2 (teachers vote)")
        if p.mode == "pate" and self.strategy.warm_start_epochs:
            raise ValueError(
                f"privacy.mode='pate' with strategy.warm_start_epochs="
                f"{self.strategy.warm_start_epochs}: the warm-start student is trained on "
                "the teacher split's labels and the non-private teachers, then shipped to "
                "every client; set strategy.warm_start_epochs=0"
            )
        if p.mode == "client_dp" and self.devices.tiers and not p.local and p.amplification:
            raise ValueError(
                f"privacy.mode='client_dp' with devices.tiers (policy "
                f"{self.devices.policy!r}): availability, failures and the round policy "
                "include some clients far more often than the sampling rate the accountant "
                "assumes; set privacy.amplification=false (account q = 1) or privacy.local=true"
            )
        if p.mode == "client_dp" and p.delta >= 1 / self.num_clients:
            raise ValueError(
                f"privacy.delta={p.delta:g} must be below 1/num_clients = 1/{self.num_clients}"
            )
        return self

    @model_validator(mode="after")
    def _loss_supported(self) -> FedkdConfig:
        from fedkd.knowledge import method_of
        from fedkd.strategies.catalogue import strategy_class

        method = method_of(self.distill.loss)
        if method is None or method.name == "response":
            return self
        name = method.name
        cls = strategy_class(self.strategy.name)
        if method.needs_teachers or name == "takd":
            if not getattr(cls, "uses_teachers", True) or self.teachers.count < 1:
                raise ValueError(
                    f"distill.loss={name!r} needs the server's teachers: use a strategy "
                    "with teachers (multi_teacher, hybrid, ...) and teachers.count >= 1"
                )
        if name in ("born_again", "mutual") and getattr(cls, "collects_weights", False):
            raise ValueError(
                f"distill.loss={name!r} keeps students on the device; strategy "
                f"{self.strategy.name!r} replaces them with a global model every round"
            )
        if self.privacy.mode == "dp_sgd" and name != "takd":
            raise ValueError(
                f"privacy.mode='dp_sgd' supports logit losses only (response, takd or "
                f"registered ones), not distill.loss={name!r}"
            )
        if self.privacy.mode == "pate" and method.knowledge != "logits":
            raise ValueError(
                f"distill.loss={name!r} sends the teachers' {method.knowledge}, which "
                "privacy.mode='pate' does not protect; use a logit loss with pate"
            )
        if name == "takd" and self.privacy.mode == "pate":
            raise ValueError(
                "distill.loss='takd' cannot be combined with privacy.mode='pate' (the "
                "assistants would see the teachers' non-private logits)"
            )
        if method.knowledge == "features" and self.distill.feature_teacher >= self.teachers.count:
            raise ValueError(
                f"distill.feature_teacher={self.distill.feature_teacher} outside "
                f"0..{self.teachers.count - 1} (teachers.count)"
            )
        return self

    @property
    def student_specs(self) -> set[str]:
        """Every student model spec in use (one per tier, or ``student.model``)."""
        if not self.devices.tiers:
            return {self.student.model}
        return {t.student or self.student.model for t in self.devices.tiers}

    def tier_index(self, partition: int) -> int | None:
        """Index into ``devices.tiers`` of client ``partition`` (None without tiers)."""
        if not self.devices.tiers:
            return None
        shares = tuple(t.share for t in self.devices.tiers)
        return int(_tier_table(shares, self.num_clients, self.seed)[partition])

    def tier(self, partition: int) -> TierConfig | None:
        """The device tier of client ``partition`` (None without tiers)."""
        i = self.tier_index(partition)
        return None if i is None else self.devices.tiers[i]

    def student_model(self, partition: int) -> str:
        """Student model spec of client ``partition`` (its tier's, or ``student.model``)."""
        tier = self.tier(partition)
        return (tier.student if tier is not None else None) or self.student.model

    @property
    def resolved_workers(self) -> int:
        """``workers``, with 0 resolved to the number of CPU cores."""
        return self.workers or max(1, len(os.sched_getaffinity(0)))

    @property
    def fusion_params(self) -> dict[str, float]:
        """Extra parameters of the fusion rules, from ``[strategy]``."""
        return {
            "trim_fraction": self.strategy.trim_fraction,
            "era_temperature": self.strategy.era_temperature,
        }

    def to_json(self) -> str:
        """Resolved configuration as JSON (what ``config.json`` holds)."""
        return self.model_dump_json(indent=2)


@functools.lru_cache(maxsize=8)
def _tier_table(shares: tuple[float, ...], num_clients: int, seed: int) -> Any:
    from fedkd.devices import assign_tiers

    table = assign_tiers(list(shares), num_clients, seed)
    table.setflags(write=False)
    return table


# --------------------------------------------------------------------------- loading


def _format_error(err: ValidationError, data: Any) -> str:
    """One line for the first error: the key, its value and what is allowed.

    Errors of one field name it (``devices.tiers[0].share``) and show its value; errors of
    a whole table or of several fields (model validators) show no table, but the value of
    every ``section.key`` their message mentions.
    """
    first = err.errors()[0]
    loc, field, model = _walk_loc(first["loc"])
    key = _key(loc)
    msg = " ".join(first["msg"].removeprefix("Value error, ").split())
    if first["type"] == "extra_forbidden":
        parent = _walk_loc(loc[:-1])[2]
        allowed = ", ".join(parent.model_fields) if parent else "?"
        where = f"in [{_key(loc[:-1])}]" if len(loc) > 1 else "at top level"
        return f"unknown config key '{key}'; allowed {where}: {allowed}"
    if first["type"] == "missing":
        what = f" ({field.description})" if field is not None and field.description else ""
        return f"missing config key {key}: it is required{what}"
    value = first.get("input")
    if field is None or isinstance(value, dict):
        # a table or a cross-field rule: name the fields, never dump the table
        where = f" [{key}]" if key else ""
        return f"invalid config{where}: {msg}{_mentioned_values(msg, data)}"
    allowed = _allowed(field)
    if allowed and "allowed" not in msg:
        msg = f"{msg} (allowed: {allowed})"
    return f"invalid config value {key}={_show(value)}: {msg}"


def _walk_loc(
    loc: tuple[Any, ...],
) -> tuple[tuple[Any, ...], Any, type[BaseModel] | None]:
    """Drop pydantic's union tags from ``loc``; the field it ends on and the table it is in.

    Returns ``(clean loc, FieldInfo or None, model of the last table or None)``.
    """
    model: type[BaseModel] | None = FedkdConfig
    ann: Any = None
    field = None
    out: list[Any] = []
    for part in loc:
        if isinstance(part, int) and typing.get_origin(ann) is list:
            out.append(part)
            item = typing.get_args(ann)[0]
            model = item if isinstance(item, type) and issubclass(item, BaseModel) else None
            ann, field = item, None
            continue
        if model is None or str(part) not in model.model_fields:
            if model is not None:
                out.append(part)  # an unknown key of a table: the error names it
            # else a union member tag under a field, such as 'float': dropped
            continue
        out.append(part)
        field = model.model_fields[str(part)]
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is not None:
            field = None
    return tuple(out), field, model


def _section_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    return _walk_loc(loc)[2]


def _key(loc: tuple[Any, ...]) -> str:
    """``('devices', 'tiers', 0, 'share')`` -> ``devices.tiers[0].share``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any, limit: int = 80) -> str:
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}" if float(f"{v:g}") == v else repr(v)


def _allowed(field: Any) -> str:
    """What a numeric field allows, from its bounds: e.g. ``an integer in [1, 100000]``."""
    kinds = _kinds(field.annotation)
    if not kinds & {int, float}:
        return ""
    lo = hi = ""
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            lo = f"[{_number(m.ge)}"
        elif getattr(m, "gt", None) is not None:
            lo = f"({_number(m.gt)}"
        elif getattr(m, "le", None) is not None:
            hi = f"{_number(m.le)}]"
        elif getattr(m, "lt", None) is not None:
            hi = f"{_number(m.lt)})"
    what = "an integer" if float not in kinds else "a finite number"
    if lo and hi:
        what += f" in {lo}, {hi}"
    elif lo:
        what += f" {'>=' if lo[0] == '[' else '>'} {lo[1:]}"
    elif hi:
        what += f" {'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"
    return what + (" or unset" if type(None) in kinds else "")


def _mentioned_values(msg: str, data: Any) -> str:
    """`` [a.b=1, c.d='x']``: the values of the dotted keys ``msg`` names without a value."""
    shown = []
    for key in dict.fromkeys(re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+\b", msg)):
        if re.search(re.escape(key) + r"\s*=", msg):
            continue
        found, value = _lookup(data, key.split("."))
        if found and not isinstance(value, dict | list):
            shown.append(f"{key}={_show(value, 60)}")
    return f" [{', '.join(shown)}]" if shown else ""


def _lookup(data: Any, path: list[str]) -> tuple[bool, Any]:
    """The value of ``path`` in the raw config ``data``, else its default."""
    model: Any = FedkdConfig
    node = data
    for part in path:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return False, None
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if node is _MISSING and model is None:
            if field.is_required():
                return False, None
            return True, field.get_default(call_default_factory=True)
    return (node is not _MISSING and model is None), node


_MISSING = object()


def validate_config(data: dict[str, Any]) -> FedkdConfig:
    """Validate a nested dict into a :class:`FedkdConfig` or raise :class:`ConfigError`."""
    try:
        return FedkdConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, data)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with one-line errors for missing or broken files."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory; give a scenario TOML file")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {p}: cannot read it ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {p} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start}); TOML files must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"config file {p} is not valid TOML: {reason}") from None


def _parse_value(raw: str) -> Any:
    """Parse an override value as a TOML value; bare words stay strings."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return raw if isinstance(value, _dt.date | _dt.time) else value


def _plain_copy(value: Any) -> Any:
    """A deep copy of nested dicts and lists (tuples become lists); leaves are shared."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a nested config dict (returns a copy).

    Values are parsed as TOML (``3``, ``0.5``, ``true``, ``["a", "b"]``); anything that is
    not valid TOML is taken as a string, so ``--set data.name=npz:/tmp/x.npz`` works.
    List items are addressed as ``key[N]``: ``--set devices.tiers[0].student=mlp``.
    Pydantic then coerces and validates the types.
    """
    out: dict[str, Any] = _plain_copy(data)
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"malformed override '{item}'; use dotted.key=value")
        path: list[str | int] = []
        for part in key.split("."):
            name, bracket, index = part.partition("[")
            if name:
                path.append(name)
            if bracket:
                if not (index.endswith("]") and index[:-1].isdigit()):
                    raise ConfigError(f"malformed override '{item}'; list items are key[N]")
                path.append(int(index[:-1]))
        node: Any = out
        for step, nxt in zip(path[:-1], path[1:], strict=True):
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    size = len(node) if isinstance(node, list) else 0
                    raise ConfigError(f"override '{item}': no item [{step}] (the list has {size})")
                node = node[step]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"override '{item}': '{step}' is not in a table")
                node = node.setdefault(step, [] if isinstance(nxt, int) else {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"override '{item}': '{step}' is not a table")
        last = path[-1]
        value = _parse_value(raw.strip())
        if isinstance(last, int):
            if not isinstance(node, list) or last > len(node):
                raise ConfigError(f"override '{item}': no item [{last}] to set")
            node[last : last + 1] = [value]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{last}' is not in a table")
            node[last] = value
    return out


def load_config(
    source: str | Path | dict[str, Any] | FedkdConfig | None = None,
    overrides: list[str] | None = None,
) -> FedkdConfig:
    """Load a config from a TOML path, a dict or a config object, then apply overrides.

    Parameters
    ----------
    source : path, dict, FedkdConfig or None
        ``None`` gives all defaults.
    overrides : list of str
        ``dotted.key=value`` strings, as ``fedkd run --set``.

    """
    if isinstance(source, FedkdConfig):
        data: dict[str, Any] = source.model_dump()
    elif isinstance(source, dict):
        data = source
    elif source is None:
        data = {}
    else:
        data = read_toml(source)
    return validate_config(apply_overrides(data, overrides or []))


def schema_markdown() -> str:
    """Markdown reference of every config key, its type, default and description."""
    lines = [
        "# fedkd configuration reference",
        "",
        "Generated from `fedkd/config.py` by `fedkd config --markdown`.",
        "",
    ]

    def section(model: type[BaseModel], prefix: str) -> None:
        title = f"`[{prefix}]`" if prefix else "top level"
        lines.extend(
            [
                f"## {title}",
                "",
                (model.__doc__ or "").strip(),
                "",
                "| key | type | default | description |",
                "|---|---|---|---|",
            ]
        )
        subs = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subs.append((ann, f"{prefix}.{name}" if prefix else name))
                continue
            default = field.get_default(call_default_factory=True)
            type_name = getattr(ann, "__name__", str(ann)).replace("typing.", "")
            bounds = _allowed(field).partition(" in ")[2]
            if bounds:
                type_name += f" in {bounds}"
            key = f"{prefix}.{name}" if prefix else name
            lines.append(
                f"| `{key}` | {type_name} | `{json.dumps(default)}` | {field.description or ''} |"
            )
        lines.append("")
        for sub, p in subs:
            section(sub, p)

    section(FedkdConfig, "")
    return "\n".join(lines)
