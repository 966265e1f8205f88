"""The fedkd config carried by a Flower run config."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from fedkd import keys
from fedkd.config import FedkdConfig
from fedkd.validation import load_config

APP_DIR = Path(__file__).resolve().parents[2]
"""The Flower app directory (the repository root), base of relative ``config`` paths."""


def config_from_run_config(run_config: dict[str, object]) -> FedkdConfig:
    """Resolve the fedkd config carried by a Flower run config.

    In-process engines pass the resolved config as JSON (``fedkd-config-json``); ``flwr run``
    passes a TOML path (``config``, absolute or relative to the app directory) and
    ``overrides`` (``;``-separated ``dotted.key=value``). An empty run config (as
    ``flwr.simulation.run_simulation`` passes) falls back to the JSON config in the
    ``FEDKD_CONFIG_JSON`` environment variable when it is set.

    Parameters
    ----------
    run_config : dict
        The Flower run config (``context.run_config``).

    Returns
    -------
    FedkdConfig
        The validated config (cached per JSON blob).

    """
    blob = run_config.get(keys.RUN_CONFIG_JSON) or (
        os.environ.get(keys.ENV_CONFIG_JSON) if not run_config else None
    )
    if blob:
        return _config_from_json(str(blob))
    path = Path(str(run_config.get(keys.RUN_CONFIG_PATH, "simulations/quickstart.toml")))
    if not path.is_absolute() and not path.is_file():
        path = APP_DIR / path
    overrides = [o for o in str(run_config.get(keys.RUN_OVERRIDES, "")).split(";") if o.strip()]
    return load_config(path, overrides)


@functools.lru_cache(maxsize=8)
def _config_from_json(blob: str) -> FedkdConfig:
    return FedkdConfig.model_validate(json.loads(blob))
