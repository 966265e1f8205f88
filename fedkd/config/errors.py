"""Schema validation with one-line errors: the key, its value and what is allowed.

Pydantic's ``ValidationError`` becomes a :class:`~fedkd.errors.ConfigError` of one line
(the CLI prints it and exits 2); :func:`value_error` and :func:`rule_error` give the
registry and cross-table checks of :mod:`fedkd.validation` the same form.
"""

from __future__ import annotations

import datetime as _dt
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from fedkd.config.run import FedkdConfig
from fedkd.config.section import allowed_values
from fedkd.errors import ConfigError


def format_error(err: ValidationError, data: Any) -> str:
    """One line for the first error: the key, its value and what is allowed.

    Errors of one field name it (``devices.tiers[0].share``) and show its value; errors of
    a whole table or of several fields (model validators) show no table, but the value of
    every ``section.key`` their message mentions.
    """
    first = err.errors()[0]
    loc, field, model = _walk_loc(first["loc"])
    key = _key(loc)
    msg = " ".join(first["msg"].removeprefix("Value error, ").split())
    if first["type"] == "extra_forbidden":
        parent = _walk_loc(loc[:-1])[2]
        allowed = ", ".join(parent.model_fields) if parent else "?"
        where = f"in [{_key(loc[:-1])}]" if len(loc) > 1 else "at top level"
        return f"unknown config key '{key}'; allowed {where}: {allowed}"
    if first["type"] == "missing":
        what = f" ({field.description})" if field is not None and field.description else ""
        return f"missing config key {key}: it is required{what}"
    value = first.get("input")
    if field is None or isinstance(value, dict):
        # a table or a cross-field rule: name the fields, never dump the table
        where = f" [{key}]" if key else ""
        return f"invalid config{where}: {msg}{_mentioned_values(msg, data)}"
    allowed = allowed_values(field)
    if allowed and "allowed" not in msg:
        msg = f"{msg} (allowed: {allowed})"
    return f"invalid config value {key}={_show(value)}: {msg}"


def _walk_loc(
    loc: tuple[Any, ...],
) -> tuple[tuple[Any, ...], Any, type[BaseModel] | None]:
    """Drop pydantic's union tags from ``loc``; the field it ends on and the table it is in.

    Returns ``(clean loc, FieldInfo or None, model of the last table or None)``.
    """
    model: type[BaseModel] | None = FedkdConfig
    ann: Any = None
    field = None
    out: list[Any] = []
    for part in loc:
        if isinstance(part, int) and typing.get_origin(ann) is list:
            out.append(part)
            item = typing.get_args(ann)[0]
            model = item if isinstance(item, type) and issubclass(item, BaseModel) else None
            ann, field = item, None
            continue
        if model is None or str(part) not in model.model_fields:
            if model is not None:
                out.append(part)  # an unknown key of a table: the error names it
            # else a union member tag under a field, such as 'float': dropped
            continue
        out.append(part)
        field = model.model_fields[str(part)]
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is not None:
            field = None
    return tuple(out), field, model


def _key(loc: tuple[Any, ...]) -> str:
    """``('devices', 'tiers', 0, 'share')`` -> ``devices.tiers[0].share``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any, limit: int = 80) -> str:
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mentioned_values(msg: str, data: Any) -> str:
    """`` [a.b=1, c.d='x']``: the values of the dotted keys ``msg`` names without a value."""
    shown = []
    for key in dict.fromkeys(re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+\b", msg)):
        if re.search(re.escape(key) + r"\s*=", msg):
            continue
        found, value = _lookup(data, key.split("."))
        if found and not isinstance(value, dict | list):
            shown.append(f"{key}={_show(value, 60)}")
    return f" [{', '.join(shown)}]" if shown else ""


def _lookup(data: Any, path: list[str]) -> tuple[bool, Any]:
    """The value of ``path`` in the raw config ``data``, else its default."""
    model: Any = FedkdConfig
    node = data
    for part in path:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return False, None
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if node is _MISSING and model is None:
            if field.is_required():
                return False, None
            return True, field.get_default(call_default_factory=True)
    return (node is not _MISSING and model is None), node


_MISSING = object()


def validate_schema(data: dict[str, Any]) -> FedkdConfig:
    """Validate a nested dict against the schema into a :class:`FedkdConfig`.

    Types, bounds and formats only: :func:`fedkd.validation.check_config` adds the
    registry and cross-table checks.

    Raises
    ------
    ConfigError
        One line naming the first wrong key, its value and what is allowed.

    """
    try:
        return FedkdConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_error(err, data)) from None


def value_error(key: str, value: Any, msg: str) -> ConfigError:
    """The one-line error of a wrong value of ``key`` (as the schema reports it).

    ``invalid config value KEY=VALUE: MSG``, e.g. for a name that is not registered.
    """
    return ConfigError(f"invalid config value {key}={_show(value)}: {' '.join(msg.split())}")


def rule_error(msg: str, data: Any) -> ConfigError:
    """The one-line error of a rule across keys: ``invalid config: MSG [key=value, ...]``.

    Every dotted key ``msg`` names without a value is shown with its value in the raw
    config ``data`` (or its default).
    """
    msg = " ".join(msg.split())
    return ConfigError(f"invalid config: {msg}{_mentioned_values(msg, data)}")
