"""The run orchestrator: an :class:`Experiment` builds everything once, then runs the rounds.

:meth:`Experiment.build` prepares the data splits, the teachers (and assistants), the
teacher knowledge of a catalogue method, the device fleet, the privacy plan and the
strategy, and restores a checkpoint when resuming. :meth:`Experiment.run` then runs the
strategy's rounds; what happens after each round (``metrics.jsonl``, the checkpoint,
progress) is done by round callbacks registered on the experiment (see
:meth:`Experiment.add_round_callback`). The end-of-run outputs are written by
:mod:`fedkd.report`.

:func:`run_server` is the one call the ServerApp and :func:`fedkd.run` make.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedkd.assistants import train_assistant_chain
from fedkd.checkpoint import (
    check_config,
    config_digest,
    latest_checkpoint,
    prune_checkpoints,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from fedkd.config import DataConfig, DistillConfig, FedkdConfig
from fedkd.data import Splits, client_partitions, make_splits
from fedkd.devices import DeviceFleet
from fedkd.errors import ConfigError
from fedkd.knowledge import Method, method_of, teacher_knowledge
from fedkd.privacy.accounting import PrivacyPlan, plan_privacy
from fedkd.privacy.pate import query_rows
from fedkd.report import RunRecord, write_report
from fedkd.results import MetricsLog, RunResult, unique_dir, write_json
from fedkd.strategies import STRATEGY_REGISTRY
from fedkd.strategies.warm_start import warm_start_model
from fedkd.teachers import TeacherBundle, build_teachers
from fedkd.training import evaluate
from fedkd.views import student_shape, student_x, teacher_x, view_shape

log = logging.getLogger("fedkd")

Progress = Callable[[str, dict[str, Any]], None]
"""``progress(event, info)``: events ``status`` (``{"text": ...}``) and ``round`` (a row)."""

RoundCallback = Callable[[dict[str, Any]], None]
"""Called with each completed round's metrics row, in registration order."""


