"""Client threads build Python ASTs only while holding fedkd's parse lock (gh-106905)."""

import ast
import threading
import traceback

import fedkd
from fedkd import parse_lock, training

from .conftest import TINY


class _TrackingLock:
    """An RLock that knows, per thread, whether it is held."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.held = threading.local()

    def __enter__(self):
        self._lock.acquire()
        self.held.depth = getattr(self.held, "depth", 0) + 1
        return self

    def __exit__(self, *exc):
        self.held.depth -= 1
        self._lock.release()


def test_client_threads_parse_npy_headers_and_import_dynamo_only_under_the_lock(
    monkeypatch, tmp_path
):
    lock = _TrackingLock()
    monkeypatch.setattr(parse_lock, "PARSE_LOCK", lock)
    monkeypatch.setattr(training, "PARSE_LOCK", lock)
    monkeypatch.setattr(training, "_FIRST_OPTIMIZER", threading.Event())  # a fresh process
    unlocked: list[str] = []
    seen: list[str] = []
    original = ast.parse

    def parse(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            seen.append(threading.current_thread().name)
            if not getattr(lock.held, "depth", 0):
                unlocked.append("".join(traceback.format_stack(limit=10)))
        return original(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", parse)
    for engine in ("vectorized", "inprocess"):
        fedkd.run(
            TINY,
            # feddf: clients also decode a global model's weights
            overrides=[f"engine={engine}", "strategy.name=feddf", "rounds=1", "workers=2"],
            out=tmp_path / engine,
        )
    assert seen, "no client thread decoded an array: the test no longer exercises the lock"
    assert unlocked == [], unlocked[0]
