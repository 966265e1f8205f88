"""``fedkd`` command line: a thin typer shell over :func:`fedkd.run` and :mod:`fedkd.compare`.

One file per command (``run_cmd``, ``compare_cmd``, ``attack_cmd``, ``config_cmd``,
``deploy_cmd``); what they share (the typer ``app``, one-line errors, progress bars) is in
:mod:`fedkd.cli.shell`. Bad input (config, data, flags) prints one line ``error: ...`` and
exits with code 2.
"""

from __future__ import annotations

import sys

from fedkd.cli.attack_cmd import attack
from fedkd.cli.compare_cmd import compare
from fedkd.cli.config_cmd import config_cmd
from fedkd.cli.deploy_cmd import deploy_app
from fedkd.cli.run_cmd import run
from fedkd.cli.shell import app, console
from fedkd.errors import FedkdInputError

__all__ = ["app", "main"]

# the commands in the order ``fedkd --help`` lists them
app.command()(run)
app.command()(compare)
app.command()(attack)
app.command("config")(config_cmd)
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except FedkdInputError as err:  # pragma: no cover - raised outside commands
        console.print(f"error: {err}")
        sys.exit(2)
