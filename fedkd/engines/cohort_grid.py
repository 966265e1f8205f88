"""Cohort grid (the `vectorized` engine): train messages of a round run as cohorts.

Every message still goes through Flower's Message API and each node keeps its own
persistent Context. Train instructions of one ``send_and_receive`` are handed together to
:func:`fedkd.client.cohort.train_cohort`, which trains clients of one student architecture
as a single batch (:mod:`fedkd.stacked_training`); every other message type is executed one by
one exactly as by the in-process engine, each with its own deadline (see
:class:`~fedkd.engines.inprocess.InProcessGrid`). Metrics equal the in-process engine's up
to float rounding. Train replies are not subject to ``strategy.round_timeout_s``: a cohort
trains as one batch and finishes together, so no client of it can make another late.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedkd.engines.inprocess import InProcessGrid
from fedkd.state_store import ClientStateStore

log = logging.getLogger("fedkd")

CohortFn = Callable[..., list[Message | Exception]]
"""``fn(pairs, cohort_size, workers, done, acquire) -> replies``.

See :func:`fedkd.client.cohort.train_cohort`.
"""


class CohortGrid(InProcessGrid):
    """:class:`InProcessGrid` that trains each round's sampled clients as cohorts.

    Parameters
    ----------
    client_app : ClientApp
        The app every simulated node runs (for every message but ``train``).
    cohort_fn : callable
        ``fn(pairs, cohort_size, threads) -> replies or exceptions`` for train messages.
    num_nodes, run_config, run_id, workers, state_store
        As for :class:`InProcessGrid`; ``workers`` cohorts train at once.
    cohort_size : int
        Most clients trained in one batch; ``workers`` batches run at once.

    """

    def __init__(
        self,
        client_app: ClientApp,
        cohort_fn: CohortFn,
        num_nodes: int,
        run_config: dict[str, Any],
        *,
        run_id: int = 1,
        workers: int = 1,
        cohort_size: int = 16,
        state_store: ClientStateStore | None = None,
    ) -> None:
        super().__init__(
            client_app,
            num_nodes,
            run_config,
            run_id=run_id,
            workers=workers,
            state_store=state_store,
        )
        self._cohort_fn = cohort_fn
        self._cohort_size = cohort_size

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Train messages as cohorts; every other message as :class:`InProcessGrid` does.

        ``timeout`` applies to the other messages only (see the module docstring).
        """
        msgs = list(messages)
        train = [m for m in msgs if m.metadata.message_type == MessageType.TRAIN]
        if not train:
            return super().send_and_receive(msgs, timeout=timeout)
        others = [m for m in msgs if m.metadata.message_type != MessageType.TRAIN]
        replies = list(super().send_and_receive(others, timeout=timeout)) if others else []
        for mid in list(self.push_messages(train)):
            self._pending.pop(mid)
        store = self.state_store
        # with a state store, states are loaded window by window (acquire), not all at once
        pairs = [
            (m, self._new_context(m.metadata.dst_node_id, RecordDict()))
            if store is not None
            else (m, self.context(m.metadata.dst_node_id))
            for m in train
        ]

        def acquire(i: int) -> Context:
            return self.context(pairs[i][0].metadata.dst_node_id)

        def done(i: int, result: Message | Exception) -> None:
            msg, ctx = pairs[i]
            if not isinstance(result, Exception):
                self.release(msg, ctx)
            if store is not None:  # stored: free the memory now
                pairs[i] = (msg, self._new_context(ctx.node_id, RecordDict()))

        results = self._cohort_fn(
            pairs, self._cohort_size, self._workers, done, acquire if store is not None else None
        )
        for msg, result in zip(train, results, strict=True):
            if isinstance(result, Exception):
                reason = f"{type(result).__name__}: {result}"
                log.debug("client %s raised: %s", msg.metadata.dst_node_id, reason)
                result = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
            result.metadata.__dict__["_message_id"] = uuid4().hex
            replies.append(result)
        return replies
