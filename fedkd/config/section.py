"""Base of every config table, the global limits, and what a field's bounds allow."""

from __future__ import annotations

import datetime as _dt
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

MAX_INT_VALUE = 2**53
"""Safety net: no integer config value may exceed this in size (each field also has its own
sane maximum; every float must be finite, see ``Section``)."""
MAX_CLASSES = 10_000
"""Most classes a dataset may have (labels 0..MAX_CLASSES-1); also bounds class counts."""
MAX_SAMPLES = 100_000_000
"""Largest split size (a count) a config may ask for."""
MAX_BATCH = 1_048_576
"""Largest mini-batch size."""
MAX_SECONDS = 30 * 24 * 3600.0
"""Longest timeout or deadline, in seconds (30 days)."""


class Section(BaseModel):
    """Base of every config table: frozen, unknown keys refused, every float finite.

    One generic check runs on every field before its own validation: TOML dates/times,
    ``true``/``false`` where a number is expected, and integers beyond ``MAX_INT_VALUE``
    are refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_value(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, _dt.date | _dt.time):
            raise ValueError(
                "a TOML date/time is not a value of any fedkd key (quote it for a string)"
            )
        field = cls.model_fields.get(info.field_name or "")
        kinds = field_kinds(field.annotation) if field is not None else set()
        if type(v) is bool and bool not in kinds and kinds & {int, float}:
            raise ValueError("true/false is not a number")
        bounded = field is not None and any(
            getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
            for m in field.metadata
        )
        if type(v) is int and abs(v) > MAX_INT_VALUE and not bounded:
            raise ValueError(f"integer too large (at most {MAX_INT_VALUE} in size)")
        return v


def field_kinds(annotation: Any) -> set[Any]:
    """The plain types of a field annotation (``float | int | None`` -> {float, int, None})."""
    args = typing.get_args(annotation)
    if not args or typing.get_origin(annotation) is Literal:
        return {annotation}
    return {k for a in args for k in field_kinds(a)}


Size = float | int


def _number(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}" if float(f"{v:g}") == v else repr(v)


def allowed_values(field: Any) -> str:
    """What a numeric field allows, from its bounds: e.g. ``an integer in [1, 100000]``."""
    kinds = field_kinds(field.annotation)
    if not kinds & {int, float}:
        return ""
    lo = hi = ""
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            lo = f"[{_number(m.ge)}"
        elif getattr(m, "gt", None) is not None:
            lo = f"({_number(m.gt)}"
        elif getattr(m, "le", None) is not None:
            hi = f"{_number(m.le)}]"
        elif getattr(m, "lt", None) is not None:
            hi = f"{_number(m.lt)})"
    what = "an integer" if float not in kinds else "a finite number"
    if lo and hi:
        what += f" in {lo}, {hi}"
    elif lo:
        what += f" {'>=' if lo[0] == '[' else '>'} {lo[1:]}"
    elif hi:
        what += f" {'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"
    return what + (" or unset" if type(None) in kinds else "")
