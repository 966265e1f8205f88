"""The :class:`Experiment`: built once by its steps, then its rounds with round callbacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedkd.assistants import train_assistant_chain
from fedkd.checkpoint import config_digest, rng_states, set_rng_states
from fedkd.config import FedkdConfig
from fedkd.data import make_splits
from fedkd.experiment.round_callbacks import CheckpointWriter, MetricsWriter
from fedkd.experiment.steps import (
    attach_fleet,
    attach_privacy,
    build_fleet,
    keeps_node_states,
    log_teachers,
    method_knowledge,
    plan_from_partitions,
    prepare_teachers,
    replan_from_discovery,
    resume_checkpoint,
    seed_process,
    student_parameters,
    view_shapes,
    write_partition,
)
from fedkd.losses import method_of
from fedkd.report import RunRecord, write_report
from fedkd.results import RunResult, unique_dir
from fedkd.strategies.catalogue import STRATEGY_REGISTRY
from fedkd.strategies.warm_start import warm_start_model
from fedkd.training import evaluate
from fedkd.views import student_x

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
        if self.method is not None and self.method.uses_assistants:
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


def _silent(event: str, info: dict[str, Any]) -> None:
    """The progress callback of a run without one."""
