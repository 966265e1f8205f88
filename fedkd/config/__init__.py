"""Run configuration: a pure pydantic v2 schema (frozen, ``extra="forbid"``).

Every field carries a description; ``fedkd config --schema`` prints them all and
``docs/config.md`` is generated from the same models (:mod:`fedkd.config.reference`).
This package imports nothing of fedkd above :mod:`fedkd.errors`: registry and
cross-table checks, and :func:`~fedkd.validation.load_config` (TOML + overrides + schema
+ checks), live in :mod:`fedkd.validation`.

Modules: ``section`` (base table, limits), one per group of tables (``data``, ``models``,
``strategy``, ``distill``, ``devices``, ``privacy``, ``uploads``), ``run``
(:class:`FedkdConfig`), ``errors`` (one-line messages), ``toml_io`` (TOML files,
overrides) and ``reference`` (the Markdown reference).
"""

from fedkd.config.data import DataConfig, PartitionConfig
from fedkd.config.devices import PRESETS, DevicesConfig, RayConfig, TierConfig
from fedkd.config.distill import DistillConfig
from fedkd.config.errors import validate_schema
from fedkd.config.models import GivenTeacher, StudentConfig, TeachersConfig
from fedkd.config.privacy import PrivacyConfig
from fedkd.config.run import FedkdConfig
from fedkd.config.strategy import BaselinesConfig, EvaluateConfig, StrategyConfig
from fedkd.config.toml_io import apply_overrides, read_toml
from fedkd.config.uploads import AttackConfig, CompressionConfig

__all__ = [
    "PRESETS",
    "AttackConfig",
    "BaselinesConfig",
    "CompressionConfig",
    "DataConfig",
    "DevicesConfig",
    "DistillConfig",
    "EvaluateConfig",
    "FedkdConfig",
    "GivenTeacher",
    "PartitionConfig",
    "PrivacyConfig",
    "RayConfig",
    "StrategyConfig",
    "StudentConfig",
    "TeachersConfig",
    "TierConfig",
    "apply_overrides",
    "read_toml",
    "validate_schema",
]
