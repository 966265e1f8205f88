"""What every ``fedkd`` command shares: the typer app, one-line errors, logging, progress bars.

Bad input (config, data, flags) prints one line ``error: ...`` and exits with code 2.
"""

from __future__ import annotations

import errno
import logging
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


class OneLineUsageGroup(typer.core.TyperGroup):
    """Usage errors (unknown option, missing or malformed flag value) as one line, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Invoke the command; a usage error becomes one ``error:`` line."""
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
            fail(where + err.format_message())


app = typer.Typer(
    cls=OneLineUsageGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="fedkd: federated multi-teacher knowledge distillation on Flower.",
)
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one line and exit with ``code``."""
    message = " ".join(str(message).split())  # always one line
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_OS_RESOURCE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EMFILE}


def fail_os(err: OSError, where: object = None) -> None:
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
    fail(f"cannot use {path}{other}: {reason}", code=code)


def setup_logging(verbose: bool) -> None:
    """Log through rich on stderr: INFO with ``--verbose``, else warnings only."""
    handler = RichHandler(console=console, show_path=False, show_time=False)
    # RichHandler shows the level itself; without a formatter basicConfig would add its
    # own "LEVEL:name:" prefix to every message
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True
    )
    logging.getLogger("fedkd").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.WARNING)


def flag_overrides(**flags: str | None) -> list[str]:
    """``key=value`` overrides of the shortcut flags that were given."""
    names = {"num_clients": "num_clients", "rounds": "rounds", "seed": "seed", "engine": "engine"}
    return [f"{names[k]}={v}" for k, v in flags.items() if v is not None]


@contextmanager
def showing(progress: Progress) -> Iterator[None]:
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


class RunProgress:
    """Rich progress bar: one step per round, accuracy so far, ETA."""

    def __init__(self, rounds: int) -> None:
        self.progress = _progress_bars()
        self.task = self.progress.add_task("starting", total=rounds, acc="")

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        """Show a ``status`` text or advance one ``round``."""
        if event == "status":
            self.progress.update(self.task, description=str(info["text"]))
        elif event == "round":
            acc = info.get("student_accuracy_mean")
            p10 = info.get("student_accuracy_p10")
            text = f"acc {100 * acc:.1f}% p10 {100 * p10:.1f}%" if acc is not None else ""
            if info.get("rejected"):
                text += f" rejected {info['rejected']}"
            self.progress.update(self.task, advance=1, acc=text, description="rounds")


class CompareProgress(RunProgress):
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
        """Follow compare's ``run_start``/``run_end`` and each run's own events."""
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


def summary_table(summary: dict[str, Any], out: Path) -> Table:
    """The table ``fedkd run`` prints at the end: accuracies, sizes, traffic, time."""
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


ConfigArg = Annotated[str | None, typer.Argument(help="Scenario TOML file.", show_default=False)]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")]

MISSING_CONFIG = (
    "missing CONFIG argument: give a scenario TOML file, e.g. simulations/quickstart.toml"
)


@contextmanager
def run_errors(where: object, interrupted: str) -> Iterator[None]:
    """Map what a run raises to the command's exit: bad input 2, a failed run 1, Ctrl-C 130.

    Parameters
    ----------
    where : path or str
        Named in the error line of an OS error that carries no file name.
    interrupted : str
        Printed on Ctrl-C.

    """
    try:
        yield
    except FedkdInputError as err:
        fail(str(err))
    except RunFailed as err:
        fail(str(err), code=1)
    except OSError as err:
        fail_os(err, where)
    except KeyboardInterrupt:
        console.print(interrupted)
        raise typer.Exit(130) from None
