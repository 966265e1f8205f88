"""Each message's timeout is its own: a slow client cannot make other clients' replies late."""

import threading
import time

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedkd.engines.cohort_grid import CohortGrid
from fedkd.engines.inprocess import NODE_ID_OFFSET, InProcessGrid

from . import test_ray

ray_tmp = test_ray.ray_tmp  # the fixture: Ray processes a test leaves are stopped by PID


def slow_app(slow: int, seconds: float, calls: list) -> ClientApp:
    """Answers at once, except partition ``slow``, which first sleeps ``seconds``."""
    app = ClientApp()

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        calls.append((pid, threading.current_thread().name))
        if pid == slow:
            time.sleep(seconds)
        n = int(context.state.config_records.get("c", ConfigRecord({"n": 0}))["n"]) + 1
        context.state["c"] = ConfigRecord({"n": n})
        return Message(RecordDict({"m": MetricRecord({"pid": pid, "n": n})}), reply_to=msg)

    return app


def _send(grid: InProcessGrid, n: int, timeout: float) -> dict[int, int]:
    msgs = [
        Message(RecordDict({"c": ConfigRecord({})}), NODE_ID_OFFSET + i, MessageType.EVALUATE)
        for i in range(n)
    ]
    replies = grid.send_and_receive(msgs, timeout=timeout)
    return {int(r.content["m"]["pid"]): int(r.content["m"]["n"]) for r in replies}


def _vectorized(app: ClientApp, n: int, workers: int) -> CohortGrid:
    def no_train(*args, **kwargs):  # only evaluate messages in these tests
        raise AssertionError("no train messages expected")

    return CohortGrid(app, no_train, n, {}, workers=workers)


@pytest.mark.parametrize("engine", ["inprocess", "vectorized"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_hung_client_delays_no_one_else(engine, workers):
    calls: list = []
    app = slow_app(slow=0, seconds=2.0, calls=calls)
    grid = (
        InProcessGrid(app, 6, {}, workers=workers)
        if engine == "inprocess"
        else _vectorized(app, 6, workers)
    )
    t0 = time.monotonic()
    # partition 0 comes first and holds a worker past its 0.5 s deadline: before, every
    # message queued behind it (all of them with one worker) counted as no reply
    got = _send(grid, 6, timeout=0.5)
    took = time.monotonic() - t0
    assert got == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert took < 1.8  # no one waited for the hung call to end
    # while its late call runs, the node is busy: no second, concurrent call on its Context
    assert _send(grid, 6, timeout=0.5) == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    assert [pid for pid, _ in calls].count(0) == 1
    grid.close()  # waits for the late call to end
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("fedkd-"))
    # the late call did run to its end on the node's own Context (as a device would) and
    # only its reply was dropped: the node answers again, one call later
    assert _send(grid, 1, timeout=5.0) == {0: 2}


def test_every_message_gets_its_full_timeout_even_when_queued():
    # 4 clients of 0.3 s each on one worker take 1.2 s in all; a 0.5 s timeout counted
    # from the phase start would cut off the last two
    calls: list = []
    app = ClientApp()

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        time.sleep(0.3)
        pid = int(context.node_config["partition-id"])
        calls.append(pid)
        return Message(RecordDict({"m": MetricRecord({"pid": pid, "n": 1})}), reply_to=msg)

    grid = InProcessGrid(app, 4, {}, workers=1)
    assert _send(grid, 4, timeout=0.5) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert calls == [0, 1, 2, 3]  # one at a time, in order
    grid.close()


def test_ray_a_hung_actor_is_replaced_and_delays_no_one_else(ray_tmp, monkeypatch):
    from fedkd.engines.ray_engine import RayGrid
    from fedkd.validation import load_config

    from ..conftest import TINY

    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cfg = load_config(TINY, ["ray.num_cpus=2", "threads=1"])
    grid = RayGrid(cfg, 5, {}, app_ref="tests.engines.slow_app:app")
    try:
        t0 = time.monotonic()
        # two actors: partition 0 hangs on one; before, the queue behind it timed out
        got = _send(grid, 5, timeout=3.0)
        assert got == {1: 1, 2: 1, 3: 1, 4: 1}
        assert time.monotonic() - t0 < 20
        # the hung actor was killed and replaced: the next phase is answered in full
        # except by the slow node, whose state never changed
        assert _send(grid, 5, timeout=3.0) == {1: 2, 2: 2, 3: 2, 4: 2}
    finally:
        grid.close()
