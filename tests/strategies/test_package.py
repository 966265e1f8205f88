"""The strategies package: a light registry, built-ins registered by the catalogue."""

import ast

from fedkd.strategies.catalogue import STRATEGY_REGISTRY, strategy_class
from fedkd.strategies.client_fusion import FedMD

from ..conftest import ROOT


def test_package_init_imports_nothing_above_the_registry():
    tree = ast.parse((ROOT / "strategies" / "__init__.py").read_text())
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert {m for m in imported if m.startswith("fedkd")} == {"fedkd.registry"}


def test_catalogue_registers_every_builtin_strategy():
    builtin = {"multi_teacher", "fedmd", "dsfl", "hybrid", "local", "fedavg", "feddf"}
    assert builtin | {"centralized_kd"} <= set(STRATEGY_REGISTRY)
    assert strategy_class("fedmd") is FedMD
    assert strategy_class("nope") is None
