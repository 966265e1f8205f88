"""The build steps of an experiment; each takes what it uses.

Seeding, the resume checkpoint, view shapes, the student's size, the device fleet, the
privacy plan, the teachers (with PATE's release), a catalogue method's teacher knowledge
(:func:`method_knowledge`), and what the strategy is given of them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid

from fedkd.checkpoint import check_config, latest_checkpoint
from fedkd.config import DataConfig, DistillConfig, FedkdConfig
from fedkd.data import Splits, client_partitions
from fedkd.devices import DeviceFleet
from fedkd.errors import ConfigError
from fedkd.losses import KDMethod
from fedkd.privacy.accounting import PrivacyPlan, plan_privacy
from fedkd.privacy.pate import query_rows
from fedkd.results import write_json
from fedkd.teachers import TeacherBundle, build_teachers
from fedkd.views import student_shape, teacher_x, view_shape

log = logging.getLogger("fedkd")


def resume_checkpoint(out: Path, cfg: FedkdConfig, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a new run); a mismatched config is refused."""
    ckpt = latest_checkpoint(out) if resume else None
    if resume and ckpt is None:
        raise ConfigError(
            f"--resume {out}: no checkpoint there (no round completed, or not a run directory)"
        )
    if ckpt is not None:
        check_config(out, ckpt, cfg)
    return ckpt


def keeps_node_states(grid: Grid, engine: str, resume: bool) -> bool:
    """Whether ``grid`` keeps node states on disk (round checkpoints); needed to resume."""
    checkpointing = getattr(grid, "state_store", None) is not None
    if resume and not checkpointing:
        raise ConfigError(
            f"engine {engine!r} keeps no node states on disk; --resume needs engine "
            "'inprocess' or 'vectorized'"
        )
    return checkpointing


def seed_process(seed: int, threads: int) -> None:
    """Seed Python's, numpy's and torch's global generators; set torch's thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def view_shapes(
    data: DataConfig, splits: Splits, seed: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sample shapes of the teachers' and the students' views (config errors raised)."""
    out = []
    for key in ("teacher_view", "student_view"):
        spec = getattr(data, key)
        try:
            out.append(view_shape(spec, splits, seed))
        except ValueError as err:
            raise ConfigError(f"data.{key}={spec!r}: {err}") from None
    return out[0], out[1]


def student_parameters(model: str, data: DataConfig, splits: Splits, seed: int) -> int:
    """Parameter count of the student; a spec that cannot fit the data is a config error."""
    from fedkd.models import build_model, count_parameters

    try:
        student = build_model(model, student_shape(data, splits, seed), splits.data.num_classes)
    except ValueError as err:
        raise ConfigError(f"student.model={model!r}: {err}") from None
    return count_parameters(student)


def build_fleet(cfg: FedkdConfig, splits: Splits) -> DeviceFleet | None:
    """The simulated device fleet (None without ``devices.tiers``); config errors raised."""
    if not cfg.devices.tiers:
        return None
    try:
        fleet = DeviceFleet(cfg, student_shape(cfg.data, splits, cfg.seed), splits.data.num_classes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for m in fleet.models:
        log.info(
            "tier %s: student %s, %d parameters, %d FLOPs/sample, ~%.2f MB to train",
            m.name,
            m.spec,
            m.parameters,
            m.flops_per_sample,
            m.train_memory_bytes / 2**20,
        )
    return fleet


def plan_from_partitions(cfg: FedkdConfig, teacher_split: int) -> PrivacyPlan | None:
    """The privacy plan from the simulated partitions (None when not private).

    Making the partitions also fails fast on ones that cannot be made (and warms the
    cache for in-process clients).
    """
    parts = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)
    try:
        return plan_privacy(cfg, [len(p) for p in parts], teacher_split)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def prepare_teachers(
    cfg: FedkdConfig,
    privacy: PrivacyPlan | None,
    ckpt: dict[str, Any] | None,
    status: Callable[[str], None],
) -> TeacherBundle:
    """Trained (or cached) teachers, carrying the run's PATE release when private by PATE."""
    teachers = build_teachers(cfg, progress=status, workers=cfg.resolved_workers)
    if privacy is not None and privacy.mechanism == "pate":
        teachers = with_pate_release(cfg, teachers, ckpt)
    return teachers


