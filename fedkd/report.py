"""End-of-run outputs: ``summary.json``, ``clients.json`` and the plots.

:func:`write_report` reads a :class:`RunRecord` (what :class:`fedkd.experiment.Experiment`
built and measured) and writes the run directory's final files; :func:`summary_of` is the
summary alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.attacks import malicious_partitions
from fedkd.config import FedkdConfig
from fedkd.data import Splits
from fedkd.devices import DeviceFleet
from fedkd.losses import KDMethod
from fedkd.plots import plot_accuracy, plot_by_tier, plot_client_histogram, plot_virtual_time
from fedkd.privacy.accounting import PrivacyPlan
from fedkd.privacy.pate import query_rows
from fedkd.results import write_json
from fedkd.stats import percentile
from fedkd.teachers import TeacherBundle


@dataclass
class RunRecord:
    """What the report reads of a finished run.

    ``strategy`` is the run's KD strategy after its last round (its accuracies, client
    info, traffic, rejections and tier statistics); ``local`` the local-only baseline's
    accuracy per partition (empty without it).
    """

    cfg: FedkdConfig
    splits: Splits
    shapes: tuple[tuple[int, ...], tuple[int, ...]]
    student_parameters: int
    teachers: TeacherBundle
    ensemble_accuracy: float | None
    method: KDMethod | None
    assistants: list[dict[str, Any]] | None
    strategy: Any
    fleet: DeviceFleet | None
    privacy: PrivacyPlan | None
    warm_acc: float | None
    rows: list[dict[str, Any]]
    local: dict[int, float]
    resumed_after_round: int | None


def write_report(rec: RunRecord, out: Path, elapsed_s: Callable[[], float]) -> dict[str, Any]:
    """Write ``clients.json``, the plots and ``summary.json``; return the summary.

    Parameters
    ----------
    rec : RunRecord
        The finished run.
    out : Path
        Run directory.
    elapsed_s : callable
        The run's wall time so far (read for ``wall_time_s``).

    Returns
    -------
    dict
        The summary as written to ``summary.json``.

    """
    strategy, local = rec.strategy, rec.local
    summary = summary_of(rec, elapsed_s())
    write_json(out / "clients.json", client_rows(strategy, local))
    if rec.fleet is not None:
        summary["final"]["by_tier"] = by_tier(rec.cfg.rounds, rec.fleet, strategy, local)
        summary["virtual_time_s"] = strategy.virtual_time
        summary["devices"] = devices_summary(rec.cfg, rec.rows)
        plot_by_tier(summary["final"]["by_tier"], out / "tiers.png")
        plot_virtual_time(rec.rows, summary, out / "accuracy_virtual_time.png")
    final_accs = [strategy.latest_accuracy[p] for p in sorted(strategy.latest_accuracy)]
    plot_accuracy(rec.rows, summary, out / "accuracy.png")
    plot_client_histogram(final_accs, list(local.values()), out / "client_accuracy_hist.png")
    summary["wall_time_s"] = elapsed_s()
    summary["resumed_after_round"] = rec.resumed_after_round
    write_json(out / "summary.json", summary)
    return summary


def summary_of(rec: RunRecord, wall_time_s: float) -> dict[str, Any]:
    """The summary's sections (``by_tier``, ``devices`` are added by :func:`write_report`)."""
    cfg, strategy, local = rec.cfg, rec.strategy, rec.local
    return {
        "name": cfg.name,
        "strategy": cfg.strategy.name,
        "fusion": cfg.strategy.fusion,
        "engine": cfg.engine,
        "num_clients": cfg.num_clients,
        "clients_answering": len(strategy.node_of),
        "rounds": cfg.rounds,
        "seed": cfg.seed,
        "dataset": dataset_summary(cfg, rec.splits, rec.shapes),
        "final": final_summary(rec.rows, rec.ensemble_accuracy, rec.teachers),
        "baselines": {
            "local_only_accuracy_mean": float(np.mean(list(local.values()))) if local else None,
            "local_only_accuracy_p10": percentile(local.values(), 10),
        },
        "models": models_summary(rec.teachers, cfg.student.model, rec.student_parameters),
        "distill": distill_summary(cfg, rec.method, rec.assistants),
        "communication": {
            "bytes_down": strategy.traffic.total_down,
            "bytes_up": strategy.traffic.total_up,
            "by_phase_down": strategy.traffic.down,
            "by_phase_up": strategy.traffic.up,
            "counted": "protobuf size of every Message's RecordDict, as Flower serializes it",
        },
        "warm_start": {
            "epochs": cfg.strategy.warm_start_epochs,
            "test_accuracy": rec.warm_acc,
            "clients_reached": len(strategy.warm_started),
        }
        if rec.warm_acc is not None
        else None,
        "attack": attack_summary(cfg, strategy.latest_accuracy),
        "rejected_replies": len(strategy.rejections),
        "rejected_by_kind": strategy.rejections_by_kind(),
        "rejections": strategy.rejections[:100],
        "wall_time_s": wall_time_s,
        "virtual_time_s": None,
        "privacy": privacy_summary(
            cfg, rec.privacy, rec.teachers, rec.splits, strategy.privacy_snr
        ),
    }


