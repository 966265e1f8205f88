"""Client states on disk: memory grows with the clients of a round, not with all clients.

The in-process engines keep a simulated node's ``Context.state`` (its student, optimizer
state, anything a ClientApp stores) in memory only while the node handles a message.
Afterwards the state is serialized (Flower's own protobuf form of a ``RecordDict``) into
``pending/<node>.r<round>.bin`` under the store's folder. Committing round ``r`` moves
that round's pending files into ``nodes/`` (one file per node), so a checkpoint of round
``r`` plus ``nodes/`` is a consistent picture of the run after round ``r``.

Recovery after a kill (:meth:`ClientStateStore.recover`): pending files of the last
committed round are moved into place (the commit was interrupted after the server's
checkpoint was written); pending files of later rounds are deleted (their round never
completed). A half-written file never has its final name: writes go to a temporary file
that is renamed.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedkd.results import atomic_write_bytes

_PENDING = re.compile(r"^(?P<node>\d+)\.r(?P<round>\d+)\.bin$")


class ClientStateStore:
    """Per-node ``RecordDict`` states in files under ``root``.

    Parameters
    ----------
    root : path
        Folder of the store (created); a run keeps it at ``<run dir>/client_state``.

    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.nodes = self.root / "nodes"
        self.pending = self.root / "pending"
        self.nodes.mkdir(parents=True, exist_ok=True)
        self.pending.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._staged: dict[int, tuple[int, Path]] = {}  # node -> (round, pending file)

    def load(self, node: int) -> RecordDict:
        """The node's latest state (its staged one if it already ran this round)."""
        with self._lock:
            staged = self._staged.get(node)
        path = staged[1] if staged else self.nodes / f"{node}.bin"
        if not path.is_file():
            return RecordDict()
        proto = ProtoRecordDict()
        proto.ParseFromString(path.read_bytes())
        return recorddict_from_proto(proto)

    def stage(self, node: int, server_round: int, state: RecordDict | bytes) -> None:
        """Keep ``state`` as the node's state after ``server_round`` (until committed).

        ``state`` may already be serialized (``recorddict_to_proto(...).SerializeToString()``).
        """
        path = self.pending / f"{node}.r{server_round}.bin"
        data = state if isinstance(state, bytes) else recorddict_to_proto(state).SerializeToString()
        atomic_write_bytes(path, data)
        with self._lock:
            old = self._staged.get(node)
            self._staged[node] = (server_round, path)
        if old is not None and old[1] != path:
            old[1].unlink(missing_ok=True)

    def commit(self, server_round: int) -> None:
        """Make every state staged up to ``server_round`` the committed one."""
        with self._lock:
            done = {n: p for n, (r, p) in self._staged.items() if r <= server_round}
            for n in done:
                del self._staged[n]
        for node, path in done.items():
            os.replace(path, self.nodes / f"{node}.bin")

    def recover(self, committed_round: int) -> None:
        """Bring the files in line with a checkpoint of ``committed_round`` (see module)."""
        self._staged.clear()
        for path in sorted(self.pending.iterdir()):
            m = _PENDING.match(path.name)
            if m is None or int(m["round"]) > committed_round:
                path.unlink()  # a temporary file or a round that never completed
            else:
                os.replace(path, self.nodes / f"{m['node']}.bin")
