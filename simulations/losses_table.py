"""Run the quickstart once per distillation loss, compression and cross-modal view; write
``docs/losses.md``.

    python simulations/losses_table.py [--out runs/losses-table] [--only hint,int8]

Each row is ``fedkd run simulations/quickstart.toml`` with the row's ``--set`` overrides.
Results are kept in ``OUT/table.json`` (a rerun skips rows already measured unless
``--force``) and copied to ``docs/results/losses_table.json``; ``docs/losses.md``
(``--doc``) is rewritten from them (a test checks it matches). Formulas and
papers come from the method files of :mod:`fedkd.losses` (one row per registered
method, in :func:`fedkd.losses.catalogue` order), so the doc cannot drift from the code.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fedkd
from fedkd.losses import METHODS, catalogue

LOSS_ROWS = [m.name for m in catalogue()]
LONGER_ROWS: dict[str, tuple[str, list[str]]] = {
    "response_20": ("response, 20 rounds", ["rounds=20"]),
    "born_again_20": (
        "born_again, 20 rounds = 2 generations of 10",
        ["distill.loss=born_again", "rounds=20"],
    ),
}
COMPRESSION_ROWS: dict[str, tuple[str, list[str]]] = {
    "fp16": ("fp16 logits", ["compression.soft_labels=fp16"]),
    "int8": ("int8, one fp16 scale per centred row", ["compression.soft_labels=int8"]),
    "topk": ("top-3 logits + one remainder logit", ["compression.soft_labels=topk"]),
    "proxy_half": ("fp32, half of the proxy rows per round", ["strategy.proxy_fraction=0.5"]),
    "hint_fp16": (
        "hint with fp16 teacher features",
        ["distill.loss=hint", "compression.features=fp16"],
    ),
    "rkd_proj32": (
        "rkd with teacher features projected to 32 dimensions",
        ["distill.loss=rkd", "distill.rkd_projection=32"],
    ),
}
REFERENCE = {"hint_fp16": "hint", "rkd_proj32": "rkd"}
"""Compression rows compared with another loss row than ``response``."""
TEACHER_FREE_ROWS: dict[str, tuple[str, list[str]]] = {
    "response_dsfl": (
        "dsfl, no teachers: clients distil the server's consensus of their uploads",
        ["strategy.name=dsfl", "teachers.count=0"],
    ),
    "mutual_dsfl": (
        "the same plus 2 co-located mutual-learning peers per device",
        ["distill.loss=mutual", "strategy.name=dsfl", "teachers.count=0"],
    ),
}
VIEW_ROWS: dict[str, tuple[str, list[str]]] = {
    "view_downsample4": (
        "students see 1/4 resolution (length 10), teachers the full signal",
        ["data.student_view=downsample:4"],
    ),
    "view_crop": (
        "students see the first half of the signal (positions 0-19), teachers all of it",
        ["data.student_view=crop:0:20"],
    ),
    "view_downsample4_dsfl": (
        "1/4 resolution, teacher-free federated baseline (dsfl, no teachers)",
        ["data.student_view=downsample:4", "strategy.name=dsfl", "teachers.count=0"],
    ),
}


def rows() -> dict[str, list[str]]:
    """Every row's overrides, by row id."""
    out = {name: [f"distill.loss={name}"] for name in LOSS_ROWS}
    out.update({k: v[1] for k, v in LONGER_ROWS.items()})
    out.update({k: v[1] for k, v in COMPRESSION_ROWS.items()})
    out.update({k: v[1] for k, v in TEACHER_FREE_ROWS.items()})
    out.update({k: v[1] for k, v in VIEW_ROWS.items()})
    return out


