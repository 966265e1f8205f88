"""The ``[attack]`` and ``[compression]`` tables: what happens to what clients upload."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedkd.config.section import MAX_CLASSES, Section


class AttackConfig(Section):
    """Poisoned clients (robustness studies); the malicious set is drawn with the seed."""

    fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of clients that are malicious, in [0, 1)."
    )
    kind: Literal["random_logits", "label_flip", "scaled_logits"] = Field(
        "random_logits",
        description="'random_logits' (noise instead of logits), 'label_flip' (train on "
        "flipped labels), 'scaled_logits' (logits times attack.scale).",
    )
    scale: float = Field(
        10.0,
        ge=-1e6,
        le=1e6,
        description="'scaled_logits': factor on the logits; 'random_logits': noise std in "
        "units of the honest logits' std.",
    )


class CompressionConfig(Section):
    """Soft labels on the wire (docs: fedkd/compression.py); bytes are counted as sent."""

    soft_labels: Literal["fp32", "fp16", "int8", "topk"] = Field(
        "fp32",
        description="Encoding of soft-target logits: 'fp32', 'fp16', 'int8' (per-row scale, "
        "centred rows) or 'topk' (the k largest logits plus one remainder per row).",
    )
    topk: int = Field(3, ge=1, le=MAX_CLASSES, description="'topk': logits kept per row.")
    features: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="Encoding of teacher features / attention maps (hint, rkd, attention).",
    )
    uplink: bool = Field(
        True, description="Clients encode their uploaded proxy logits the same way."
    )
