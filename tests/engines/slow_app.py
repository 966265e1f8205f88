"""A tiny ClientApp for engine timeout tests (importable by Ray actors): partition 0 hangs."""

import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

SLOW_PARTITION = 0
SLOW_S = 30.0

app = ClientApp()


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Count calls in the node state; partition ``SLOW_PARTITION`` first sleeps ``SLOW_S``."""
    pid = int(context.node_config["partition-id"])
    if pid == SLOW_PARTITION:
        time.sleep(SLOW_S)
    n = int(context.state.config_records.get("c", ConfigRecord({"n": 0}))["n"]) + 1
    context.state["c"] = ConfigRecord({"n": n})
    return Message(RecordDict({"m": MetricRecord({"pid": pid, "n": n})}), reply_to=msg)
