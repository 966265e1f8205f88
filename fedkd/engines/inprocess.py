"""In-process engine: a Flower Grid that calls the ClientApp directly.

One persistent :class:`flwr.app.Context` per simulated node (created on first use), no
Ray, no gRPC, no serialization. Flower 1.41 stamps new Messages with the identity in
:class:`flwr.supercore.task_identity.TaskIdentity`; the grid sets it to the node around
every ClientApp call and back to the server afterwards.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
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

CLOSE_GRACE_S = 60.0
"""Seconds :meth:`InProcessGrid.close` waits for client calls that passed their deadline."""


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
        ClientApp calls of one ``send_and_receive`` run on this many threads at once. Each
        node's work depends only on its own seed and state, and replies are sorted by
        partition before fusion, so results do not depend on ``workers``. Called without a
        timeout and with one worker, calls run one after another in the caller's thread
        and the grid sets ``TaskIdentity`` to each node around its call; otherwise each
        call runs on a thread of its own, TaskIdentity (a process-wide class attribute)
        keeps the server's identity during client calls and replies take their metadata
        from the instruction message.

    Notes
    -----
    With a ``timeout``, every message has a deadline of its own, ``timeout`` seconds
    after its call starts (a simulated device starts when a worker is free for it), so
    messages queued behind others are not penalised. A call past its deadline counts as
    no reply and is abandoned: its thread runs on without holding one of the ``workers``
    slots, whatever it returns later is dropped, and its node state is not stored. A
    message to a node whose abandoned call is still running gets no reply (the device is
    busy) instead of a second, concurrent call on the same Context.

    """

    simulated_partitions = True
    """Node ``NODE_ID_OFFSET + i`` is partition ``i`` (see :meth:`partition_of`)."""

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
        self._busy: set[int] = set()  # nodes whose call is still running (maybe abandoned)
        self._threads: set[threading.Thread] = set()  # client calls still running
        self._app = client_app
        self._num_nodes = num_nodes
        self._run_config = dict(run_config)
        self._run = Run.create_empty(run_id)
        self._contexts: dict[int, Context] = {}
        self._pending: dict[str, Message] = {}
        self._lock = threading.Lock()
        set_server_identity(run_id)

    # -- Grid API ---------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        """Adopt ``run`` (its id is stamped on the server's messages from now on)."""
        self._run = run
        set_server_identity(run.run_id)

    @property
    def run(self) -> Run:
        """The run this grid serves."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new instruction Message for node ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Ids of the simulated nodes, ``NODE_ID_OFFSET + partition id``."""
        return range(NODE_ID_OFFSET, NODE_ID_OFFSET + self._num_nodes)

    def partition_of(self, node_id: int) -> int:
        """The partition id node ``node_id`` serves (the only one its replies may claim)."""
        return node_id - NODE_ID_OFFSET

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue ``messages`` (each gets a fresh message id); their ids.

        Raises
        ------
        ValueError
            For a message to a node this grid does not simulate.

        """
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if not NODE_ID_OFFSET <= node < NODE_ID_OFFSET + self._num_nodes:
                raise ValueError(f"message to unknown node {node}")
            msg.metadata.__dict__["_message_id"] = uuid4().hex
            self._pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run the queued messages ``message_ids`` one after another; their replies."""
        replies = []
        for mid in message_ids:
            msg = self._pending.pop(mid, None)
            if msg is not None:
                replies.append(self._execute(msg, identity=self._workers <= 1))
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Run ``messages`` on their nodes; the replies that came within their deadlines.

        See the class notes for ``timeout`` and ``workers``.
        """
        msgs = [self._pending.pop(mid) for mid in list(self.push_messages(messages))]
        if timeout is None and self._workers <= 1:
            return [self._execute(m, identity=True) for m in msgs]
        return self._run_threaded(msgs, timeout)

    def _run_threaded(self, msgs: list[Message], timeout: float | None) -> list[Message]:
        """Replies to ``msgs``, each call on its own thread with its own deadline (Notes)."""
        finished: queue.SimpleQueue[tuple[int, Message]] = queue.SimpleQueue()
        abandoned: set[int] = set()
        replies: dict[int, Message] = {}
        running: dict[int, float] = {}  # message index -> deadline (monotonic)
        nxt, late, busy = 0, 0, 0

        def work(i: int, msg: Message) -> None:
            node = msg.metadata.dst_node_id
            try:
                reply = self._execute(msg, keep=lambda: i not in abandoned)
            except BaseException as err:  # noqa: BLE001 - e.g. sys.exit() in the app
                reason = f"{type(err).__name__}: {err}"
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
            try:
                finished.put((i, reply))
            finally:
                with self._lock:
                    self._busy.discard(node)
                    self._threads.discard(threading.current_thread())

        while nxt < len(msgs) or running:
            while nxt < len(msgs) and len(running) < self._workers:
                i, msg = nxt, msgs[nxt]
                nxt += 1
                node = msg.metadata.dst_node_id
                with self._lock:
                    if node in self._busy:
                        busy += 1
                        continue
                    self._busy.add(node)
                    thread = threading.Thread(
                        target=work, args=(i, msg), name=f"fedkd-client-{node}", daemon=True
                    )
                    self._threads.add(thread)
                running[i] = math.inf if timeout is None else time.monotonic() + timeout
                thread.start()
            if not running:
                continue
            wait_s = min(running.values()) - time.monotonic()
            try:
                i, reply = finished.get(timeout=None if math.isinf(wait_s) else max(0.0, wait_s))
            except queue.Empty:
                pass
            else:
                if running.pop(i, None) is not None:
                    replies[i] = reply
            now = time.monotonic()
            for i in [i for i, d in running.items() if d <= now]:
                del running[i]
                abandoned.add(i)  # its thread runs on; its reply and state are dropped
                late += 1
        if late:
            log.info("%d client(s) did not answer within %s s of their start", late, timeout)
        if busy:
            log.info("%d client(s) still busy with a call past its deadline: no reply", busy)
        return [replies[i] for i in range(len(msgs)) if i in replies]

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Wait up to ``grace_s`` seconds in all for client calls that passed their deadline.

        A client thread still inside PyTorch when the interpreter exits can abort the
        process, so late calls get a chance to end; one still running after ``grace_s``
        is left behind (a warning names its node).
        """
        end = time.monotonic() + grace_s
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        left = sorted(t.name for t in threads if t.is_alive())
        if left:
            log.warning(
                "%d client call(s) past their deadline still running after %.0f s: %s",
                len(left),
                grace_s,
                ", ".join(left),
            )

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

    def _execute(
        self, msg: Message, identity: bool = False, keep: Callable[[], bool] | None = None
    ) -> Message:
        """Run the app on ``msg`` (``identity``: set TaskIdentity to the node around it).

        ``keep()`` False after the call (an abandoned call): the node state is not stored.
        """
        node = msg.metadata.dst_node_id
        if identity:
            TaskIdentity.node_id = node
            TaskIdentity.task_id = node
        try:
            context = self.context(node)
            before = self.fingerprint(context) if self.state_store is not None else None
            reply = self._app(msg, context)
            if keep is None or keep():
                self.release(msg, context, before)
        except Exception as err:  # noqa: BLE001 - a client crash becomes an error reply
            reason = f"{type(err).__name__}: {err}"
            log.debug("client %s raised:\n%s", node, traceback.format_exc())
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
        finally:
            if identity:
                set_server_identity(self._run.run_id)
        reply.metadata.__dict__["_message_id"] = uuid4().hex
        return reply
