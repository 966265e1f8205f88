"""``fedkd`` command line: a thin typer shell over :func:`fedkd.run` and :mod:`fedkd.compare`.

Bad input (config, data, flags) prints one line ``error: ...`` and exits with code 2.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fedkd.errors import FedkdInputError, RunFailed


class _OneLineUsageGroup(typer.core.TyperGroup):
    """Usage errors (unknown option, missing or malformed flag value) as one line, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
            _fail(where + err.format_message())


app = typer.Typer(
    cls=_OneLineUsageGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="fedkd: federated multi-teacher knowledge distillation on Flower.",
)
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    message = " ".join(str(message).split())  # always one line
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_OS_RESOURCE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EMFILE}


def _fail_os(err: OSError, where: object = None) -> None:
    """One line for a file the command could not read or write, naming the path.

    ``where`` (the run directory) is named when the error carries no file name (a write
    that failed on a full disk). A path the user gave that cannot be used (permissions,
    not a directory, read-only) is input: exit 2; a full disk or an I/O error is not:
    exit 1.
    """
    path = err.filename if err.filename is not None else (where or "a file")
    other = f" -> {err.filename2}" if err.filename2 is not None else ""
    reason = err.strerror or type(err).__name__
    code = 1 if err.errno in _OS_RESOURCE_ERRORS else 2
    _fail(f"cannot use {path}{other}: {reason}", code=code)


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, show_time=False)
    # RichHandler shows the level itself; without a formatter basicConfig would add its
    # own "LEVEL:name:" prefix to every message
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True
    )
    logging.getLogger("fedkd").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.WARNING)


def _flag_overrides(**flags: str | None) -> list[str]:
    names = {"num_clients": "num_clients", "rounds": "rounds", "seed": "seed", "engine": "engine"}
    return [f"{names[k]}={v}" for k, v in flags.items() if v is not None]


@contextmanager
def _showing(progress: Progress) -> Iterator[None]:
    """Show ``progress`` while the block runs; on an error, leave no bars behind.

    The error message is then the one line the user sees.
    """
    with progress:
        try:
            yield
        except BaseException:
            progress.live.transient = True
            raise


def _progress_bars() -> Progress:
    """The rich progress display of ``run`` and ``compare`` (on stderr)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class _RunProgress:
    """Rich progress bar: one step per round, accuracy so far, ETA."""

    def __init__(self, rounds: int) -> None:
        self.progress = _progress_bars()
        self.task = self.progress.add_task("starting", total=rounds, acc="")

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "status":
            self.progress.update(self.task, description=str(info["text"]))
        elif event == "round":
            acc = info.get("student_accuracy_mean")
            p10 = info.get("student_accuracy_p10")
            text = f"acc {100 * acc:.1f}% p10 {100 * p10:.1f}%" if acc is not None else ""
            if info.get("rejected"):
                text += f" rejected {info['rejected']}"
            self.progress.update(self.task, advance=1, acc=text, description="rounds")


class _CompareProgress(_RunProgress):
    """Two bars: runs finished (of all), and the current run's rounds.

    The rounds bar is labelled ``strategy (seed S) i/N``. The display starts with the
    first run, so input errors found before it print alone.
    """

    def __init__(self, total: int) -> None:
        self.progress = _progress_bars()
        self.runs = self.progress.add_task("runs", total=total, acc="")
        self.task = self.progress.add_task("waiting", total=None, acc="")
        self.label = ""
        self.failed = 0

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "run_start":
            self.progress.start()
            self.label = f"{info['strategy']} (seed {info['seed']}) {info['index']}/{info['total']}"
            self.progress.reset(
                self.task, total=info["rounds"], description=f"{self.label}: starting", acc=""
            )
        elif event == "run_end":
            if info["status"] != "ok":
                self.failed += 1
                self.progress.console.print(
                    f"[red]failed:[/red] {escape(self.label)}: {escape(str(info['error']))}",
                    highlight=False,
                    soft_wrap=True,
                )
            done = f"{self.failed} failed" if self.failed else ""
            self.progress.update(self.runs, advance=1, acc=done)
        elif event == "status":
            self.progress.update(self.task, description=f"{self.label}: {info['text']}")
        elif event == "round":
            super().__call__(event, info)
            self.progress.update(self.task, description=f"{self.label}: rounds")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _summary_table(summary: dict[str, Any], out: Path) -> Table:
    f, b, c = summary["final"], summary["baselines"], summary["communication"]
    table = Table(title=f"fedkd {summary['strategy']} - {out}", show_header=False)
    table.add_row(
        "students: mean / p10 / min",
        " / ".join(_pct(f[f"student_accuracy_{k}"]) for k in ("mean", "p10", "min")),
    )
    teachers = summary["models"]["teachers"]
    if teachers:
        each = ", ".join(_pct(t["test_accuracy"]) for t in teachers)
        cached = " (cached)" if all(t["cached"] for t in teachers) else ""
        table.add_row(
            f"teacher ensemble ({len(teachers)}: {each}){cached}", _pct(f["teacher_accuracy"])
        )
    params = ", ".join(f"{t['parameters']:,}" for t in teachers) or "-"
    table.add_row(
        "parameters: teachers / student",
        f"{params} / {summary['models']['student']['parameters']:,}",
    )
    table.add_row("local-only baseline (mean)", _pct(b["local_only_accuracy_mean"]))
    table.add_row(
        "bytes down / up", f"{c['bytes_down'] / 1e6:.1f} MB / {c['bytes_up'] / 1e6:.1f} MB"
    )
    table.add_row("rejected replies", str(summary["rejected_replies"]))
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    return table


@app.command()
def run(
    config: Annotated[
        str | None, typer.Argument(help="Scenario TOML file.", show_default=False)
    ] = None,
    num_clients: Annotated[
        str | None, typer.Option("--num-clients", help="Override num_clients.")
    ] = None,
    rounds: Annotated[str | None, typer.Option("--rounds", help="Override rounds.")] = None,
    seed: Annotated[str | None, typer.Option("--seed", help="Override seed.")] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="Override engine: inprocess, vectorized, ray.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted.key=value override (repeatable).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Run directory (default a new runs/<name>-<time>); must be new or empty.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Let --out be an earlier fedkd run directory: its files are removed first.",
        ),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue a killed run from its directory (after its last completed round).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Run a federated distillation simulation and write its run directory."""
    from fedkd.api import run as run_api
    from fedkd.config import load_config
    from fedkd.experiment import default_out_dir
    from fedkd.results import check_out_dir

    _setup_logging(verbose)
    if resume is not None:
        given = (set_, num_clients, rounds, seed, engine)
        if config is not None or out is not None or overwrite or any(given):
            _fail(
                "--resume DIR continues a run as configured; give no CONFIG, --set, --out "
                "or --overwrite"
            )
        _resume_run(resume)
        return
    if config is None:
        _fail(
            "missing CONFIG argument: give a scenario TOML file, e.g. simulations/quickstart.toml"
        )
    overrides = [
        *(set_ or []),
        *_flag_overrides(num_clients=num_clients, rounds=rounds, seed=seed, engine=engine),
    ]
    try:
        cfg = load_config(config, overrides)
        out_dir = check_out_dir(out, overwrite) if out is not None else default_out_dir(cfg)
        bar = _RunProgress(cfg.rounds)
        with _showing(bar.progress):
            result = run_api(cfg, out=out_dir, progress=bar, overwrite=overwrite)
    except FedkdInputError as err:
        _fail(str(err))
    except RunFailed as err:
        _fail(str(err), code=1)
    except OSError as err:
        _fail_os(err, out or "the run directory")
    except KeyboardInterrupt:
        console.print("interrupted; completed rounds are in metrics.jsonl of the run directory")
        raise typer.Exit(130) from None
    console.print(_summary_table(result.summary, out_dir))
    console.print(f"wrote {out_dir}/ (summary.json, metrics.jsonl, config.json, accuracy.png)")


