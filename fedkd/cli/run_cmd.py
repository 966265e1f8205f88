"""``fedkd run``: one experiment (or ``--resume`` of a killed one), with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fedkd.cli.shell import (
    MISSING_CONFIG,
    ConfigArg,
    RunProgress,
    VerboseOpt,
    console,
    fail,
    flag_overrides,
    run_errors,
    setup_logging,
    showing,
    summary_table,
)
from fedkd.errors import FedkdInputError

EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="Override engine: inprocess, vectorized, ray.")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="dotted.key=value override (repeatable).")
]
OutOpt = Annotated[
    str | None,
    typer.Option(
        "--out", help="Run directory (default a new runs/<name>-<time>); must be new or empty."
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Let --out be an earlier fedkd run directory: its files are removed first.",
    ),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue a killed run from its directory (after its last completed round).",
    ),
]


def run(
    config: ConfigArg = None,
    num_clients: Annotated[
        str | None, typer.Option("--num-clients", help="Override num_clients.")
    ] = None,
    rounds: Annotated[str | None, typer.Option("--rounds", help="Override rounds.")] = None,
    seed: Annotated[str | None, typer.Option("--seed", help="Override seed.")] = None,
    engine: EngineOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run a federated distillation simulation and write its run directory."""
    from fedkd.api import run as run_api
    from fedkd.experiment import default_out_dir
    from fedkd.results import check_out_dir
    from fedkd.validation import load_config

    setup_logging(verbose)
    if resume is not None:
        given = (set_, num_clients, rounds, seed, engine)
        if config is not None or out is not None or overwrite or any(given):
            fail(
                "--resume DIR continues a run as configured; give no CONFIG, --set, --out "
                "or --overwrite"
            )
        resume_run(resume)
        return
    if config is None:
        fail(MISSING_CONFIG)
    overrides = [
        *(set_ or []),
        *flag_overrides(num_clients=num_clients, rounds=rounds, seed=seed, engine=engine),
    ]
    interrupted = "interrupted; completed rounds are in metrics.jsonl of the run directory"
    with run_errors(out or "the run directory", interrupted):
        cfg = load_config(config, overrides)
        out_dir = check_out_dir(out, overwrite) if out is not None else default_out_dir(cfg)
        bar = RunProgress(cfg.rounds)
        with showing(bar.progress):
            result = run_api(cfg, out=out_dir, progress=bar, overwrite=overwrite)
    console.print(summary_table(result.summary, out_dir))
    console.print(f"wrote {out_dir}/ (summary.json, metrics.jsonl, config.json, accuracy.png)")


def resume_run(run_dir: Path) -> None:
    """``fedkd run --resume RUN_DIR``: continue after the last completed round."""
    from fedkd.api import finished_run, resume_config
    from fedkd.api import run as run_api

    try:
        rounds = resume_config(run_dir).rounds
        if finished_run(run_dir) is not None:  # reads only: no file is changed
            console.print(
                escape(f"run {run_dir} already finished all {rounds} rounds; nothing to do"),
                highlight=False,
                soft_wrap=True,
            )
            return
    except FedkdInputError as err:
        fail(str(err))
    with run_errors(run_dir, "interrupted; run `fedkd run --resume` again to continue"):
        bar = RunProgress(rounds)
        with showing(bar.progress):
            result = run_api(resume=run_dir, progress=bar)
    console.print(summary_table(result.summary, run_dir))
    console.print(f"wrote {run_dir}/ (summary.json, metrics.jsonl, config.json, accuracy.png)")