def with_pate_release(
    cfg: FedkdConfig, teachers: TeacherBundle, ckpt: dict[str, Any] | None
) -> TeacherBundle:
    """``teachers`` carrying the run's one GNMax release (a resumed run keeps its own).

    Every draw of GNMax labels is a release that costs privacy, so the labels are drawn
    once per run, before round 1, and kept in the checkpoints.
    """
    from fedkd.privacy.pate import pate_targets

    saved = ckpt.get("pate_targets") if ckpt is not None else None
    release = np.asarray(saved) if saved is not None else pate_targets(cfg, teachers.proxy_logits)
    return dataclasses.replace(teachers, pate_targets=release)


def log_teachers(teachers: TeacherBundle) -> None:
    """Log each teacher's size and test accuracy."""
    for spec, n, acc, hit in zip(
        teachers.specs, teachers.parameters, teachers.test_accuracy, teachers.cached, strict=True
    ):
        log.info(
            "teacher %s: %d parameters, test accuracy %.4f%s",
            spec,
            n,
            acc,
            " (cached)" if hit else "",
        )


def method_knowledge(
    method: KDMethod | None,
    teachers: TeacherBundle,
    data: DataConfig,
    distill: DistillConfig,
    splits: Splits,
    seed: int,
) -> Any:
    """The teacher knowledge a catalogue method sends with the targets (None: logits only).

    Parameters
    ----------
    method : KDMethod or None
        The catalogue method of ``distill.loss`` (None for a registered logit loss).
    teachers : TeacherBundle
        The run's teachers (their models compute the knowledge).
    data, distill : config sections
        The data views and the distillation settings.
    splits : Splits
        The data splits (the knowledge is computed on the proxy split).
    seed : int
        The run's seed.

    Returns
    -------
    array or None
        One entry per proxy row, or None when the method needs only logits.

    """
    if method is None or method.knowledge == "logits":
        return None
    x_proxy = torch.from_numpy(teacher_x(data, splits, splits.proxy, seed))
    try:
        knowledge = method.teacher_knowledge(teachers.models, x_proxy, distill, seed)
    except ValueError as err:
        raise ConfigError(f"distill.loss={method.name!r}: {err}") from None
    assert knowledge is not None
    log.info(
        "%s: teacher %s of shape %s per proxy row travel with the targets",
        method.name,
        method.knowledge,
        tuple(knowledge.shape[1:]),
    )
    return knowledge


def attach_fleet(
    strategy: Any, fleet: DeviceFleet | None, student_specs: Any, strategy_name: str
) -> None:
    """Give the strategy the device fleet; weight averaging needs one student for all."""
    if fleet is None:
        return
    if len(student_specs) > 1 and strategy.collects_weights:
        raise ConfigError(
            f"strategy.name={strategy_name!r} averages student weights, so every "
            f"client needs the same student; devices.tiers use {sorted(student_specs)}"
        )
    strategy.set_fleet(fleet)


def attach_privacy(
    strategy: Any, privacy: PrivacyPlan | None, proxy_size: int, queries: Any, seed: int
) -> None:
    """Give the strategy the privacy plan (and PATE's queried proxy rows)."""
    if privacy is None:
        return
    rows = None
    if privacy.mechanism == "pate":
        rows = query_rows(proxy_size, queries, seed)
    strategy.set_privacy(privacy, rows)


def replan_from_discovery(cfg: FedkdConfig, strategy: Any, teacher_split: int) -> PrivacyPlan:
    """dp_sgd's plan from the private data sizes the clients reported at discovery.

    A deployed device's own data need not match the simulated partitions: planning from
    those would under-report the epsilon of a device with less data.
    """
    sizes = [int(info["size"]) for info in strategy.client_info.values()]
    try:
        plan = plan_privacy(cfg, sizes, teacher_split, sizes_from="sizes reported at discovery")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    assert plan is not None
    strategy.set_privacy(plan, strategy.target_rows)
    return plan


def write_partition(path: Path, cfg: FedkdConfig, client_info: dict[int, dict[str, Any]]) -> None:
    """``partition.json``: the partition kind and what each client reported at discovery."""
    write_json(
        path,
        {
            "kind": cfg.partition.kind,
            "alpha": cfg.partition.alpha if cfg.partition.kind == "dirichlet" else None,
            "clients": [{"client": p, **client_info[p]} for p in sorted(client_info)],
        },
    )