def dataset_summary(
    cfg: FedkdConfig, splits: Splits, shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> dict[str, Any]:
    """``summary.json`` ``dataset``: name, shapes of the views, classes, split sizes."""
    return {
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
    }


def final_summary(
    rows: list[dict[str, Any]], ensemble_accuracy: float | None, teachers: TeacherBundle
) -> dict[str, Any]:
    """``summary.json`` ``final``: the last round's student accuracies and the teachers'."""
    last = rows[-1] if rows else {}
    return {
        "student_accuracy_mean": last.get("student_accuracy_mean"),
        "student_accuracy_p10": last.get("student_accuracy_p10"),
        "student_accuracy_min": last.get("student_accuracy_min"),
        "student_accuracy_max": last.get("student_accuracy_max"),
        "clients_evaluated": last.get("evaluated"),
        "teacher_accuracy": ensemble_accuracy,
        "teacher_accuracies": teachers.test_accuracy,
    }


def models_summary(teachers: TeacherBundle, student: str, student_params: int) -> dict[str, Any]:
    """``summary.json`` ``models``: each teacher's spec, size, accuracy; the student's size."""
    return {
        "teachers": [
            {
                "spec": s,
                "parameters": n,
                "test_accuracy": a,
                "cached": c,
                "given": teachers.is_given(i),
            }
            for i, (s, n, a, c) in enumerate(
                zip(
                    teachers.specs,
                    teachers.parameters,
                    teachers.test_accuracy,
                    teachers.cached,
                    strict=True,
                )
            )
        ],
        "student": {"spec": student, "parameters": student_params},
    }


def distill_summary(
    cfg: FedkdConfig, method: KDMethod | None, assistants: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """``summary.json`` ``distill``: the loss, its kind and knowledge, its weights."""
    return {
        "loss": cfg.distill.loss,
        "kind": method.kind if method is not None else "registered logit loss",
        "knowledge": method.knowledge if method is not None else "logits",
        "beta": cfg.distill.beta_or(method.default_beta) if method is not None else None,
        "temperature": cfg.distill.temperature,
        "alpha": cfg.distill.alpha,
        "assistants": assistants,
    }


def client_rows(strategy: Any, local: dict[int, float]) -> list[dict[str, Any]]:
    """``clients.json``: each answering client's info, final and local-only accuracy."""
    return [
        {
            "client": p,
            **strategy.client_info.get(p, {}),
            "final_accuracy": strategy.latest_accuracy.get(p),
            "local_only_accuracy": local.get(p),
        }
        for p in sorted(strategy.node_of)
    ]


def devices_summary(cfg: FedkdConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``summary.json`` ``devices``: the selection policy and the rounds' device losses."""
    return {
        "policy": cfg.devices.policy,
        "deadline_s": cfg.devices.deadline_s if cfg.devices.policy == "deadline" else None,
        "over_select": cfg.devices.over_select if cfg.devices.policy == "over_select" else None,
        "void_rounds": sum(1 for r in rows if r.get("void")),
        "dropped_late": sum(int(r.get("dropped_late") or 0) for r in rows),
        "failed": sum(int(r.get("failed") or 0) for r in rows),
    }


def privacy_summary(
    cfg: FedkdConfig,
    plan: PrivacyPlan | None,
    teachers: TeacherBundle,
    splits: Splits,
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
        # a separate proxy dataset (data.proxy) has no labels to compare with
        known = not splits.proxy_source
        out["pate_label_accuracy"] = float((labels == truth).mean()) if known else None
    return out


def by_tier(
    rounds: int, fleet: DeviceFleet, strategy: Any, local: dict[int, float]
) -> dict[str, Any]:
    """``final.by_tier``: accuracy, baseline, participation and time per device tier."""
    out: dict[str, Any] = {}
    for i, (tier, model) in enumerate(zip(fleet.tiers, fleet.models, strict=True)):
        members = [p for p in sorted(strategy.node_of) if fleet.tier_index(p) == i]
        accs = [strategy.latest_accuracy[p] for p in members if p in strategy.latest_accuracy]
        base = [local[p] for p in members if p in local]
        st = strategy.tier_stats.get(tier.name, {})
        slots = len(members) * rounds
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


def attack_summary(cfg: FedkdConfig, accuracy: dict[int, float]) -> dict[str, Any] | None:
    """Who was malicious and how honest and malicious clients ended (None without attack)."""
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
