"""Flower ServerApp: builds teachers and the strategy, runs the rounds, writes results.

:func:`run_server` is the whole server side; the ``ServerApp`` below only unpacks the
Flower run config (for ``flwr run`` / a SuperLink), and :func:`fedkd.run` calls
:func:`run_server` directly with an in-process engine's Grid.
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
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedkd import keys
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
from fedkd.client_app import config_from_run_config
from fedkd.config import FedkdConfig
from fedkd.data import client_partitions, make_splits
from fedkd.devices import DeviceFleet
from fedkd.errors import ConfigError
from fedkd.losses import method_of
from fedkd.plots import plot_accuracy, plot_by_tier, plot_client_histogram, plot_virtual_time
from fedkd.privacy.accounting import PrivacyPlan, plan_privacy
from fedkd.privacy.pate import query_rows
from fedkd.results import MetricsLog, RunDirLock, RunResult, check_out_dir, unique_dir, write_json
from fedkd.stats import percentile
from fedkd.strategies.catalogue import STRATEGY_REGISTRY
from fedkd.strategies.warm_start import warm_start_model
from fedkd.teachers import build_teachers
from fedkd.training import evaluate
from fedkd.views import student_shape, student_x, teacher_x, view_shape

log = logging.getLogger("fedkd")

app = ServerApp()

Progress = Callable[[str, dict[str, Any]], None]


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

    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    ckpt = latest_checkpoint(out) if resume else None
    if resume and ckpt is None:
        raise ConfigError(
            f"--resume {out}: no checkpoint there (no round completed, or not a run directory)"
        )
    if ckpt is not None:
        check_config(out, ckpt, cfg)
    digest = config_digest(cfg)
    checkpointing = getattr(grid, "state_store", None) is not None
    if resume and not checkpointing:
        raise ConfigError(
            f"engine {cfg.engine!r} keeps no node states on disk; --resume needs engine "
            "'inprocess' or 'vectorized'"
        )
    out.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda event, info: None)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if ckpt is None:
        (out / "config.json").write_text(cfg.to_json() + "\n")

    notify("status", {"text": "preparing data"})
    splits = make_splits(cfg.data, cfg.seed)
    shapes = _view_shapes(cfg, splits)
    student_params = _student_parameters(cfg, splits)
    log.info("student %s: %d parameters", cfg.student.model, student_params)
    fleet = _fleet(cfg, splits)
    # fail fast on partitions that cannot be made (and warm the cache for in-process clients)
    parts = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)
    try:
        privacy = plan_privacy(cfg, [len(p) for p in parts], len(splits.teacher))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    teachers = build_teachers(
        cfg, progress=lambda s: notify("status", {"text": s}), workers=cfg.resolved_workers
    )
    if privacy is not None and privacy.mechanism == "pate":
        teachers = _with_pate_release(cfg, teachers, ckpt)
    ens_acc = teachers.ensemble_accuracy(
        splits.data.y[splits.test],
        cfg.strategy.fusion,
        cfg.distill.temperature,
        **cfg.fusion_params,
    )
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
    method = method_of(cfg.distill.loss)
    assistants: list[dict[str, Any]] | None = None
    source = teachers  # what the clients are taught from (the last assistant with takd)
    if method is not None and method.uses_assistants:
        notify("status", {"text": "teacher assistants"})
        source, assistants = train_assistant_chain(
            cfg, teachers, progress=lambda s: notify("status", {"text": s})
        )
    strategy = STRATEGY_REGISTRY[cfg.strategy.name](cfg, source)
    if method is not None and method.knowledge != "logits":
        x_proxy = torch.from_numpy(teacher_x(cfg.data, splits, splits.proxy, cfg.seed))
        try:
            knowledge = method.teacher_knowledge(teachers.models, x_proxy, cfg.distill, cfg.seed)
        except ValueError as err:
            raise ConfigError(f"distill.loss={method.name!r}: {err}") from None
        assert knowledge is not None
        log.info(
            "%s: teacher %s of shape %s per proxy row travel with the targets",
            method.name,
            method.knowledge,
            tuple(knowledge.shape[1:]),
        )
        strategy.set_knowledge(knowledge)
    if fleet is not None:
        if len(cfg.student_specs) > 1 and strategy.collects_weights:
            raise ConfigError(
                f"strategy.name={cfg.strategy.name!r} averages student weights, so every "
                f"client needs the same student; devices.tiers use {sorted(cfg.student_specs)}"
            )
        strategy.set_fleet(fleet)
    if privacy is not None:
        rows = None
        if privacy.mechanism == "pate":
            rows = query_rows(len(splits.proxy), cfg.privacy.queries, cfg.seed)
        strategy.set_privacy(privacy, rows)
    warm_acc: float | None = None
    if ckpt is not None:
        strategy.load_checkpoint_state(ckpt["strategy"])
        warm_acc = ckpt["warm_acc"]
        set_rng_states(ckpt["rng"])
        grid.recover(ckpt["round"])  # type: ignore[attr-defined]
        log.info("resuming %s after round %d", out, ckpt["round"])
    elif cfg.strategy.warm_start_epochs:
        notify("status", {"text": "warm-start student"})
        torch.set_num_threads(cfg.resolved_workers)
        warm = warm_start_model(cfg, source, use_teachers=strategy.uses_teachers)
        torch.set_num_threads(cfg.threads)
        assert warm is not None
        warm_acc = evaluate(
            warm,
            torch.from_numpy(student_x(cfg.data, splits, splits.test, cfg.seed)),
            torch.from_numpy(splits.data.y[splits.test]),
        )
        log.info("warm-start student: test accuracy %.4f", warm_acc)
        strategy.set_warm_start(ArrayRecord(warm.state_dict()))

    if ckpt is None:
        notify("status", {"text": "discovering clients"})
        strategy.discover(grid, cfg.strategy.round_timeout_s)
    if privacy is not None and privacy.mechanism == "dp_sgd":
        privacy = _replan_from_discovery(cfg, strategy, len(splits.teacher))
    write_json(
        out / "partition.json",
        {
            "kind": cfg.partition.kind,
            "alpha": cfg.partition.alpha if cfg.partition.kind == "dirichlet" else None,
            "clients": [
                {"client": p, **strategy.client_info[p]} for p in sorted(strategy.client_info)
            ],
        },
    )

    rows: list[dict[str, Any]] = list(ckpt["rows"]) if ckpt is not None else []
    metrics = MetricsLog(out / "metrics.jsonl", rows)
    for row in rows:
        notify("round", row)
    earlier_s = float(ckpt["elapsed_s"]) if ckpt is not None else 0.0

    def on_round(row: dict[str, Any]) -> None:
        metrics.append(row)
        rows.append(row)
        if checkpointing:
            rnd = int(row["round"])
            save_checkpoint(
                out,
                rnd,
                {
                    "strategy": strategy.checkpoint_state(),
                    "rows": rows,
                    "rng": rng_states(),
                    "warm_acc": warm_acc,
                    "pate_targets": teachers.pate_targets,
                    "elapsed_s": earlier_s + time.perf_counter() - t0,
                },
                config_sha256=digest,
            )
            grid.commit_round(rnd)  # type: ignore[attr-defined]
            prune_checkpoints(out, rnd)
        notify("round", row)

    notify("status", {"text": "federated rounds"})
    start_round = int(ckpt["round"]) + 1 if ckpt is not None else 1
    strategy.start(grid, cfg.rounds, on_round=on_round, start_round=start_round)

    local: dict[int, float] = {}
    if cfg.baselines.local_only:
        notify("status", {"text": "local-only baseline"})
        local = strategy.local_only_baseline(
            grid, cfg.rounds * cfg.distill.local_epochs, cfg.strategy.round_timeout_s
        )

    final_accs = [strategy.latest_accuracy[p] for p in sorted(strategy.latest_accuracy)]
    last = rows[-1] if rows else {}
    summary: dict[str, Any] = {
        "name": cfg.name,
        "strategy": cfg.strategy.name,
        "fusion": cfg.strategy.fusion,
        "engine": cfg.engine,
        "num_clients": cfg.num_clients,
        "clients_answering": len(strategy.node_of),
        "rounds": cfg.rounds,
        "seed": cfg.seed,
        "dataset": {
            "name": cfg.data.name,
            "input_shape": list(splits.data.input_shape),
            "teacher_view": cfg.data.teacher_view,
            "student_view": cfg.data.student_view,
            "teacher_input_shape": list(shapes[0]),
            "student_input_shape": list(shapes[1]),
            "num_classes": splits.data.num_classes,
            "split_sizes": {
                p: int(len(getattr(splits, p))) for p in ("teacher", "proxy", "clients", "test")
            },
        },
        "final": {
            "student_accuracy_mean": last.get("student_accuracy_mean"),
            "student_accuracy_p10": last.get("student_accuracy_p10"),
            "student_accuracy_min": last.get("student_accuracy_min"),
            "student_accuracy_max": last.get("student_accuracy_max"),
            "clients_evaluated": last.get("evaluated"),
            "teacher_accuracy": ens_acc,
            "teacher_accuracies": teachers.test_accuracy,
        },
        "baselines": {
            "local_only_accuracy_mean": float(np.mean(list(local.values()))) if local else None,
            "local_only_accuracy_p10": percentile(local.values(), 10),
        },
        "models": {
            "teachers": [
                {"spec": s, "parameters": n, "test_accuracy": a, "cached": c}
                for s, n, a, c in zip(
                    teachers.specs,
                    teachers.parameters,
                    teachers.test_accuracy,
                    teachers.cached,
                    strict=True,
                )
            ],
            "student": {"spec": cfg.student.model, "parameters": student_params},
        },
        "distill": {
            "loss": cfg.distill.loss,
            "kind": method.kind if method is not None else "registered logit loss",
            "knowledge": method.knowledge if method is not None else "logits",
            "beta": cfg.distill.beta_or(method.default_beta) if method is not None else None,
            "temperature": cfg.distill.temperature,
            "alpha": cfg.distill.alpha,
            "assistants": assistants,
        },
        "communication": {
            "bytes_down": strategy.traffic.total_down,
            "bytes_up": strategy.traffic.total_up,
            "by_phase_down": strategy.traffic.down,
            "by_phase_up": strategy.traffic.up,
            "counted": "protobuf size of every Message's RecordDict, as Flower serializes it",
        },
        "warm_start": {
            "epochs": cfg.strategy.warm_start_epochs,
            "test_accuracy": warm_acc,
            "clients_reached": len(strategy.warm_started),
        }
        if warm_acc is not None
        else None,
        "attack": _attack_summary(cfg, strategy.latest_accuracy),
        "rejected_replies": len(strategy.rejections),
        "rejected_by_kind": strategy.rejections_by_kind(),
        "rejections": strategy.rejections[:100],
        "wall_time_s": earlier_s + time.perf_counter() - t0,
        "virtual_time_s": None,
        "privacy": _privacy_summary(cfg, privacy, teachers, splits, strategy.privacy_snr),
    }
    write_json(
        out / "clients.json",
        [
            {
                "client": p,
                **strategy.client_info.get(p, {}),
                "final_accuracy": strategy.latest_accuracy.get(p),
                "local_only_accuracy": local.get(p),
            }
            for p in sorted(strategy.node_of)
        ],
    )
    if fleet is not None:
        summary["final"]["by_tier"] = _by_tier(cfg, fleet, strategy, local)
        summary["virtual_time_s"] = strategy.virtual_time
        summary["devices"] = {
            "policy": cfg.devices.policy,
            "deadline_s": cfg.devices.deadline_s if cfg.devices.policy == "deadline" else None,
            "over_select": cfg.devices.over_select if cfg.devices.policy == "over_select" else None,
            "void_rounds": sum(1 for r in rows if r.get("void")),
            "dropped_late": sum(int(r.get("dropped_late") or 0) for r in rows),
            "failed": sum(int(r.get("failed") or 0) for r in rows),
        }
        plot_by_tier(summary["final"]["by_tier"], out / "tiers.png")
        plot_virtual_time(rows, summary, out / "accuracy_virtual_time.png")
    plot_accuracy(rows, summary, out / "accuracy.png")
    plot_client_histogram(final_accs, list(local.values()), out / "client_accuracy_hist.png")
    summary["wall_time_s"] = earlier_s + time.perf_counter() - t0
    summary["resumed_after_round"] = int(ckpt["round"]) if ckpt is not None else None
    write_json(out / "summary.json", summary)
    return RunResult(summary=summary, metrics=rows, out_dir=out)


def _with_pate_release(cfg: FedkdConfig, teachers: Any, ckpt: dict[str, Any] | None) -> Any:
    """``teachers`` carrying the run's one GNMax release (a resumed run keeps its own).

    Every draw of GNMax labels is a release that costs privacy, so the labels are drawn
    once per run, before round 1, and kept in the checkpoints.
    """
    from fedkd.privacy.pate import pate_targets

    saved = ckpt.get("pate_targets") if ckpt is not None else None
    release = np.asarray(saved) if saved is not None else pate_targets(cfg, teachers.proxy_logits)
    return dataclasses.replace(teachers, pate_targets=release)


def _replan_from_discovery(cfg: FedkdConfig, strategy: Any, teacher_split: int) -> PrivacyPlan:
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


def _privacy_summary(
    cfg: FedkdConfig,
    plan: PrivacyPlan | None,
    teachers: Any,
    splits: Any,
    snr: list[float] | None = None,
) -> dict[str, Any]:
    """``summary.json`` ``privacy``: the plan's fields (nulls when not private)."""
    if plan is None:
        return {"mechanism": None, "epsilon": None, "delta": None}
    out = plan.summary()
    if plan.mechanism == "client_dp":
        finite = [v for v in snr or [] if np.isfinite(v)]
        out["snr_mean"] = float(np.mean(finite)) if finite else None
        out["snr_min"] = float(np.min(finite)) if finite else None
        out["snr"] = (
            "signal-to-noise ratio of each round's private consensus: Frobenius norm of the "
            "clipped uploads' sum over the noise's (local: estimated from the noise std)"
        )
    if plan.mechanism == "pate":
        rows = query_rows(len(splits.proxy), cfg.privacy.queries, cfg.seed)
        assert teachers.pate_targets is not None
        labels = teachers.pate_targets[rows].argmax(-1)
        truth = splits.data.y[splits.proxy][rows]
        out["pate_queries"] = len(rows)
        out["pate_label_accuracy"] = float((labels == truth).mean())
    return out


