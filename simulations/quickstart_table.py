"""Run the quickstart with other client counts, Dirichlet alphas and seeds; write a table.

    python simulations/quickstart_table.py [--out runs/quickstart-table]

Writes ``table.json`` and ``table.md`` (the README's robustness table) in the out folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fedkd

VARIANTS: list[tuple[str, list[str]]] = [
    ("quickstart (20 clients, alpha 0.3, seed 0)", []),
    ("seed 1", ["seed=1"]),
    ("seed 2", ["seed=2"]),
    ("alpha 0.1", ["partition.alpha=0.1"]),
    ("alpha 0.05", ["partition.alpha=0.05"]),
    ("5 clients", ["num_clients=5"]),
    ("50 clients", ["num_clients=50"]),
    ("100 clients", ["num_clients=100"]),
    ("200 clients", ["num_clients=200"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simulations/quickstart.toml")
    parser.add_argument("--out", default="runs/quickstart-table")
    parser.add_argument("--only", default="", help="comma-separated variant numbers")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "table.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    chosen = {int(i) for i in args.only.split(",") if i}
    for i, (label, overrides) in enumerate(VARIANTS):
        if chosen and i not in chosen:
            continue
        s = fedkd.run(args.config, overrides=overrides, out=out / f"v{i}", overwrite=True).summary
        results[label] = {
            "overrides": overrides,
            "mean": s["final"]["student_accuracy_mean"],
            "p10": s["final"]["student_accuracy_p10"],
            "local_only": s["baselines"]["local_only_accuracy_mean"],
            "teacher": s["final"]["teacher_accuracy"],
            "wall_time_s": s["wall_time_s"],
        }
        results_path.write_text(json.dumps(results, indent=2))
        print(label, json.dumps(results[label]), flush=True)
    lines = [
        "| run | `--set` | students mean | p10 | local-only | teacher ensemble | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {' '.join(r['overrides']) or '-'} | {100 * r['mean']:.1f}% | "
            f"{100 * r['p10']:.1f}% | {100 * r['local_only']:.1f}% | {100 * r['teacher']:.1f}% | "
            f"{r['wall_time_s']:.0f} s |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
