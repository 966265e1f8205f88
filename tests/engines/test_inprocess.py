"""The in-process Grid: real Flower Messages, one persistent Context per node."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedkd.engines.inprocess import NODE_ID_OFFSET, InProcessGrid
from fedkd.state_store import ClientStateStore


def make_app(seen: list):
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        seen.append((TaskIdentity.run_id, TaskIdentity.node_id, context.node_id))
        count = int(context.state.config_records.get("c", ConfigRecord({"n": 0}))["n"]) + 1
        context.state["c"] = ConfigRecord({"n": count})
        if context.node_config["partition-id"] == 2:
            raise RuntimeError("boom on node 2")
        return Message(
            RecordDict(
                {
                    "m": MetricRecord(
                        {"count": count, "pid": int(context.node_config["partition-id"])}
                    )
                }
            ),
            reply_to=msg,
        )

    return app


def _round(grid):
    msgs = [
        Message(RecordDict({"c": ConfigRecord({})}), n, MessageType.TRAIN)
        for n in grid.get_node_ids()
    ]
    return list(grid.send_and_receive(msgs))


def test_taskidentity_is_set_around_each_call_and_restored():
    seen: list = []
    grid = InProcessGrid(make_app(seen), 3, {}, run_id=77, workers=1)
    assert (TaskIdentity.run_id, TaskIdentity.node_id) == (77, SUPERLINK_NODE_ID)
    _round(grid)
    assert [s[1] for s in seen] == [NODE_ID_OFFSET, NODE_ID_OFFSET + 1, NODE_ID_OFFSET + 2]
    assert all(s[0] == 77 and s[1] == s[2] for s in seen)
    # back to the server's identity: new instruction messages come from the SuperLink node
    assert TaskIdentity.node_id == SUPERLINK_NODE_ID
    msg = Message(RecordDict(), NODE_ID_OFFSET, MessageType.TRAIN)
    assert msg.metadata.src_node_id == SUPERLINK_NODE_ID and msg.metadata.run_id == 77


@pytest.mark.parametrize(("workers", "on_disk"), [(1, False), (3, False), (3, True)])
def test_context_persists_and_crashes_become_error_replies(workers, on_disk, tmp_path):
    store = ClientStateStore(tmp_path) if on_disk else None
    grid = InProcessGrid(make_app([]), 4, {"k": "v"}, workers=workers, state_store=store)
    for expected in (1, 2):
        replies = _round(grid)
        assert len(replies) == 4
        errors = [r for r in replies if r.has_error()]
        assert len(errors) == 1 and "boom on node 2" in errors[0].error.reason
        ok = sorted(int(r.content["m"]["pid"]) for r in replies if not r.has_error())
        assert ok == [0, 1, 3]
        assert all(int(r.content["m"]["count"]) == expected for r in replies if not r.has_error())
        # replies answer the messages sent (metadata derived from the instruction)
        assert all(r.metadata.dst_node_id == SUPERLINK_NODE_ID for r in replies)
    assert grid.context(NODE_ID_OFFSET).run_config == {"k": "v"}
    if store is not None:  # states live on disk, not in the grid
        assert grid._contexts == {}
        grid.commit_round(0)
        assert sorted(p.name for p in store.nodes.iterdir()) == [
            f"{NODE_ID_OFFSET + i}.bin" for i in (0, 1, 3)
        ]
    grid.close()


def test_unknown_node_rejected():
    grid = InProcessGrid(make_app([]), 2, {})
    with pytest.raises(ValueError, match="unknown node"):
        grid.push_messages([Message(RecordDict(), 5, MessageType.TRAIN)])


def test_flower_fedavg_runs_on_the_inprocess_grid():
    """Flower's own FedAvg strategy drives our grid unchanged (Message API)."""
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arr = msg.content["arrays"].to_numpy_ndarrays()[0]
        pid = int(context.node_config["partition-id"])
        return Message(
            RecordDict(
                {"arrays": ArrayRecord([arr + pid]), "metrics": MetricRecord({"num-examples": 1})}
            ),
            reply_to=msg,
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": 1, "loss": 0.0})}), reply_to=msg
        )

    grid = InProcessGrid(app, 4, {})
    result = FedAvg(fraction_train=1.0).start(grid, ArrayRecord([np.zeros(3)]), num_rounds=2)
    # mean of (x + pid) over pids 0..3 adds 1.5 per round
    np.testing.assert_allclose(result.arrays.to_numpy_ndarrays()[0], [3.0, 3.0, 3.0])