def measure(config: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """One quickstart run; the figures the table shows."""
    s = fedkd.run(config, overrides=overrides, out=out, overwrite=True).summary
    rounds = s["rounds"]
    comm = s["communication"]
    return {
        "overrides": overrides,
        "mean": s["final"]["student_accuracy_mean"],
        "p10": s["final"]["student_accuracy_p10"],
        "local_only": s["baselines"]["local_only_accuracy_mean"],
        "teacher": s["final"]["teacher_accuracy"],
        "assistants": s["distill"]["assistants"],
        "train_down_per_round": comm["by_phase_down"].get("train", 0) / rounds,
        "train_up_per_round": comm["by_phase_up"].get("train", 0) / rounds,
        "bytes_down": comm["bytes_down"],
        "bytes_up": comm["bytes_up"],
        "wall_time_s": s["wall_time_s"],
        "student_input_shape": s["dataset"]["student_input_shape"],
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (pipes escaped, also in code spans)."""
    return text.replace("|", "\\|")


def _mb(v: float) -> str:
    return f"{v / 1e6:.2f} MB"


Cells = Callable[[str, dict[str, Any]], list[str]]


def _table_rows(
    specs: dict[str, tuple[str, list[str]]], results: dict[str, Any], cells: Cells, width: int
) -> list[str]:
    """One Markdown row per spec: label, ``--set``, then ``cells(key, result)`` or "not run"."""
    out = []
    for key, (label, sets) in specs.items():
        r = results.get(key)
        values = cells(key, r) if r else ["not run"]
        values += [""] * (width - 2 - len(values))
        out.append(f"| {label} | `{' '.join(sets)}` | " + " | ".join(values) + " |")
    return out


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """``docs/losses.md`` from the measured rows."""
    base = results.get("response")
    lines = [
        "# Distillation losses, soft-label compression and cross-modal views",
        "",
        "Generated by `python simulations/losses_table.py` (do not edit by hand). Every row is",
        "`fedkd run simulations/quickstart.toml` (MNIST-1D, 20 clients, Dirichlet(0.3), 3 CNN",
        "teachers, `cnn:width=16,depth=2` students, 10 rounds x 5 local epochs, every client",
        "every round) with the row's `--set` overrides. Accuracy is the students' mean test",
        "accuracy after the last round. Bytes are the protobuf sizes of the serialized train",
        "Messages per round (all 20 clients together), down (server to clients) and up.",
        f"Measured {meta.get('date', '?')} on {meta.get('machine', '?')}.",
        "",
        "Every catalogue method trains on",
        "`alpha * [soft_target(s, t, T) + beta * term] + (1 - alpha) * CE(private)`, where",
        "`alpha` (`distill.alpha`, 0.7 here) weighs the *distillation* side and `beta`",
        "(`distill.beta`, default per method) the method's own term; `soft_target` is",
        "`T^2 KL(softmax(t/T) || softmax(s/T))` with batchmean reduction, T = 4.",
        "",
        "## Losses",
        "",
        "| `distill.loss` | knowledge | formula (distillation side) | paper | default beta | "
        "mean acc. | p10 | down / round | up / round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in LOSS_ROWS:
        m = METHODS[name]
        r = results.get(name)
        acc = (_pct(r["mean"]), _pct(r["p10"])) if r else ("not run", "")
        down = _mb(r["train_down_per_round"]) if r else "-"
        up = _mb(r["train_up_per_round"]) if r else "-"
        beta = "-" if m.default_beta == 0 else f"{m.default_beta:g}"
        if m.params:
            beta += "; " + ", ".join(f"{k} = {v:g}" for k, v in m.params.items())
        lines.append(
            f"| `{name}` ({m.kind}) | {m.knowledge} | `{_cell(m.formula)}` | {m.paper} | {beta} | "
            f"{acc[0]} | {acc[1]} | {down} | {up} |"
        )
    lines += [
        "",
        "Config keys: `distill.loss` selects the row; `distill.beta` overrides the method's",
        "weight; `distill.params` sets a method's own parameters by name (a method that",
        "declares any lists their defaults after its beta); `distill.feature_teacher`",
        "(hint, rkd) picks the teacher whose last-block",
        "features travel (features of different teachers have unrelated channels, so they",
        "are not averaged; attention maps are averaged over all teachers);",
        "`compression.features = fp16` halves those bytes; `distill.generations`",
        "(born_again) cuts the rounds into generations, each starting a fresh student taught",
        "by the previous one; `distill.peers` (mutual) sets the co-located students per",
        "device (peer 0 reports and uploads); `distill.assistants` and",
        "`distill.assistant_epochs` (takd) set the server's assistant chain, largest first.",
        "`hint`, `rkd` and `attention` need the server's teachers; `born_again` and `mutual`",
        "also work without (e.g. `strategy.name=dsfl`, below). Methods with a client-side",
        "term train one client after another even on the vectorized engine.",
    ]
    lines += [
        "",
        "A born-again generation starts from a fresh student, so with 10 rounds the second",
        "generation has only 5 rounds to catch up. Given time (same seed, 20 rounds):",
        "",
        "| row | `--set` | mean acc. | p10 |",
        "|---|---|---|---|",
    ]
    lines += _table_rows(
        LONGER_ROWS, results, lambda _k, r: [_pct(r["mean"]), _pct(r["p10"])], width=4
    )
    ta = (results.get("takd") or {}).get("assistants")
    if ta:
        chain = ", ".join(f"`{a['spec']}` {_pct(a['test_accuracy'])}" for a in ta)
        lines += ["", f"`takd` assistant chain (test accuracy): {chain}."]
    if lines[-1]:
        lines.append("")
    lines += [
        "## Soft-label compression",
        "",
        "| row | `--set` | mean acc. | vs fp32 | down / round | vs fp32 | up / round |",
        "|---|---|---|---|---|---|---|",
    ]
    if base:
        lines.append(
            f"| fp32 (reference) | - | {_pct(base['mean'])} | - | "
            f"{_mb(base['train_down_per_round'])} | 100% | {_mb(base['train_up_per_round'])} |"
        )

    def compression_cells(key: str, r: dict[str, Any]) -> list[str]:
        ref = results.get(REFERENCE.get(key, "response"))
        down = r["train_down_per_round"]
        return [
            _pct(r["mean"]),
            f"{100 * (r['mean'] - ref['mean']):+.2f} pt" if ref else "-",
            _mb(down),
            f"{100 * down / ref['train_down_per_round']:.1f}%" if ref else "-",
            _mb(r["train_up_per_round"]),
        ]

    lines += _table_rows(COMPRESSION_ROWS, results, compression_cells, width=7)
    lines += [
        "",
        "(`hint_fp16` is compared with `hint`, `rkd_proj32` with `rkd`, the other rows",
        "with `response`.)",
        "",
        "## Online (mutual) learning without a pre-trained teacher",
        "",
        "Between devices, the server's consensus of the clients' uploads (`dsfl`: entropy-",
        "reduced mean of the probabilities) is what peers learn from; on a device,",
        "`distill.loss=mutual` adds co-located peers.",
        "",
        "| row | `--set` | mean acc. | p10 | local-only | down / round | up / round |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += _table_rows(
        TEACHER_FREE_ROWS,
        results,
        lambda _k, r: [
            _pct(r["mean"]),
            _pct(r["p10"]),
            _pct(r["local_only"]),
            _mb(r["train_down_per_round"]),
            _mb(r["train_up_per_round"]),
        ],
        width=7,
    )
    lines += [
        "",
        "## Cross-modal views",
        "",
        "Teachers see `data.teacher_view` (here the full signal), students `data.student_view`:",
        "`full`, `downsample:K` (mean of every K positions), `crop:A:B` (positions A..B-1),",
        "`channels:I,J` (sensors of (C, L) data), `noise:S` (fixed Gaussian noise) or",
        "`array:NAME` (another array of your npz with one row per sample, e.g. a second",
        "modality). Teachers train and label the proxy set on their view; students see",
        "theirs of the same proxy rows, of their private data and of the test set.",
        '"Local-only" is the same students on the same view trained on their private data',
        "alone (no teacher, no federation), measured in the same run.",
        "",
        "| row | `--set` | student input | mean acc. | local-only | gain |",
        "|---|---|---|---|---|---|",
    ]

    def view_cells(_key: str, r: dict[str, Any]) -> list[str]:
        local = r["local_only"]
        gain = f"{100 * (r['mean'] - local):+.2f} pt" if local is not None else "-"
        return [str(tuple(r["student_input_shape"])), _pct(r["mean"]), _pct(local), gain]

    lines += _table_rows(VIEW_ROWS, results, view_cells, width=6)
    lines += ["", "Wall times (contended 2-core machine unless noted):", ""]
    for key, r in results.items():
        lines.append(f"- `{key}`: {r['wall_time_s']:.0f} s")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simulations/quickstart.toml")
    parser.add_argument("--out", default="runs/losses-table")
    parser.add_argument("--only", default="", help="comma-separated row ids")
    parser.add_argument("--force", action="store_true", help="rerun rows already measured")
    parser.add_argument("--doc", default="docs/losses.md")
    parser.add_argument(
        "--results", default="docs/results/losses_table.json", help="measured rows, kept"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "table.json"
    store = json.loads(path.read_text()) if path.is_file() else {"rows": {}, "meta": {}}
    chosen = [r for r in args.only.split(",") if r]
    for key, overrides in rows().items():
        if chosen and key not in chosen:
            continue
        if key in store["rows"] and not args.force:
            continue
        t0 = time.perf_counter()
        store["rows"][key] = measure(args.config, overrides, out / key)
        store["meta"] = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        }
        path.write_text(json.dumps(store, indent=2))
        print(key, f"{time.perf_counter() - t0:.0f} s", json.dumps(store["rows"][key]), flush=True)
    Path(args.results).write_text(json.dumps(store, indent=2) + "\n")
    Path(args.doc).write_text(render(store["rows"], store["meta"]))
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
