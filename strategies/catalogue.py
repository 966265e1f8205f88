"""Every built-in strategy, registered: import the registry from here to see them all.

Importing this module imports each built-in strategy module once, and each registers its
factories with :func:`fedkd.strategies.register_strategy`. A new built-in strategy is one
new module plus its line below.
"""

from __future__ import annotations

from fedkd.strategies import (  # noqa: F401 - imported to register their strategies
    STRATEGY_REGISTRY,
    centralized,
    client_fusion,
    multi_teacher,
    register_strategy,
    strategy_class,
    weights,
)

__all__ = ["STRATEGY_REGISTRY", "register_strategy", "strategy_class"]
