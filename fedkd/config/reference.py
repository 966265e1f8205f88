"""The Markdown reference of every config key (``fedkd config --markdown``, docs/config.md)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from fedkd.config.run import FedkdConfig
from fedkd.config.section import allowed_values


def schema_markdown() -> str:
    """Markdown reference of every config key, its type, default and description."""
    lines = [
        "# fedkd configuration reference",
        "",
        "Generated from `fedkd/config/` by `fedkd config --markdown`.",
        "",
    ]

    def section(model: type[BaseModel], prefix: str) -> None:
        title = f"`[{prefix}]`" if prefix else "top level"
        lines.extend(
            [
                f"## {title}",
                "",
                (model.__doc__ or "").strip(),
                "",
                "| key | type | default | description |",
                "|---|---|---|---|",
            ]
        )
        subs = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subs.append((ann, f"{prefix}.{name}" if prefix else name))
                continue
            default = field.get_default(call_default_factory=True)
            type_name = getattr(ann, "__name__", str(ann)).replace("typing.", "")
            bounds = allowed_values(field).partition(" in ")[2]
            if bounds:
                type_name += f" in {bounds}"
            key = f"{prefix}.{name}" if prefix else name
            lines.append(
                f"| `{key}` | {type_name} | `{json.dumps(default)}` | {field.description or ''} |"
            )
        lines.append("")
        for sub, p in subs:
            section(sub, p)

    section(FedkdConfig, "")
    return "\n".join(lines)
