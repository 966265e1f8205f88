"""The validation step after the schema: registered names and rules across tables.

:mod:`fedkd.config` only says what a well-formed config is. This module sees every
registry (datasets, views, model families, strategies, fusion rules, losses, engines) and
the strategy classes, and checks what depends on them, with the same one-line
:class:`~fedkd.errors.ConfigError` messages the schema gives (the CLI prints them and
exits 2). :func:`load_config` is the whole path: TOML file or dict, ``--set`` overrides,
schema, then :func:`check_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedkd.config import FedkdConfig, read_toml
from fedkd.config.errors import rule_error, validate_schema, value_error
from fedkd.config.toml_io import apply_overrides
from fedkd.data import DATASET_REGISTRY
from fedkd.losses import LOSS_REGISTRY, method_of
from fedkd.models import parse_spec
from fedkd.registry import ENGINE_REGISTRY, Registry
from fedkd.strategies.catalogue import STRATEGY_REGISTRY, strategy_class
from fedkd.strategies.fusion import FUSION_REGISTRY
from fedkd.views import parse_view

ALL_PRIVACY_MODES = ("client_dp", "pate", "dp_sgd")


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

    Returns
    -------
    FedkdConfig
        The schema-valid config that passed :func:`check_config`.

    Raises
    ------
    ConfigError
        One line naming the key, its value and what is allowed.

    """
    if isinstance(source, FedkdConfig):
        data: dict[str, Any] = source.model_dump()
    elif isinstance(source, dict):
        data = source
    elif source is None:
        data = {}
    else:
        data = read_toml(source)
    data = apply_overrides(data, overrides or [])
    return check_config(validate_schema(data), data)


def check_config(cfg: FedkdConfig, data: dict[str, Any] | None = None) -> FedkdConfig:
    """Check a schema-valid config against the registries and across tables.

    Parameters
    ----------
    cfg : FedkdConfig
        A config that passed the schema.
    data : dict, optional
        The raw config it came from; cross-table messages show the values it holds for
        the keys they name (default: ``cfg`` itself).

    Returns
    -------
    FedkdConfig
        ``cfg``, unchanged.

    Raises
    ------
    ConfigError
        The first problem, in field order: an unregistered name, then the cross-table
        rules (one architecture where needed, privacy, then the distillation loss).

    """
    raw = cfg.model_dump() if data is None else data
    check_names(cfg)
    for rule in (one_architecture_where_needed, privacy_supported, loss_supported):
        try:
            rule(cfg)
        except ValueError as err:
            raise rule_error(str(err), raw) from None
    return cfg


# --------------------------------------------------------------------------- registered names


def _registered(registry: Registry[Any]) -> Callable[[str], None]:
    def check(name: str) -> None:
        if name not in registry:
            raise ValueError(f"unknown {registry.kind}; allowed: {registry.allowed()}")

    return check


def _dataset(name: str) -> None:
    if name.split(":", 1)[0] not in DATASET_REGISTRY:
        raise ValueError(
            f"unknown dataset; allowed: {DATASET_REGISTRY.allowed()} "
            "(npz:PATH, hf:NAME or hf:/PATH)"
        )


def _view(spec: str) -> None:
    parse_view(spec)  # raises ValueError with what is allowed


def _model_spec(spec: str) -> None:
    parse_spec(spec)  # raises ValueError with what is allowed


def _model_specs(specs: list[str]) -> None:
    for spec in specs:
        _model_spec(spec)


def _named_values(cfg: FedkdConfig) -> list[tuple[str, Any, Callable[[Any], None]]]:
    """(key, value, check) of every registered name, in the schema's field order."""
    out: list[tuple[str, Any, Callable[[Any], None]]] = [
        ("engine", cfg.engine, _registered(ENGINE_REGISTRY)),
        ("data.name", cfg.data.name, _dataset),
        ("data.teacher_view", cfg.data.teacher_view, _view),
        ("data.student_view", cfg.data.student_view, _view),
        ("data.proxy", cfg.data.proxy, lambda v: _dataset(v) if v else None),
        ("teachers.models", cfg.teachers.models, _model_specs),
        ("student.model", cfg.student.model, _model_spec),
        ("strategy.name", cfg.strategy.name, _registered(STRATEGY_REGISTRY)),
        ("strategy.fusion", cfg.strategy.fusion, _registered(FUSION_REGISTRY)),
        ("strategy.teacher_fusion", cfg.strategy.teacher_fusion, _registered(FUSION_REGISTRY)),
        ("distill.loss", cfg.distill.loss, _registered(LOSS_REGISTRY)),
        ("distill.assistants", cfg.distill.assistants, _model_specs),
    ]
    for i, given in enumerate(cfg.teachers.given):
        if given.model is not None:
            out.append((f"teachers.given[{i}].model", given.model, _model_spec))
    for i, tier in enumerate(cfg.devices.tiers):
        if tier.student is not None:
            out.append((f"devices.tiers[{i}].student", tier.student, _model_spec))
    return out


def check_names(cfg: FedkdConfig) -> None:
    """Every name that must be registered is (engine, dataset, views, model specs, ...).

    Raises
    ------
    ConfigError
        ``invalid config value KEY=VALUE: unknown ...; allowed: ...`` for the first one.

    """
    for key, value, check in _named_values(cfg):
        try:
            check(value)
        except ValueError as err:
            raise value_error(key, value, str(err)) from None


# --------------------------------------------------------------------------- cross-table rules


