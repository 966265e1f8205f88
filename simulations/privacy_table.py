"""Privacy-utility table: every DP mechanism at epsilon 1, 2, 4, 8 and the non-private run.

Runs ``simulations/privacy.toml`` (or ``--config``) once per (mechanism, epsilon), then
``fedkd attack`` on each run, and writes ``docs/privacy.md`` (the table between its
markers) and ``docs/results/privacy_table.json``. Usage::

    python simulations/privacy_table.py [--config C] [--out runs/privacy] [--eps 1,2,4,8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import fedkd
from fedkd.privacy.membership import attack_run
from fedkd.results import write_json

ROOT = Path(__file__).resolve().parents[1]
MECHANISMS = ("client_dp", "pate", "dp_sgd")
# PATE needs many voters: 50 teachers on disjoint shards of the teacher split
PATE_SETS = ["teachers.count=50", "teachers.disjoint=true"]
BEGIN, END = "<!-- privacy-table:begin -->", "<!-- privacy-table:end -->"


def _row(label: str, mech: str, eps: str, run_dir: Path, seconds: float) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    attack = attack_run(run_dir)
    teachers = [m for k, m in attack["models"].items() if k.startswith("teacher")]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "run": label,
        "mechanism": mech,
        "epsilon_target": eps,
        "epsilon": s["privacy"]["epsilon"],
        "noise_multiplier": s["privacy"].get("noise_multiplier"),
        "accuracy_mean": s["final"]["student_accuracy_mean"],
        "accuracy_p10": s["final"]["student_accuracy_p10"],
        "teacher_accuracy": s["final"]["teacher_accuracy"],
        "pate_label_accuracy": s["privacy"].get("pate_label_accuracy"),
        "student_auc_loss": attack["models"]["students"]["loss"]["auc"],
        "student_auc_reference": attack["models"]["students"]["reference"]["auc"],
        "student_teacher_data_auc_loss": attack["models"]["students_on_teacher_data"]["loss"][
            "auc"
        ],
        "student_teacher_data_auc_reference": attack["models"]["students_on_teacher_data"][
            "reference"
        ]["auc"],
        "server_view_auc_loss": attack["models"]
        .get("server_view_of_clients", {})
        .get("loss", {})
        .get("auc"),
        "server_view_auc_reference": attack["models"]
        .get("server_view_of_clients", {})
        .get("reference", {})
        .get("auc"),
        "teacher_auc_loss": mean([m["loss"]["auc"] for m in teachers]),
        "teacher_auc_reference": mean([m["reference"]["auc"] for m in teachers]),
        "snr_mean": s["privacy"].get("snr_mean"),
        "measured": time.strftime("%Y-%m-%d"),
        "wall_s": seconds,
        "dir": str(run_dir),
    }


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _markdown(rows: list[dict], config: str) -> str:
    lines = [
        f"Produced by `python simulations/privacy_table.py` on `{config}`; delta = 1e-5 "
        "everywhere. AUC: membership-inference ROC AUC (0.5 = chance) of the loss attack / "
        "the reference-model attack. SNR: signal-to-noise ratio of client_dp's private "
        "consensus (mean over rounds). Each row says when it was measured.",
        "",
        "| mechanism | target epsilon | epsilon (Opacus RDP) | noise multiplier | students mean | "
        "p10 | students on own data: AUC loss / ref | server's view of client data: AUC "
        "loss / ref | students on teacher data: AUC loss / ref | teachers: AUC loss / ref | "
        "PATE label acc. | SNR | wall | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mechanism']} | {r['epsilon_target']} | {_fmt(r['epsilon'])} | "
            f"{_fmt(r['noise_multiplier'])} | {_fmt(r['accuracy_mean'], True)} | "
            f"{_fmt(r['accuracy_p10'], True)} | {_fmt(r['student_auc_loss'])} / "
            f"{_fmt(r['student_auc_reference'])} | {_fmt(r['server_view_auc_loss'])} / "
            f"{_fmt(r['server_view_auc_reference'])} | "
            f"{_fmt(r['student_teacher_data_auc_loss'])} / "
            f"{_fmt(r['student_teacher_data_auc_reference'])} | {_fmt(r['teacher_auc_loss'])} / "
            f"{_fmt(r['teacher_auc_reference'])} | {_fmt(r['pate_label_accuracy'], True)} | "
            f"{_fmt(r.get('snr_mean'))} | {r['wall_s']:.0f} s | {r.get('measured', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "simulations" / "privacy.toml"))
    ap.add_argument("--out", default="runs/privacy")
    ap.add_argument("--eps", default="1,2,4,8")
    ap.add_argument("--mechanisms", default=",".join(MECHANISMS))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "privacy.md"))
    ap.add_argument(
        "--attack-only",
        action="store_true",
        help="Reuse the runs already in --out (rerun only the attacks; wall = run's own).",
    )
    args = ap.parse_args()
    out = Path(args.out)
    plan = [("non-private", "none", "inf", [])]
    mechs = args.mechanisms.split(",")
    if "pate" in mechs:  # PATE's own teachers, without noise: its epsilon = inf row
        plan.append(("non-private-pate-teachers", "none (PATE's teachers)", "inf", PATE_SETS))
    for mech in mechs:
        for eps in args.eps.split(","):
            sets = [f"privacy.mode={mech}", f"privacy.epsilon={eps}"]
            sets += PATE_SETS if mech == "pate" else []
            plan.append((f"{mech}-eps{eps}", mech, eps, sets))
    # rows of mechanisms not rerun now are kept from the last table (with their date)
    saved = ROOT / "docs" / "results" / "privacy_table.json"
    old = json.loads(saved.read_text()) if saved.is_file() else []
    rows = [r for r in old if r["mechanism"] not in {m for _, m, _, _ in plan}]
    order = {label: i for i, label in enumerate(r["run"] for r in old)}
    for label, mech, eps, sets in plan:
        t0 = time.perf_counter()
        print(f"{label} ...", flush=True)
        if args.attack_only:
            wall = json.loads((out / label / "summary.json").read_text())["wall_time_s"]
        else:
            fedkd.run(args.config, overrides=sets, out=out / label, overwrite=True)
            wall = time.perf_counter() - t0
        rows.append(_row(label, mech, eps, out / label, wall))
        rows.sort(key=lambda r: order.get(r["run"], len(order)))
        write_json(saved, rows)
        r = next(r for r in rows if r["run"] == label)
        print(
            f"  mean {_fmt(r['accuracy_mean'], True)} eps {_fmt(r['epsilon'])} "
            f"student AUC {_fmt(r['student_auc_loss'])}/{_fmt(r['student_auc_reference'])}",
            flush=True,
        )
    doc = Path(args.doc)
    table = _markdown(rows, Path(args.config).name)
    text = doc.read_text() if doc.is_file() else f"# Privacy\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(f"wrote {doc} and docs/results/privacy_table.json")


if __name__ == "__main__":
    main()
