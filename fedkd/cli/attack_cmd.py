"""``fedkd attack``: membership inference on a finished run's students and teachers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedkd.cli.shell import console, fail, fail_os
from fedkd.errors import FedkdInputError


def attack(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A finished run directory.", show_default=False)
    ] = None,
    reference_epochs: Annotated[
        int, typer.Option("--reference-epochs", min=1, help="Epochs of the reference models.")
    ] = 30,
) -> None:
    """Membership inference on a run's students and teachers: attack.json, attack_roc.png."""
    if run_dir is None:
        fail("missing RUN_DIR argument: give a finished run directory, e.g. runs/quickstart")
    from fedkd.checkpoint import latest_checkpoint
    from fedkd.privacy.membership import attack_run
    from fedkd.results import RunDirLock

    if not (run_dir / "config.json").is_file():
        fail(f"{run_dir}: not a finished fedkd run directory (no config.json)")
    try:
        latest_checkpoint(run_dir)  # a crafted or corrupt checkpoint is refused before any work
        with RunDirLock(run_dir), console.status("membership inference"):
            report = attack_run(run_dir, reference_epochs)
    except FedkdInputError as err:
        fail(str(err))
    except OSError as err:
        fail_os(err, run_dir)
    console.print(attack_table(run_dir, report))
    console.print(f"wrote {run_dir}/attack.json and attack_roc.png")


def attack_table(run_dir: Path, report: dict[str, Any]) -> Table:
    """One row per attacked model: members, loss-attack and reference-attack AUC and TPR."""
    table = Table(title=f"membership inference - {run_dir}")
    for col in ("model", "members", "loss AUC", "loss TPR@1%FPR", "ref AUC", "ref TPR@1%FPR"):
        table.add_column(col)
    for name, m in report["models"].items():
        table.add_row(
            name,
            str(m["members"]),
            f"{m['loss']['auc']:.3f}",
            f"{m['loss']['tpr_at_1pct_fpr']:.3f}",
            f"{m['reference']['auc']:.3f}",
            f"{m['reference']['tpr_at_1pct_fpr']:.3f}",
        )
    return table
