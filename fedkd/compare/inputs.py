"""Checks of ``fedkd compare`` input: seeds, strategy names, per-run overrides."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from fedkd.errors import ConfigError

SEEDS_ALLOWED = "comma-separated integers >= 0, e.g. 0,1,2"


def parse_list(text: str) -> list[str]:
    """Split a comma-separated command-line value into stripped, non-empty items.

    Parameters
    ----------
    text : str
        E.g. ``"multi_teacher, local"``.

    Returns
    -------
    list of str
        The items; empty items (``"a,,b"``) are dropped.

    """
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_seeds(text: str) -> list[int]:
    """Parse ``--seeds`` (``"0,1,2"``) into a list of non-negative ints.

    Raises
    ------
    ConfigError
        One line naming the bad item and what is allowed.

    """
    items = parse_list(text)
    if not items:
        raise ConfigError(f"seeds={text!r}: no seed given; allowed: {SEEDS_ALLOWED}")
    for item in items:
        if not item.isdigit():
            raise ConfigError(
                f"seeds={text!r}: {item!r} is not a non-negative integer; allowed: {SEEDS_ALLOWED}"
            )
    return validate_seeds([int(item) for item in items])


def validate_seeds(seeds: Iterable[Any]) -> list[int]:
    """Check that seeds are distinct non-negative integers (``bool`` is not a seed).

    Raises
    ------
    ConfigError
        One line naming the bad seed and what is allowed.

    """
    out: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(
                f"seed {seed!r} is not a non-negative integer; allowed: {SEEDS_ALLOWED}"
            )
        if int(seed) in out:
            raise ConfigError(f"seed {seed} is given twice; give each seed once")
        out.append(int(seed))
    if not out:
        raise ConfigError(f"no seed given; allowed: {SEEDS_ALLOWED}")
    return out


def validate_strategies(names: Iterable[str]) -> list[str]:
    """Check strategy names against the strategy registry (any registered name is fine).

    Raises
    ------
    ConfigError
        One line naming the unknown (or repeated) names and the registered ones.

    """
    from fedkd.strategies.catalogue import STRATEGY_REGISTRY

    names = list(names)
    allowed = STRATEGY_REGISTRY.allowed()
    if not names:
        raise ConfigError(f"no strategy given; allowed: {allowed}")
    unknown = [n for n in names if n not in STRATEGY_REGISTRY]
    if unknown:
        what = "strategy" if len(unknown) == 1 else "strategies"
        listed = ", ".join(repr(n) for n in unknown)
        raise ConfigError(f"unknown {what} {listed}; allowed: {allowed}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"strategy {repeated[0]!r} is given twice; give each strategy once")
    return names


def run_overrides(overrides: Sequence[str], strategy: str, seed: int) -> list[str]:
    """The user's overrides plus ``strategy.name`` and ``seed`` of one run (these win)."""
    return [*overrides, f"strategy.name={strategy}", f"seed={seed}"]


def run_dir_name(strategy: str, seed: int) -> str:
    """``<strategy>-seed<S>``: a run's folder inside the compare folder."""
    return f"{strategy}-seed{seed}"


# ---------------------------------------------------------------------------------------
