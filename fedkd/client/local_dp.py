"""The DP parameters a node applies this round: the server's instruction, or its own floor."""

from __future__ import annotations

import functools
import math
from typing import Any

from flwr.app import ConfigRecord, Context

from fedkd import keys
from fedkd.config import FedkdConfig, PrivacyConfig


def dp_parameters(cfg: FedkdConfig, context: Context, conf: ConfigRecord) -> dict[str, Any]:
    """The DP parameters the client applies this round.

    Local client_dp protects the client from the server, so the server's instruction can
    never lower it: when the client's own configuration asks for local DP (its node config
    ``local-dp-noise-multiplier`` / ``local-dp-clip``, set by the device owner, or else the
    scenario it loaded), it applies at least its own noise multiplier with its own clip,
    whatever the instruction says.

    Returns
    -------
    dict
        ``dp_mode``, ``dp_noise``, ``dp_clip``, ``dp_local`` and ``dp_reproducible``, the
        matching fields of :class:`~fedkd.client.train_job.TrainJob`.

    """
    mode = str(conf.get(keys.DP_MODE, ""))
    noise = float(conf.get(keys.DP_NOISE, 0.0))  # type: ignore[arg-type]
    clip = float(conf.get(keys.DP_CLIP, 0.0))  # type: ignore[arg-type]
    local = bool(conf.get(keys.DP_LOCAL, False))
    own = own_local_dp(cfg, context)
    if own is not None:
        own_noise, own_clip, reproducible = own
        return {
            "dp_mode": "client_dp",
            "dp_noise": max(own_noise, noise if mode == "client_dp" and local else 0.0),
            "dp_clip": own_clip,
            "dp_local": True,
            "dp_reproducible": reproducible,
        }
    return {
        "dp_mode": mode,
        "dp_noise": noise,
        "dp_clip": clip,
        "dp_local": local,
        "dp_reproducible": cfg.privacy.reproducible_noise,
    }


def own_local_dp(cfg: FedkdConfig, context: Context) -> tuple[float, float, bool] | None:
    """``(noise multiplier, clip, reproducible)`` of the client's own local DP, or None.

    Raises
    ------
    ValueError
        When the node config's local-DP noise or clip is not finite and positive.

    """
    node = context.node_config
    if keys.NODE_LOCAL_DP_NOISE in node:
        clip = float(node.get(keys.NODE_LOCAL_DP_CLIP, cfg.privacy.clip))  # type: ignore[arg-type]
        noise = float(node[keys.NODE_LOCAL_DP_NOISE])  # type: ignore[arg-type]
        if not (noise > 0 and math.isfinite(noise) and clip > 0 and math.isfinite(clip)):
            raise ValueError(
                f"node config {keys.NODE_LOCAL_DP_NOISE}={noise} / {keys.NODE_LOCAL_DP_CLIP}="
                f"{clip}: both must be finite and > 0"
            )
        return noise, clip, False  # a device owner's floor: always cryptographic noise
    p = cfg.privacy
    if p.mode != "client_dp" or not p.local:
        return None
    return _planned_local_noise(p, cfg.rounds), p.clip, p.reproducible_noise


@functools.lru_cache(maxsize=8)
def _planned_local_noise(p: PrivacyConfig, rounds: int) -> float:
    """Local client_dp's noise multiplier from the client's own config (q = 1)."""
    from fedkd.privacy.accounting import planned_noise

    return planned_noise(p, 1.0, rounds)
