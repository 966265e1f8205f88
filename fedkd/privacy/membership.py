"""Membership inference against a finished run's students and teachers (``fedkd attack``).

Members are samples a model trained on (a client's private data; a teacher's rows of the
teacher split); non-members are held-out test samples no model trained on. The test
split is cut in two seeded halves: *population* (trains the reference models) and
*non-members*. Two attacks score every sample, higher meaning "member":

* ``loss``: the negative cross-entropy of the target model (Yeom et al., 2018).
* ``reference``: the reference model's loss minus the target's (a loss calibrated per
  sample by a model of the same architecture trained on population data; in the spirit
  of Watson et al., 2022 / the offline LiRA of Carlini et al., 2022, with one reference).

Families: ``students`` (each student on its own client's data; students never leave
their devices, so this is what a stolen device reveals), ``server_view_of_clients`` (a
student distilled from the client consensus the server holds, i.e. what the uploads
reveal of the pooled client data; client_dp protects this), ``students_on_teacher_data``
(each student on samples of the teacher split: what distillation carries of the
teachers' data; PATE protects this) and ``teacher_K`` (each teacher on its own rows;
teachers stay on the server).
Per model family the report gives ROC AUC and TPR at 1% FPR (scikit-learn's ROC). For
each target model, non-members are drawn with the members' class histogram (clients hold
skewed labels: otherwise the class alone would separate them).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

from fedkd.config import FedkdConfig
from fedkd.data import client_partitions, make_splits
from fedkd.errors import ConfigError
from fedkd.models import build_model, build_seeded_model
from fedkd.training import fit_supervised, make_optimizer
from fedkd.validation import load_config


def per_sample_loss(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of every sample under ``model`` (eval mode)."""
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        return F.cross_entropy(out, torch.from_numpy(y), reduction="none").numpy()


def roc_summary(members: np.ndarray, non_members: np.ndarray) -> dict[str, float]:
    """ROC AUC and TPR at 1% FPR of scores (higher = member)."""
    scores = np.concatenate([members, non_members])
    truth = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    fpr, tpr, _ = roc_curve(truth, scores)
    return {
        "auc": float(roc_auc_score(truth, scores)),
        "tpr_at_1pct_fpr": float(np.interp(0.01, fpr, tpr)),
    }


def _student_state(run: Path, node: int) -> dict[str, torch.Tensor] | None:
    from fedkd.client_app import _STATE_KEY
    from fedkd.engines.inprocess import NODE_ID_OFFSET
    from fedkd.state_store import ClientStateStore

    state = ClientStateStore(run / "client_state").load(NODE_ID_OFFSET + node)
    if _STATE_KEY not in state:
        return None
    blob = state.config_records[_STATE_KEY]["blob"]
    return torch.load(io.BytesIO(blob), weights_only=True)["model"]  # type: ignore[arg-type]