def default_out_dir(cfg: FedkdConfig) -> Path:
    """A new ``runs/<name>-<timestamp>`` (``-2``, ``-3``, ... appended if it exists)."""
    return unique_dir(Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")


def run_server(
    grid: Grid,
    cfg: FedkdConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    resume: bool = False,
) -> RunResult:
    """Run a whole fedkd experiment over ``grid`` and write the run directory.

    Parameters
    ----------
    grid : Grid
        Any Flower Grid: the in-process engine's, Flower's simulation or deployment grid.
    cfg : FedkdConfig
        Resolved configuration.
    out_dir : path
        Run directory (created).
    progress : callable, optional
        ``progress(event, info)`` with events ``status``, ``round``.
    resume : bool
        Continue the run in ``out_dir`` after its last checkpointed round (the grid must
        keep node states in a state store, as the in-process engines do).

    Returns
    -------
    RunResult
        The summary, the metrics rows and the run directory.

    """
    return Experiment(grid, cfg, out_dir, progress, resume).run()


class Experiment:
    """One run: built once by :meth:`build`, then :meth:`run` over its Grid.

    Parameters
    ----------
    grid : Grid
        Any Flower Grid (see :func:`run_server`).
    cfg : FedkdConfig
        Resolved configuration.
    out_dir : path
        Run directory (created by :meth:`build`).
    progress : callable, optional
        ``progress(event, info)``; see :data:`Progress`.
    resume : bool
        Continue after the run directory's last checkpoint.

    """

    def __init__(
        self,
        grid: Grid,
        cfg: FedkdConfig,
        out_dir: str | Path,
        progress: Progress | None = None,
        resume: bool = False,
    ) -> None:
        self.started = time.perf_counter()
        self.grid = grid
        self.cfg = cfg
        self.out = Path(out_dir)
        self.notify: Progress = progress or _silent
        self.ckpt = resume_checkpoint(self.out, cfg, resume)
        self.digest = config_digest(cfg)
        self.checkpointing = keeps_node_states(grid, cfg.engine, resume)
        self.earlier_s = float(self.ckpt["elapsed_s"]) if self.ckpt is not None else 0.0
        self.rows: list[dict[str, Any]] = list(self.ckpt["rows"]) if self.ckpt else []
        self.round_callbacks: list[RoundCallback] = []
        self.warm_acc: float | None = None
        self.assistants: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ public hooks
    def add_round_callback(self, callback: RoundCallback) -> None:
        """Call ``callback(row)`` after each completed round.

        Parameters
        ----------
        callback : callable
            Receives the round's metrics row. Callbacks added here run after the
            experiment's own (``metrics.jsonl``, checkpoint, progress), in the order added.

        """
        self.round_callbacks.append(callback)

    def elapsed_s(self) -> float:
        """Wall time of the run so far, including the time before a resume."""
        return self.earlier_s + time.perf_counter() - self.started

    def status(self, text: str) -> None:
        """Report a ``status`` progress event."""
        self.notify("status", {"text": text})

    # ------------------------------------------------------------------ the run
    def run(self) -> RunResult:
        """Build, run every round, the baselines and write the end-of-run report."""
        self.build()
        self.run_rounds()
        local = self.local_only_baseline()
        summary = write_report(self.record(local), self.out, self.elapsed_s)
        return RunResult(summary=summary, metrics=self.rows, out_dir=self.out)

    def build(self) -> None:
        """Prepare everything the rounds need, once (see the module docstring)."""
        cfg, ckpt = self.cfg, self.ckpt
        self.out.mkdir(parents=True, exist_ok=True)
        seed_process(cfg.seed, cfg.threads)
        if ckpt is None:
            (self.out / "config.json").write_text(cfg.to_json() + "\n")
        self.status("preparing data")
        splits = self.splits = make_splits(cfg.data, cfg.seed)
        self.shapes = view_shapes(cfg.data, splits, cfg.seed)
        self.student_parameters = student_parameters(cfg.student.model, cfg.data, splits, cfg.seed)
        log.info("student %s: %d parameters", cfg.student.model, self.student_parameters)
        self.fleet = build_fleet(cfg, splits)
        self.privacy = plan_from_partitions(cfg, len(splits.teacher))
        self.teachers = prepare_teachers(cfg, self.privacy, ckpt, self.status)
        self.ensemble_accuracy = self.teachers.ensemble_accuracy(
            splits.data.y[splits.test],
            cfg.strategy.fusion,
            cfg.distill.temperature,
            **cfg.fusion_params,
        )
        log_teachers(self.teachers)
        self.method = method_of(cfg.distill.loss)
        self.source = self.teachers  # what the clients are taught from
        if self.method is not None and self.method.name == "takd":
            self.status("teacher assistants")
            self.source, self.assistants = train_assistant_chain(
                cfg, self.teachers, progress=self.status
            )
        self.strategy = STRATEGY_REGISTRY[cfg.strategy.name](cfg, self.source)
        knowledge = method_knowledge(
            self.method, self.teachers, cfg.data, cfg.distill, splits, cfg.seed
        )
        if knowledge is not None:
            self.strategy.set_knowledge(knowledge)
        attach_fleet(self.strategy, self.fleet, cfg.student_specs, cfg.strategy.name)
        attach_privacy(
            self.strategy, self.privacy, len(splits.proxy), cfg.privacy.queries, cfg.seed
        )
        if ckpt is not None:
            self.restore(ckpt)
        elif cfg.strategy.warm_start_epochs:
            self.warm_start()
        if ckpt is None:
            self.status("discovering clients")
            self.strategy.discover(self.grid, cfg.strategy.round_timeout_s)
        if self.privacy is not None and self.privacy.mechanism == "dp_sgd":
            self.privacy = replan_from_discovery(cfg, self.strategy, len(splits.teacher))
        write_partition(self.out / "partition.json", cfg, self.strategy.client_info)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load the strategy's state, the warm-start accuracy and the RNGs of ``ckpt``."""
        self.strategy.load_checkpoint_state(ckpt["strategy"])
        self.warm_acc = ckpt["warm_acc"]
        set_rng_states(ckpt["rng"])
        self.grid.recover(ckpt["round"])  # type: ignore[attr-defined]
        log.info("resuming %s after round %d", self.out, ckpt["round"])

    def warm_start(self) -> None:
        """Train the warm-start student on the server and hand it to the strategy."""
        cfg, splits = self.cfg, self.splits
        self.status("warm-start student")
        torch.set_num_threads(cfg.resolved_workers)
        warm = warm_start_model(cfg, self.source, use_teachers=self.strategy.uses_teachers)
        torch.set_num_threads(cfg.threads)
        assert warm is not None
        self.warm_acc = evaluate(
            warm,
            torch.from_numpy(student_x(cfg.data, splits, splits.test, cfg.seed)),
            torch.from_numpy(splits.data.y[splits.test]),
        )
        log.info("warm-start student: test accuracy %.4f", self.warm_acc)
        self.strategy.set_warm_start(ArrayRecord(warm.state_dict()))

    def run_rounds(self) -> None:
        """Run the strategy's rounds; each completed row goes through the round callbacks."""
        own: list[RoundCallback] = [MetricsWriter(self.out / "metrics.jsonl", self.rows).append]
        if self.checkpointing:
            own.append(CheckpointWriter(self.out, self.grid, self.digest, self.checkpoint_payload))
        own.append(lambda row: self.notify("round", row))
        callbacks = own + self.round_callbacks
        for row in self.rows:
            self.notify("round", row)

        def on_round(row: dict[str, Any]) -> None:
            self.rows.append(row)
            for callback in callbacks:
                callback(row)

        self.status("federated rounds")
        start_round = int(self.ckpt["round"]) + 1 if self.ckpt is not None else 1
        self.strategy.start(self.grid, self.cfg.rounds, on_round=on_round, start_round=start_round)

    def checkpoint_payload(self) -> dict[str, Any]:
        """What a round checkpoint holds besides the round number."""
        return {
            "strategy": self.strategy.checkpoint_state(),
            "rows": self.rows,
            "rng": rng_states(),
            "warm_acc": self.warm_acc,
            "pate_targets": self.teachers.pate_targets,
            "elapsed_s": self.elapsed_s(),
        }

    def local_only_baseline(self) -> dict[int, float]:
        """``baselines.local_only``: each client's accuracy trained on its own data alone."""
        if not self.cfg.baselines.local_only:
            return {}
        self.status("local-only baseline")
        return self.strategy.local_only_baseline(
            self.grid,
            self.cfg.rounds * self.cfg.distill.local_epochs,
            self.cfg.strategy.round_timeout_s,
        )

    def record(self, local: dict[int, float]) -> RunRecord:
        """What :func:`fedkd.report.write_report` reads of this finished run."""
        return RunRecord(
            cfg=self.cfg,
            splits=self.splits,
            shapes=self.shapes,
            student_parameters=self.student_parameters,
            teachers=self.teachers,
            ensemble_accuracy=self.ensemble_accuracy,
            method=self.method,
            assistants=self.assistants,
            strategy=self.strategy,
            fleet=self.fleet,
            privacy=self.privacy,
            warm_acc=self.warm_acc,
            rows=self.rows,
            local=local,
            resumed_after_round=int(self.ckpt["round"]) if self.ckpt is not None else None,
        )


# --------------------------------------------------------------------------- round callbacks
class MetricsWriter:
    """Round callback: appends each row to ``metrics.jsonl`` (rewritten from ``rows`` first)."""

    def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
        self.log = MetricsLog(path, rows)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` (fsynced, so a killed run keeps it)."""
        self.log.append(row)


class CheckpointWriter:
    """Round callback: a checkpoint after each round, committed to the grid, older pruned.

    Parameters
    ----------
    out : Path
        Run directory.
    grid : Grid
        A grid with a state store (``commit_round``).
    digest : str
        The config's digest (:func:`fedkd.checkpoint.config_digest`).
    payload : callable
        Returns what the checkpoint holds (read when the round completes).

    """

    def __init__(
        self, out: Path, grid: Grid, digest: str, payload: Callable[[], dict[str, Any]]
    ) -> None:
        self.out, self.grid, self.digest, self.payload = out, grid, digest, payload

    def __call__(self, row: dict[str, Any]) -> None:
        """Checkpoint the round of ``row``."""
        rnd = int(row["round"])
        save_checkpoint(self.out, rnd, self.payload(), config_sha256=self.digest)
        self.grid.commit_round(rnd)  # type: ignore[attr-defined]
        prune_checkpoints(self.out, rnd)


def _silent(event: str, info: dict[str, Any]) -> None:
    """The progress callback of a run without one."""


# --------------------------------------------------------------------------- build steps
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
    method: Method | None,
    teachers: TeacherBundle,
    data: DataConfig,
    distill: DistillConfig,
    splits: Splits,
    seed: int,
) -> Any:
    """The teacher knowledge a catalogue method sends with the targets (None: logits only).

    Parameters
    ----------
    method : Method or None
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
        knowledge = teacher_knowledge(
            method,
            teachers.models,
            x_proxy,
            distill.feature_teacher,
            projection=distill.rkd_projection,
            seed=seed,
        )
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
