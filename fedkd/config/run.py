"""The whole run's configuration: :class:`FedkdConfig`, the top-level keys and every table.

A pure schema: field types, bounds and formats only. Names that must be registered
(strategy, fusion, loss, engine, dataset, view, model specs) and rules across tables are
checked by :func:`fedkd.validation.check_config`, which :func:`fedkd.validation.load_config`
runs after this schema.
"""

from __future__ import annotations

import os
import re

from pydantic import Field, field_validator

from fedkd.config.data import DataConfig, PartitionConfig
from fedkd.config.devices import DevicesConfig, RayConfig, TierConfig, tier_table
from fedkd.config.distill import DistillConfig
from fedkd.config.models import StudentConfig, TeachersConfig
from fedkd.config.privacy import PrivacyConfig
from fedkd.config.section import Section
from fedkd.config.strategy import BaselinesConfig, EvaluateConfig, StrategyConfig
from fedkd.config.uploads import AttackConfig, CompressionConfig

_RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


class FedkdConfig(Section):
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
        return int(tier_table(shares, self.num_clients, self.seed)[partition])

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
