"""In-process engine: a Flower Grid that calls the ClientApp directly.

One persistent :class:`flwr.app.Context` per simulated node (created on first use), no
Ray, no gRPC, no serialization. Flower 1.41 stamps new Messages with the identity in
:class:`flwr.supercore.task_identity.TaskIdentity`; the grid sets it to the node around
every ClientApp call and back to the server afterwards.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedkd import keys
from fedkd.state_store import ClientStateStore

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
    state_store : ClientStateStore, optional
        Where node states live between messages (see :mod:`fedkd.state_store`); without
        one, every node's Context stays in memory for the whole run.
    workers : int
        ClientApp calls of one ``send_and_receive`` run on this many threads. Each node's
        work depends only on its own seed and state, and replies are sorted by partition
        before fusion, so results do not depend on ``workers``. With one worker the grid
        sets ``TaskIdentity`` to each node around its call; with several, TaskIdentity
        (a process-wide class attribute) keeps the server's identity during client calls
        and replies take their metadata from the instruction message.

    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict[str, Any],
        run_id: int = 1,
        workers: int = 1,
        state_store: ClientStateStore | None = None,
    ) -> None:
        self._workers = max(1, workers)
        self.state_store = state_store
        self._pool: ThreadPoolExecutor | None = None
        self._app = client_app
        self._num_nodes = num_nodes
        self._run_config = dict(run_config)
        self._run = Run.create_empty(run_id)
        self._contexts: dict[int, Context] = {}
        self._pending: dict[str, Message] = {}
        self._lock = threading.Lock()
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
        msgs = [self._pending.pop(mid) for mid in list(self.push_messages(messages))]
        if timeout is None and self._workers <= 1:
            return [self._execute(m) for m in msgs]
        # threads; replies not back within `timeout` seconds are left out (as on a real
        # Grid). A client that never returns keeps its worker thread busy.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="fedkd-client")
        futures = [self._pool.submit(self._execute, m) for m in msgs]
        done, late = wait(futures, timeout=timeout)
        if late:
            log.info("%d client(s) did not answer within %s s", len(late), timeout)
        return [f.result() for f in futures if f in done]

    def close(self) -> None:
        """Stop the worker threads (without waiting for clients that never returned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- checkpoints --------------------------------------------------------------------
    def commit_round(self, server_round: int) -> None:
        """Make node states after ``server_round`` durable (no-op without a state store)."""
        if self.state_store is not None:
            self.state_store.commit(server_round)

    def recover(self, server_round: int) -> None:
        """Align stored node states with a checkpoint of ``server_round``."""
        if self.state_store is None:
            raise ValueError("this grid keeps node states in memory; nothing to resume")
        self.state_store.recover(server_round)

    # -- internals --------------------------------------------------------------------
    def _new_context(self, node_id: int, state: RecordDict) -> Context:
        pid = node_id - NODE_ID_OFFSET
        return Context(
            run_id=self._run.run_id,
            node_id=node_id,
            node_config={keys.NODE_PARTITION_ID: pid, keys.NODE_NUM_PARTITIONS: self._num_nodes},
            state=state,
            run_config=dict(self._run_config),
        )

    def context(self, node_id: int) -> Context:
        """The Context of ``node_id``: persistent in memory, or loaded from the state store.

        With a state store, hand it back with :meth:`release` after use.
        """
        if self.state_store is not None:
            return self._new_context(node_id, self.state_store.load(node_id))
        with self._lock:
            ctx = self._contexts.get(node_id)
            if ctx is None:
                ctx = self._contexts[node_id] = self._new_context(node_id, RecordDict())
        return ctx

    def release(self, msg: Message, context: Context, before: bytes | None = None) -> None:
        """Store the node's state after handling ``msg`` (when it changed)."""
        if self.state_store is None:
            return
        after = self.fingerprint(context)  # serialized once: compared, then stored
        if after == before:
            return
        gid = msg.metadata.group_id
        rnd = int(gid) if gid.isdigit() else 0
        self.state_store.stage(context.node_id, rnd, after)

    @staticmethod
    def fingerprint(context: Context) -> bytes:
        """Serialized state, to tell later whether a call changed it."""
        from flwr.common.serde import recorddict_to_proto

        return recorddict_to_proto(context.state).SerializeToString()

    def _execute(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        sequential = self._workers <= 1
        if sequential:
            TaskIdentity.node_id = node
            TaskIdentity.task_id = node
        try:
            context = self.context(node)
            before = self.fingerprint(context) if self.state_store is not None else None
            reply = self._app(msg, context)
            self.release(msg, context, before)
        except Exception as err:  # noqa: BLE001 - a client crash becomes an error reply
            reason = f"{type(err).__name__}: {err}"
            log.debug("client %s raised:\n%s", node, traceback.format_exc())
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
        finally:
            if sequential:
                set_server_identity(self._run.run_id)
        reply.metadata.__dict__["_message_id"] = uuid4().hex
        return reply
