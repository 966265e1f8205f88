import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny.toml"


def pytest_configure(config):
    # every test run gets its own data/teacher cache, shared with the subprocesses it starts
    if "FEDKD_TEST_KEEP_CACHE" not in os.environ:
        os.environ["FEDKD_CACHE"] = tempfile.mkdtemp(prefix="fedkd-test-cache-")


def pytest_unconfigure(config):
    cache = os.environ.get("FEDKD_CACHE", "")
    if "fedkd-test-cache-" in cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def tiny_config():
    return TINY


def fedkd_cmd(*args: str) -> list[str]:
    """The fedkd command line, run through this interpreter."""
    return [sys.executable, "-m", "fedkd", *args]


def load_script(relative: str, name: str):
    """Import a script of the repository (not a package module) by its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in a script look their module up here
    spec.loader.exec_module(module)
    return module


def without_keys(obj, drop: set[str]):
    """``obj`` (nested dicts and lists) with the keys in ``drop`` removed at every depth."""
    if isinstance(obj, dict):
        return {k: without_keys(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [without_keys(v, drop) for v in obj]
    return obj
