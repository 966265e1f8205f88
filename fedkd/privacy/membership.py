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

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

from fedkd import seeds
from fedkd.config import FedkdConfig
from fedkd.data import client_partitions, make_splits
from fedkd.errors import ConfigError
from fedkd.models import build_model, build_seeded_model
from fedkd.results import write_json
from fedkd.teachers import build_teachers, teacher_rows
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
    from fedkd.client.node_state import student_weights
    from fedkd.engines.inprocess import NODE_ID_OFFSET
    from fedkd.state_store import ClientStateStore

    return student_weights(ClientStateStore(run / "client_state").load(NODE_ID_OFFSET + node))


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
    x_proxy = torch.from_numpy(splits.x(splits.proxy[idx]))
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

    Parameters
    ----------
    run_dir : path
        A finished run directory (``config.json`` and ``client_state/``).
    reference_epochs : int
        Epochs of the reference models trained on the population split.

    Returns
    -------
    dict
        The report written to ``attack.json``.

    """
    run = Path(run_dir)
    if not (run / "config.json").is_file() or not (run / "client_state").is_dir():
        raise ConfigError(
            f"{run}: not a finished fedkd run directory (needs config.json and client_state/)"
        )
    cfg = load_config(json.loads((run / "config.json").read_text()))
    attack = _Attack(cfg, reference_epochs)
    parts = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)
    attacked = _attack_students(attack, run, parts)
    if cfg.teachers.count:
        _attack_teachers(attack)
    view = _server_view_model(cfg, run, attack.splits)
    if view is not None:
        model, spec = view
        pooled = np.concatenate([np.asarray(r) for r in parts if len(r)])
        pick = attack.rng.choice(pooled, size=min(len(pooled), 2000), replace=False)
        attack.add("server_view_of_clients", model, spec, pick)
    report, curves = _report(run, attack.scores, attacked, reference_epochs)
    write_json(run / "attack.json", report)
    _plot_roc(curves, run / "attack_roc.png")
    return report


class _Rows:
    """``rows -> standardised samples`` of the splits (uint8 images converted per call)."""

    def __init__(self, splits: Any) -> None:
        self.splits = splits

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self.splits.x(rows)


class _Attack:
    """The attack's state: population and non-member pools, reference models, scores.

    The test split is halved: the population (reference models train on it) and the
    outside (non-members, drawn with the members' class histogram).
    """

    def __init__(self, cfg: FedkdConfig, reference_epochs: int) -> None:
        self.cfg = cfg
        self.reference_epochs = reference_epochs
        self.splits = splits = make_splits(cfg.data, cfg.seed)
        self.x_all, self.y_all = _Rows(splits), splits.data.y
        test = seeds.rng(cfg.seed, "membership.test").permutation(splits.test)
        self.population, self.outside = test[: len(test) // 2], test[len(test) // 2 :]
        self.rng = seeds.rng(cfg.seed, "membership.pairs")
        self.references: dict[str, Any] = {}
        self.scores: dict[str, dict[str, list[np.ndarray]]] = {}
        y_all, outside = self.y_all, self.outside
        self.by_class = {c: outside[y_all[outside] == c] for c in np.unique(y_all)}

    def reference(self, spec: str) -> Any:
        """The reference model of ``spec`` (trained once, on the population)."""
        if spec not in self.references:
            pop = self.population
            self.references[spec] = _reference(
                self.cfg, spec, self.x_all[pop], self.y_all[pop], self.reference_epochs
            )
        return self.references[spec]

    def matched(self, members: np.ndarray) -> np.ndarray:
        """Non-members with the members' class histogram.

        Clients hold skewed labels: uniform non-members would let the class alone
        separate the two.
        """
        out = []
        for c, n in zip(*np.unique(self.y_all[members], return_counts=True), strict=True):
            pool = self.by_class.get(c, self.outside)
            out.append(self.rng.choice(pool, size=n, replace=n > len(pool)))
        return np.concatenate(out)

    def add(self, family: str, model: Any, spec: str, members: np.ndarray) -> None:
        """Score ``model`` on ``members`` and matched non-members under ``family``."""
        x_all, y_all = self.x_all, self.y_all
        non = self.matched(members)
        ref = self.reference(spec)
        fam = self.scores.setdefault(family, {k: [] for k in ("lm", "ln", "rm", "rn")})
        lm = per_sample_loss(model, x_all[members], y_all[members])
        ln = per_sample_loss(model, x_all[non], y_all[non])
        fam["lm"].append(-lm)
        fam["ln"].append(-ln)
        fam["rm"].append(per_sample_loss(ref, x_all[members], y_all[members]) - lm)
        fam["rn"].append(per_sample_loss(ref, x_all[non], y_all[non]) - ln)


def _attack_students(attack: _Attack, run: Path, parts: list[Any]) -> int:
    """Attack each saved student on its own data and on teacher data; how many were."""
    cfg, splits = attack.cfg, attack.splits
    shape, k = splits.data.input_shape, splits.data.num_classes
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
        attack.add("students", model, spec, np.asarray(rows))
        # what the students learnt of the *teachers'* data (PATE protects this)
        pick = attack.rng.choice(splits.teacher, size=min(len(splits.teacher), 200), replace=False)
        attack.add("students_on_teacher_data", model, spec, pick)
        attacked += 1
    return attacked


def _attack_teachers(attack: _Attack) -> None:
    """Attack each teacher on the rows of the teacher split it trained on."""
    cfg, splits = attack.cfg, attack.splits
    bundle = build_teachers(cfg)
    for i, (spec, model) in enumerate(zip(bundle.specs, bundle.models, strict=True)):
        if bundle.is_given(i):
            continue  # trained elsewhere: the teacher split holds none of its members
        rows = teacher_rows(cfg, i, len(splits.teacher))
        own = splits.teacher[np.unique(rows)] if rows is not None else splits.teacher
        attack.add(f"teacher_{i}", model, spec, own)


def _report(
    run: Path, scores: dict[str, dict[str, list[np.ndarray]]], attacked: int, epochs: int
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, ...]]]:
    """``attack.json``'s content and the ROC curves' scores per model family."""
    report: dict[str, Any] = {
        "run": str(run),
        "privacy": json.loads((run / "summary.json").read_text()).get("privacy")
        if (run / "summary.json").is_file()
        else None,
        "students_attacked": attacked,
        "non_members": "held-out half of the test split",
        "reference_epochs": epochs,
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
    return report, curves


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
