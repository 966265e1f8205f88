"""Config sources: TOML files in, ``dotted.key=value`` overrides applied (dicts out)."""

from __future__ import annotations

import datetime as _dt
import tomllib
from pathlib import Path
from typing import Any

from fedkd.errors import ConfigError


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with one-line errors for missing or broken files."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory; give a scenario TOML file")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {p}: cannot read it ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {p} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start}); TOML files must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"config file {p} is not valid TOML: {reason}") from None


def _parse_value(raw: str) -> Any:
    """Parse an override value as a TOML value; bare words stay strings."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return raw if isinstance(value, _dt.date | _dt.time) else value


def _plain_copy(value: Any) -> Any:
    """A deep copy of nested dicts and lists (tuples become lists); leaves are shared."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a nested config dict (returns a copy).

    Values are parsed as TOML (``3``, ``0.5``, ``true``, ``["a", "b"]``); anything that is
    not valid TOML is taken as a string, so ``--set data.name=npz:/tmp/x.npz`` works.
    List items are addressed as ``key[N]``: ``--set devices.tiers[0].student=mlp``.
    Pydantic then coerces and validates the types.
    """
    out: dict[str, Any] = _plain_copy(data)
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"malformed override '{item}'; use dotted.key=value")
        path: list[str | int] = []
        for part in key.split("."):
            name, bracket, index = part.partition("[")
            if name:
                path.append(name)
            if bracket:
                if not (index.endswith("]") and index[:-1].isdigit()):
                    raise ConfigError(f"malformed override '{item}'; list items are key[N]")
                path.append(int(index[:-1]))
        node: Any = out
        for step, nxt in zip(path[:-1], path[1:], strict=True):
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    size = len(node) if isinstance(node, list) else 0
                    raise ConfigError(f"override '{item}': no item [{step}] (the list has {size})")
                node = node[step]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"override '{item}': '{step}' is not in a table")
                node = node.setdefault(step, [] if isinstance(nxt, int) else {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"override '{item}': '{step}' is not a table")
        last = path[-1]
        value = _parse_value(raw.strip())
        if isinstance(last, int):
            if not isinstance(node, list) or last > len(node):
                raise ConfigError(f"override '{item}': no item [{last}] to set")
            node[last : last + 1] = [value]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{last}' is not in a table")
            node[last] = value
    return out
