"""One exchange of Messages with the clients, with the bytes each one took on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedkd.strategies.validation import reply_size
from flwr.app import Message
from flwr.serverapp import Grid


@dataclass
class MessageSizes:
    """Serialized sizes of the last exchange (each message is serialized once).

    Attributes
    ----------
    down : dict of int to int
        Node id -> bytes of its instruction.
    up : dict of int to int
        ``id(reply)`` -> bytes of the reply (counted as traffic, checked against
        ``strategy.max_reply_bytes``).

    """

    down: dict[int, int] = field(default_factory=dict)
    up: dict[int, int] = field(default_factory=dict)


def send_and_measure(
    grid: Grid, messages: list[Message], timeout: float | None
) -> tuple[list[Message], MessageSizes, list[int]]:
    """``(replies, sizes, silent nodes)``: send ``messages``, wait up to ``timeout``.

    Silent nodes (sorted) are those instructed that did not reply.
    """
    sizes = MessageSizes(down={m.metadata.dst_node_id: reply_size(m) for m in messages})
    expected = {m.metadata.dst_node_id for m in messages}
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    sizes.up = {id(r): reply_size(r) for r in replies}
    got = {r.metadata.src_node_id for r in replies}
    return replies, sizes, sorted(expected - got)