def _reference(cfg: FedkdConfig, spec: str, x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    splits = make_splits(cfg.data, cfg.seed)
    model = build_seeded_model(spec, splits.data.input_shape, splits.data.num_classes, 97)
    opt = make_optimizer("adam", list(model.parameters()), 1e-2)
    fit_supervised(
        model,
        opt,
        torch.from_numpy(x),
        torch.from_numpy(y),
        epochs=epochs,
        batch_size=128,
        gen=torch.Generator().manual_seed(98),
    )
    return model


def _server_view_model(cfg: FedkdConfig, run: Path, splits: Any) -> tuple[Any, str] | None:
    """What the server (and every client it broadcasts to) can learn of the clients' data.

    A fresh student distilled from the client consensus the strategy holds after the last
    round (the fused uploads; under client_dp, the noisy mean). None when the strategy keeps
    no consensus (e.g. multi_teacher) or the run has no checkpoint.
    """
    from fedkd.checkpoint import latest_checkpoint
    from fedkd.training import fit_distill

    ckpt = latest_checkpoint(run)
    state = ckpt["strategy"] if ckpt is not None else {}
    idx = np.asarray(state.get("consensus_idx", np.zeros(0)), np.int64)
    if not len(idx):
        return None
    targets = torch.from_numpy(np.asarray(state["consensus"], np.float32))
    spec = cfg.student_model(0)
    model = build_seeded_model(spec, splits.data.input_shape, splits.data.num_classes, 99)
    opt = make_optimizer("adam", list(model.parameters()), 1e-2)
    x_proxy = torch.from_numpy(splits.data.x[splits.proxy][idx])
    empty = torch.zeros((0, *x_proxy.shape[1:]))
    fit_distill(
        model,
        opt,
        empty,
        torch.zeros(0, dtype=torch.long),
        x_proxy,
        targets,
        epochs=20,
        batch_size=128,
        temperature=cfg.distill.temperature,
        alpha=1.0,
        gen=torch.Generator().manual_seed(100),
    )
    return model, spec


def attack_run(run_dir: str | Path, reference_epochs: int = 30) -> dict[str, Any]:
    """Attack every student (pooled) and every teacher of the run in ``run_dir``.

    Writes ``attack.json`` and ``attack_roc.png`` there and returns the report.
    """
    run = Path(run_dir)
    if not (run / "config.json").is_file() or not (run / "client_state").is_dir():
        raise ConfigError(
            f"{run}: not a finished fedkd run directory (needs config.json and client_state/)"
        )
    cfg = load_config(json.loads((run / "config.json").read_text()))
    splits = make_splits(cfg.data, cfg.seed)
    x_all, y_all = splits.data.x, splits.data.y
    test = np.random.default_rng([cfg.seed, 51]).permutation(splits.test)
    population, outside = test[: len(test) // 2], test[len(test) // 2 :]
    rng = np.random.default_rng([cfg.seed, 52])
    parts = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)
    shape, k = splits.data.input_shape, splits.data.num_classes
    references: dict[str, Any] = {}

    def reference(spec: str) -> Any:
        if spec not in references:
            references[spec] = _reference(
                cfg, spec, x_all[population], y_all[population], reference_epochs
            )
        return references[spec]

    scores: dict[str, dict[str, list[np.ndarray]]] = {}

    by_class = {c: outside[y_all[outside] == c] for c in np.unique(y_all)}

    def matched(members: np.ndarray) -> np.ndarray:
        """Non-members with the members' class histogram.

        Clients hold skewed labels: uniform non-members would let the class alone
        separate the two.
        """
        out = []
        for c, n in zip(*np.unique(y_all[members], return_counts=True), strict=True):
            pool = by_class.get(c, outside)
            out.append(rng.choice(pool, size=n, replace=n > len(pool)))
        return np.concatenate(out)

    def add(family: str, model: Any, spec: str, members: np.ndarray) -> None:
        non = matched(members)
        ref = reference(spec)
        fam = scores.setdefault(family, {k: [] for k in ("lm", "ln", "rm", "rn")})
        lm = per_sample_loss(model, x_all[members], y_all[members])
        ln = per_sample_loss(model, x_all[non], y_all[non])
        fam["lm"].append(-lm)
        fam["ln"].append(-ln)
        fam["rm"].append(per_sample_loss(ref, x_all[members], y_all[members]) - lm)
        fam["rn"].append(per_sample_loss(ref, x_all[non], y_all[non]) - ln)

    attacked = 0
    for pid, rows in enumerate(parts):
        if len(rows) == 0:
            continue
        state = _student_state(run, pid)
        if state is None:
            continue
        spec = cfg.student_model(pid)
        model = build_model(spec, shape, k)
        model.load_state_dict(state)
        add("students", model, spec, np.asarray(rows))
        # what the students learnt of the *teachers'* data (PATE protects this)
        pick = rng.choice(splits.teacher, size=min(len(splits.teacher), 200), replace=False)
        add("students_on_teacher_data", model, spec, pick)
        attacked += 1
    if cfg.teachers.count:
        from fedkd.teachers import build_teachers, teacher_rows

        bundle = build_teachers(cfg)
        for i, (spec, model) in enumerate(zip(bundle.specs, bundle.models, strict=True)):
            rows = teacher_rows(cfg, i, len(splits.teacher))
            own = splits.teacher[np.unique(rows)] if rows is not None else splits.teacher
            add(f"teacher_{i}", model, spec, own)

    view = _server_view_model(cfg, run, splits)
    if view is not None:
        model, spec = view
        pooled = np.concatenate([np.asarray(r) for r in parts if len(r)])
        pick = rng.choice(pooled, size=min(len(pooled), 2000), replace=False)
        add("server_view_of_clients", model, spec, pick)

    report: dict[str, Any] = {
        "run": str(run),
        "privacy": json.loads((run / "summary.json").read_text()).get("privacy")
        if (run / "summary.json").is_file()
        else None,
        "students_attacked": attacked,
        "non_members": "held-out half of the test split",
        "reference_epochs": reference_epochs,
        "models": {},
    }
    curves = {}
    for fam, s in scores.items():
        lm, ln, rm, rn = (np.concatenate(s[key]) for key in ("lm", "ln", "rm", "rn"))
        report["models"][fam] = {
            "members": len(lm),
            "non_members": len(ln),
            "loss": roc_summary(lm, ln),
            "reference": roc_summary(rm, rn),
        }
        curves[fam] = (lm, ln, rm, rn)
    from fedkd.results import write_json

    write_json(run / "attack.json", report)
    _plot_roc(curves, run / "attack_roc.png")
    return report


def _plot_roc(curves: dict[str, tuple[np.ndarray, ...]], path: Path) -> None:
    from fedkd.plots import plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (title, a, b) in zip(
        axes, [("loss attack", 0, 1), ("reference-model attack", 2, 3)], strict=True
    ):
        for fam, c in curves.items():
            truth = np.concatenate([np.ones(len(c[a])), np.zeros(len(c[b]))])
            fpr, tpr, _ = roc_curve(truth, np.concatenate([c[a], c[b]]))
            ax.plot(fpr, tpr, label=fam)
        ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(1e-3, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
