"""``fedkd compare``: several strategies (and seeds) on one config, one table and plot."""

from __future__ import annotations

from typing import Annotated

import typer

from fedkd.cli.shell import (
    MISSING_CONFIG,
    CompareProgress,
    ConfigArg,
    VerboseOpt,
    console,
    fail,
    fail_os,
    setup_logging,
)
from fedkd.errors import FedkdInputError

StrategiesOpt = Annotated[
    str | None,
    typer.Option("--strategies", help="Comma-separated strategy names, e.g. multi_teacher,local."),
]
SeedsOpt = Annotated[
    str | None,
    typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2 (default: the config's)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="dotted.key=value override for every run (repeatable)."),
]
OutOpt = Annotated[
    str | None,
    typer.Option(
        "--out", help="Compare folder (default a new runs/<name>-compare-<time>); new or empty."
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Let --out be an earlier compare folder: its files are removed first."
    ),
]


def compare(
    config: ConfigArg = None,
    strategies: StrategiesOpt = None,
    seeds: SeedsOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run several strategies (and seeds) on one config; write a comparison table and plot."""
    from fedkd.compare import compare as compare_api
    from fedkd.compare import parse_list, parse_seeds, validate_strategies
    from fedkd.strategies.catalogue import STRATEGY_REGISTRY

    setup_logging(verbose)
    if config is None:
        fail(MISSING_CONFIG)
    if strategies is None:
        fail(
            "missing --strategies: give comma-separated strategy names; "
            f"allowed: {STRATEGY_REGISTRY.allowed()}"
        )
    try:
        names = validate_strategies(parse_list(strategies))
        seed_list = parse_seeds(seeds) if seeds is not None else None
        bar = CompareProgress(len(names) * (len(seed_list) if seed_list else 1))
        try:
            result = compare_api(
                config, names, seed_list, out, set_ or [], progress=bar, overwrite=overwrite
            )
        finally:
            bar.progress.stop()
    except FedkdInputError as err:
        fail(str(err))
    except OSError as err:
        fail_os(err, out or "the compare folder")
    except KeyboardInterrupt:
        where = f"{out}/compare.json" if out else "compare.json of the compare folder"
        console.print(f"interrupted; finished runs are in {where}")
        raise typer.Exit(130) from None
    print(result.markdown, end="")
    console.print(
        f"wrote {result.out_dir}/ (compare.json, compare.md, compare.png, one folder per run)"
    )
    if result.failed:
        console.print(f"[red]{len(result.failed)} of {len(result.runs)} runs failed[/red]")
        raise typer.Exit(1)
