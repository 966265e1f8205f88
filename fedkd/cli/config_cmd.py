"""``fedkd config``: the resolved config, its JSON schema or its markdown reference."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fedkd.cli.shell import fail
from fedkd.errors import FedkdInputError


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
    from fedkd.config import FedkdConfig
    from fedkd.config.reference import schema_markdown
    from fedkd.validation import load_config

    if schema:
        print(json.dumps(FedkdConfig.model_json_schema(), indent=2))
        return
    if markdown:
        print(schema_markdown())
        return
    try:
        print(load_config(config, set_ or []).to_json())
    except FedkdInputError as err:
        fail(str(err))
