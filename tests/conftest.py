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