def _resume_run(run_dir: Path) -> None:
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
        _fail(str(err))
    try:
        bar = _RunProgress(rounds)
        with _showing(bar.progress):
            result = run_api(resume=run_dir, progress=bar)
    except FedkdInputError as err:
        _fail(str(err))
    except RunFailed as err:
        _fail(str(err), code=1)
    except OSError as err:
        _fail_os(err, run_dir)
    except KeyboardInterrupt:
        console.print("interrupted; run `fedkd run --resume` again to continue")
        raise typer.Exit(130) from None
    console.print(_summary_table(result.summary, run_dir))
    console.print(f"wrote {run_dir}/ (summary.json, metrics.jsonl, config.json, accuracy.png)")


@app.command()
def compare(
    config: Annotated[
        str | None, typer.Argument(help="Scenario TOML file.", show_default=False)
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            "--strategies", help="Comma-separated strategy names, e.g. multi_teacher,local."
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2 (default: the config's)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="dotted.key=value override for every run (repeatable)."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Compare folder (default a new runs/<name>-compare-<time>); new or empty.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Let --out be an earlier compare folder: its files are removed first.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Run several strategies (and seeds) on one config; write a comparison table and plot."""
    from fedkd.compare import compare as compare_api
    from fedkd.compare import parse_list, parse_seeds, validate_strategies
    from fedkd.strategies import STRATEGY_REGISTRY

    _setup_logging(verbose)
    if config is None:
        _fail(
            "missing CONFIG argument: give a scenario TOML file, e.g. simulations/quickstart.toml"
        )
    if strategies is None:
        _fail(
            "missing --strategies: give comma-separated strategy names; "
            f"allowed: {STRATEGY_REGISTRY.allowed()}"
        )
    try:
        names = validate_strategies(parse_list(strategies))
        seed_list = parse_seeds(seeds) if seeds is not None else None
        bar = _CompareProgress(len(names) * (len(seed_list) if seed_list else 1))
        try:
            result = compare_api(
                config, names, seed_list, out, set_ or [], progress=bar, overwrite=overwrite
            )
        finally:
            bar.progress.stop()
    except FedkdInputError as err:
        _fail(str(err))
    except OSError as err:
        _fail_os(err, out or "the compare folder")
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


@app.command()
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
        _fail("missing RUN_DIR argument: give a finished run directory, e.g. runs/quickstart")
    from fedkd.checkpoint import latest_checkpoint
    from fedkd.privacy.membership import attack_run
    from fedkd.results import RunDirLock

    if not (run_dir / "config.json").is_file():
        _fail(f"{run_dir}: not a finished fedkd run directory (no config.json)")
    try:
        latest_checkpoint(run_dir)  # a crafted or corrupt checkpoint is refused before any work
        with RunDirLock(run_dir), console.status("membership inference"):
            report = attack_run(run_dir, reference_epochs)
    except FedkdInputError as err:
        _fail(str(err))
    except OSError as err:
        _fail_os(err, run_dir)
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
    console.print(table)
    console.print(f"wrote {run_dir}/attack.json and attack_roc.png")


@app.command("config")
def config_cmd(
    config: Annotated[str | None, typer.Argument(help="Scenario TOML to resolve.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted.key=value override.")
    ] = None,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema of every key.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the config reference (markdown).")
    ] = False,
) -> None:
    """Print the resolved config, the JSON schema (--schema) or the reference (--markdown)."""
    from fedkd.config import FedkdConfig, load_config, schema_markdown

    if schema:
        print(json.dumps(FedkdConfig.model_json_schema(), indent=2))
        return
    if markdown:
        print(schema_markdown())
        return
    try:
        print(load_config(config, set_ or []).to_json())
    except FedkdInputError as err:
        _fail(str(err))


deploy_app = typer.Typer(
    cls=_OneLineUsageGroup,
    no_args_is_help=True,
    help="Certificates, keys and commands for deployment.",
)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("init")
def deploy_init(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for certs/, keys/, flwr-home/: new (its parent must exist) or empty; "
            "not a symbolic link.",
        ),
    ] = Path("deploy"),
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="SuperLink IP address or DNS name devices dial (repeatable; default 127.0.0.1).",
        ),
    ] = None,
    devices: Annotated[
        int, typer.Option("--devices", help="Number of device key pairs (1-10000).")
    ] = 2,
    port: Annotated[int, typer.Option("--port", help="SuperLink port (1-65535).")] = 9092,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an earlier 'deploy init' in --out: delete its certs/, keys/ and "
            "flwr-home/ first (no stale key survives).",
        ),
    ] = False,
) -> None:
    """Write a CA, the SuperLink's TLS certificate and one key pair per device; print commands."""
    from fedkd.deploy import check_devices, commands, init_deployment

    hosts = host or ["127.0.0.1"]
    try:
        check_devices(devices)
        dep = init_deployment(
            out, hosts, [f"device-{i}" for i in range(devices)], port, force=force
        )
    except FedkdInputError as err:
        _fail(str(err))
    print(
        f"wrote {dep.root}: certs/ (CA, server certificate for {', '.join(dep.hosts)}), "
        f"keys/ ({devices} device{'s' * (devices != 1)}), flwr-home/config.toml"
    )
    print("copy certs/ca.crt and keys/device-I to device I; never copy certs/*.key off the server")
    for where, cmd in commands(dep):
        print(f"[{where}] {cmd}")