def _view_shapes(cfg: FedkdConfig, splits: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sample shapes of the teachers' and the students' views (config errors raised)."""
    out = []
    for key in ("teacher_view", "student_view"):
        spec = getattr(cfg.data, key)
        try:
            out.append(view_shape(spec, splits, cfg.seed))
        except ValueError as err:
            raise ConfigError(f"data.{key}={spec!r}: {err}") from None
    return out[0], out[1]


def _fleet(cfg: FedkdConfig, splits: Any) -> DeviceFleet | None:
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


def _by_tier(
    cfg: FedkdConfig, fleet: DeviceFleet, strategy: Any, local: dict[int, float]
) -> dict[str, Any]:
    """``final.by_tier``: accuracy, baseline, participation and time per device tier."""
    out: dict[str, Any] = {}
    for i, (tier, model) in enumerate(zip(fleet.tiers, fleet.models, strict=True)):
        members = [p for p in sorted(strategy.node_of) if fleet.tier_index(p) == i]
        accs = [strategy.latest_accuracy[p] for p in members if p in strategy.latest_accuracy]
        base = [local[p] for p in members if p in local]
        st = strategy.tier_stats.get(tier.name, {})
        slots = len(members) * cfg.rounds
        out[tier.name] = {
            "clients": len(members),
            "student": model.spec,
            "student_parameters": model.parameters,
            "flops_per_sample": model.flops_per_sample,
            "train_memory_mb": model.train_memory_bytes / 2**20,
            "accuracy_mean": float(np.mean(accs)) if accs else None,
            "accuracy_p10": percentile(accs, 10),
            "local_only_accuracy_mean": float(np.mean(base)) if base else None,
            "participation_rate": st.get("kept", 0) / slots if slots else None,
            "sampled": int(st.get("sampled", 0)),
            "kept": int(st.get("kept", 0)),
            "dropped_late": int(st.get("late", 0)),
            "failed": int(st.get("failed", 0)),
            "mean_round_time_s": st["time_sum"] / st["timed"] if st.get("timed") else None,
        }
    return out


def _attack_summary(cfg: FedkdConfig, accuracy: dict[int, float]) -> dict[str, Any] | None:
    """Who was malicious and how honest and malicious clients ended (None without attack)."""
    from fedkd.attacks import malicious_partitions

    bad = malicious_partitions(cfg.num_clients, cfg.attack.fraction, cfg.seed)
    if not bad:
        return None
    honest = [a for p, a in accuracy.items() if p not in bad]
    evil = [a for p, a in accuracy.items() if p in bad]
    return {
        "kind": cfg.attack.kind,
        "fraction": cfg.attack.fraction,
        "malicious": sorted(bad),
        "honest_accuracy_mean": float(np.mean(honest)) if honest else None,
        "malicious_accuracy_mean": float(np.mean(evil)) if evil else None,
    }


def _student_parameters(cfg: FedkdConfig, splits: Any) -> int:
    """Parameter count of the student; a spec that cannot fit the data is a config error."""
    from fedkd.models import build_model, count_parameters

    try:
        model = build_model(
            cfg.student.model, student_shape(cfg.data, splits, cfg.seed), splits.data.num_classes
        )
    except ValueError as err:
        raise ConfigError(f"student.model={cfg.student.model!r}: {err}") from None
    return count_parameters(model)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point for ``flwr run`` and deployment (reads the run config)."""
    cfg = config_from_run_config(dict(context.run_config))
    out = check_out_dir(str(context.run_config.get(keys.RUN_OUT, "")) or default_out_dir(cfg))
    with RunDirLock(out):  # one fedkd process per run directory
        result = run_server(grid, cfg, out)
    log.info("fedkd summary written to %s", Path(out) / "summary.json")
    log.info("final student accuracy mean %s", result.summary["final"]["student_accuracy_mean"])
