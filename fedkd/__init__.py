"""fedkd: federated multi-teacher knowledge distillation on Flower.

Python API::

    import fedkd
    result = fedkd.run("simulations/quickstart.toml", overrides=["rounds=3"])
    result.summary["final"]["student_accuracy_mean"]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _map_strategies_folder() -> None:
    """Import the top-level ``strategies/`` folder as ``fedkd.strategies``.

    An installed fedkd (wheel or editable) maps it through setuptools' ``package-dir``.
    From a bare source tree or a Flower FAB (``fedkd/`` and ``strategies/`` side by
    side, not installed), this does the same mapping by hand.
    """
    name = f"{__name__}.strategies"
    if name in sys.modules:
        return
    try:
        if importlib.util.find_spec(name) is not None:
            return
    except ImportError:
        pass
    folder = Path(__file__).resolve().parent.parent / "strategies"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover - broken checkout
        raise ImportError(f"cannot find fedkd.strategies (looked in {folder})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_map_strategies_folder()

from fedkd.api import run  # noqa: E402
from fedkd.config import FedkdConfig  # noqa: E402
from fedkd.data import register_dataset  # noqa: E402
from fedkd.engines import register_engine  # noqa: E402
from fedkd.losses import hinton_loss, register_loss, soft_target_loss  # noqa: E402
from fedkd.models import register_model  # noqa: E402
from fedkd.strategies import register_strategy  # noqa: E402
from fedkd.strategies.fusion import register_fusion  # noqa: E402
from fedkd.validation import load_config  # noqa: E402

__all__ = [
    "FedkdConfig",
    "hinton_loss",
    "load_config",
    "register_dataset",
    "register_engine",
    "register_fusion",
    "register_loss",
    "register_model",
    "register_strategy",
    "run",
    "soft_target_loss",
]
