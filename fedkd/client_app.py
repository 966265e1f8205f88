"""Flower ClientApp: each node keeps its own student and trains it by distillation.

The handlers are thin: they map Flower Messages onto :mod:`fedkd.client`, which holds
the logic (one concern per module) over the pure functions of :mod:`fedkd.training`:

* ``train``: distil on the received soft targets + cross-entropy on private data, reply
  with logits on the same proxy rows, train losses and test accuracy.
* ``evaluate``: test accuracy of the current student.
* ``query``: partition id, private data size and class histogram (never the data).
* ``query.local_only``: train a fresh student on private data only (baseline).

The student and its optimizer state persist in ``context.state`` between rounds
(:mod:`fedkd.client.node_state`). ``fedkd.client_app:app`` is the app's public path
(pyproject's ``[tool.flwr.app.components]``, deployments, the Ray engine's actors).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedkd.client import handlers, trainer
from fedkd.client.run_config import config_from_run_config

__all__ = ["app", "config_from_run_config"]

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Distil the student on the received soft targets plus private cross-entropy."""
    return trainer.train(msg, context)


@app.evaluate()
def evaluate_student(msg: Message, context: Context) -> Message:
    """Test accuracy of the current student (a fresh student before any training)."""
    return handlers.evaluate_student(msg, context)


@app.query()
def query_info(msg: Message, context: Context) -> Message:
    """Partition id, private data size and class histogram (counts only, never data)."""
    return handlers.query_info(msg, context)


@app.query("local_only")
def query_local_only(msg: Message, context: Context) -> Message:
    """Baseline: a fresh student trained on private data only; its test accuracy."""
    return handlers.query_local_only(msg, context)