def one_architecture_where_needed(cfg: FedkdConfig) -> None:
    """Tiers with different students need a strategy that never ships one student to all.

    Raises
    ------
    ValueError
        A weight-averaging strategy or a warm start with mixed students.

    """
    specs = cfg.student_specs
    if len(specs) <= 1:
        return
    if getattr(strategy_class(cfg.strategy.name), "collects_weights", False):
        raise ValueError(
            f"strategy.name={cfg.strategy.name!r} averages student weights, so every "
            f"client needs the same student; devices.tiers use {sorted(specs)}"
        )
    if cfg.strategy.warm_start_epochs:
        raise ValueError(
            "strategy.warm_start_epochs ships one student to every client; "
            f"devices.tiers use {sorted(specs)}: set it to 0 or give tiers one student"
        )


def privacy_supported(cfg: FedkdConfig) -> None:
    """``privacy.mode`` has its parameters and is supported by the strategy and the setup.

    Raises
    ------
    ValueError
        The first rule the privacy settings break.

    """
    p = cfg.privacy
    if p.mode is None:
        return
    if p.epsilon is None and p.noise_multiplier is None:
        raise ValueError(
            f"privacy.mode={p.mode!r} needs privacy.epsilon (a target) or privacy.noise_multiplier"
        )
    cls = strategy_class(cfg.strategy.name)
    modes = getattr(cls, "privacy_modes", ALL_PRIVACY_MODES)
    if p.mode == "pate" and not getattr(cls, "uses_teachers", True):
        modes = tuple(m for m in modes if m != "pate")
    if p.mode not in modes:
        allowed = ", ".join(modes) or "none"
        note = getattr(cls, "privacy_note", "")
        raise ValueError(
            f"privacy.mode={p.mode!r} is not supported by strategy "
            f"{cfg.strategy.name!r} (it supports: {allowed}){note}"
        )
    if p.mode == "pate":
        _pate_setup(cfg)
    if p.mode == "client_dp":
        _client_dp_setup(cfg)


def _pate_setup(cfg: FedkdConfig) -> None:
    if cfg.teachers.count < 2:
        raise ValueError("privacy.mode='pate' needs teachers.count >= 2 (teachers vote)")
    if cfg.teachers.given:
        raise ValueError(
            "privacy.mode='pate' needs teachers fedkd trains on disjoint shards of the "
            "teacher split; teachers.given were trained elsewhere, on data its epsilon "
            "does not cover"
        )
    if cfg.strategy.warm_start_epochs:
        raise ValueError(
            f"privacy.mode='pate' with strategy.warm_start_epochs="
            f"{cfg.strategy.warm_start_epochs}: the warm-start student is trained on "
            "the teacher split's labels and the non-private teachers, then shipped to "
            "every client; set strategy.warm_start_epochs=0"
        )


def _client_dp_setup(cfg: FedkdConfig) -> None:
    p = cfg.privacy
    if cfg.devices.tiers and not p.local and p.amplification:
        raise ValueError(
            f"privacy.mode='client_dp' with devices.tiers (policy "
            f"{cfg.devices.policy!r}): availability, failures and the round policy "
            "include some clients far more often than the sampling rate the accountant "
            "assumes; set privacy.amplification=false (account q = 1) or privacy.local=true"
        )
    if p.delta >= 1 / cfg.num_clients:
        raise ValueError(
            f"privacy.delta={p.delta:g} must be below 1/num_clients = 1/{cfg.num_clients}"
        )


def loss_supported(cfg: FedkdConfig) -> None:
    """The distillation loss (``distill.loss``) fits the strategy, teachers and privacy.

    Every rule about which catalogue method works with what is here, in one place.

    Raises
    ------
    ValueError
        The first rule the loss breaks.

    """
    method = method_of(cfg.distill.loss)
    if method is None:
        if cfg.distill.params:
            raise ValueError(
                f"distill.params: distill.loss={cfg.distill.loss!r} declares no "
                "parameters; allowed: none"
            )
        return
    method.resolve(cfg.distill.params)  # only names the method declares
    name = method.name
    cls = strategy_class(cfg.strategy.name)
    if method.needs_teachers:
        if not getattr(cls, "uses_teachers", True) or cfg.teachers.count < 1:
            raise ValueError(
                f"distill.loss={name!r} needs the server's teachers: use a strategy "
                "with teachers (multi_teacher, hybrid, ...) and teachers.count >= 1"
            )
    if method.keeps_students and getattr(cls, "collects_weights", False):
        raise ValueError(
            f"distill.loss={name!r} keeps students on the device; strategy "
            f"{cfg.strategy.name!r} replaces them with a global model every round"
        )
    if cfg.privacy.mode == "dp_sgd" and method.has_client_term:
        raise ValueError(
            f"privacy.mode='dp_sgd' supports logit losses only (response, takd or "
            f"registered ones), not distill.loss={name!r}"
        )
    if cfg.privacy.mode == "pate" and method.knowledge != "logits":
        raise ValueError(
            f"distill.loss={name!r} sends the teachers' {method.knowledge}, which "
            "privacy.mode='pate' does not protect; use a logit loss with pate"
        )
    if method.uses_assistants and cfg.privacy.mode == "pate":
        raise ValueError(
            f"distill.loss={name!r} cannot be combined with privacy.mode='pate' (the "
            "assistants would see the teachers' non-private logits)"
        )
    if method.knowledge == "features" and cfg.distill.feature_teacher >= cfg.teachers.count:
        raise ValueError(
            f"distill.feature_teacher={cfg.distill.feature_teacher} outside "
            f"0..{cfg.teachers.count - 1} (teachers.count)"
        )