@deploy_app.command("register")
def deploy_register(
    folder: Annotated[Path, typer.Argument(help="Folder written by 'fedkd deploy init'.")] = Path(
        "deploy"
    ),
    connection: Annotated[
        str, typer.Option("--connection", help="flwr connection name.")
    ] = "fedkd",
) -> None:
    """Register every device public key under FOLDER/keys with the running SuperLink."""
    import os
    import subprocess

    from fedkd.deploy import check_connection, fingerprint, public_keys

    try:
        check_connection(connection)
        pubs = public_keys(folder)
    except FedkdInputError as err:
        _fail(str(err))
    env = dict(os.environ)
    if "FLWR_HOME" not in env:
        home = (folder / "flwr-home").resolve()
        if not (home / "config.toml").is_file():
            _fail(
                f"no flwr-home/config.toml in {folder} and FLWR_HOME is not set; "
                "run 'fedkd deploy init' first or set FLWR_HOME"
            )
        env["FLWR_HOME"] = str(home)
    flwr = Path(sys.executable).parent / "flwr"
    failed = 0
    for pub in pubs:
        try:
            proc = subprocess.run(
                [str(flwr), "supernode", "register", os.path.abspath(pub), connection],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            ok = proc.returncode == 0
            # success: flwr's last line; failure: its error (a boxed panel) as one line
            detail = (proc.stdout.strip().splitlines() or [""])[-1]
            if not ok:
                boxed = proc.stderr.translate(
                    str.maketrans("", "", "\u2502\u256d\u256e\u2570\u256f\u2500")
                )
                detail = " ".join(boxed.split()) or detail
        except subprocess.TimeoutExpired:
            ok, detail = False, "no answer within 120 s"
        failed += not ok
        print(
            f"{pub.name} ({fingerprint(pub.read_bytes())}): "
            f"{'registered' if ok else 'FAILED'} {detail}".rstrip()
        )
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except FedkdInputError as err:  # pragma: no cover - raised outside commands
        console.print(f"error: {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
