"""In-process engine: a Flower Grid that calls the ClientApp directly.

One persistent :class:`flwr.app.Context` per simulated node (created on first use), no
Ray, no gRPC, no serialization. Flower 1.41 stamps new Messages with the identity in
:class:`flwr.supercore.task_identity.TaskIdentity`; the grid sets it to the node around
every ClientApp call and back to the server afterwards.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedkd import keys

log = logging.getLogger("fedkd")

NODE_ID_OFFSET = 1000
"""Node ids are ``NODE_ID_OFFSET + partition id`` (deterministic, never the SuperLink's)."""

SERVER_TASK_ID = 1


def set_server_identity(run_id: int) -> None:
    """Make Messages created in this process come from the server of run ``run_id``."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = SERVER_TASK_ID


class InProcessGrid(Grid):
    """Grid that executes ``client_app`` for each message in this process.

    Parameters
    ----------
    client_app : ClientApp
        The app every simulated node runs.
    num_nodes : int
        Number of nodes; node ``i`` gets ``partition-id = i``.
    run_config : dict
        Flower run config handed to every node's Context.
    run_id : int
        Run id stamped on messages.
    """

    def __init__(
        self, client_app: ClientApp, num_nodes: int, run_config: dict[str, Any], run_id: int = 1
    ) -> None:
        self._app = client_app
        self._num_nodes = num_nodes
        self._run_config = dict(run_config)
        self._run = Run.create_empty(run_id)
        self._contexts: dict[int, Context] = {}
        self._pending: dict[str, Message] = {}
        set_server_identity(run_id)

    # -- Grid API ---------------------------------------------------------------------
    def set_run(self, run: Run) -> None:  # noqa: D102
        self._run = run
        set_server_identity(run.run_id)

    @property
    def run(self) -> Run:  # noqa: D102
        return self._run

    def create_message(  # noqa: D102
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return range(NODE_ID_OFFSET, NODE_ID_OFFSET + self._num_nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if not NODE_ID_OFFSET <= node < NODE_ID_OFFSET + self._num_nodes:
                raise ValueError(f"message to unknown node {node}")
            msg.metadata.__dict__["_message_id"] = uuid4().hex
            self._pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        replies = []
        for mid in message_ids:
            msg = self._pending.pop(mid, None)
            if msg is not None:
                replies.append(self._execute(msg))
        return replies

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))

    # -- internals --------------------------------------------------------------------
    def context(self, node_id: int) -> Context:
        """The persistent Context of ``node_id`` (created on first use)."""
        ctx = self._contexts.get(node_id)
        if ctx is None:
            pid = node_id - NODE_ID_OFFSET
            ctx = Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config={keys.NODE_PARTITION_ID: pid, keys.NODE_NUM_PARTITIONS: self._num_nodes},
                state=RecordDict(),
                run_config=dict(self._run_config),
            )
            self._contexts[node_id] = ctx
        return ctx

    def _execute(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        TaskIdentity.node_id = node
        TaskIdentity.task_id = node
        try:
            reply = self._app(msg, self.context(node))
        except Exception as err:  # noqa: BLE001 - a client crash becomes an error reply
            reason = f"{type(err).__name__}: {err}"
            log.debug("client %s raised:\n%s", node, traceback.format_exc())
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
        finally:
            set_server_identity(self._run.run_id)
        reply.metadata.__dict__["_message_id"] = uuid4().hex
        return reply
