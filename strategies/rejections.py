"""The run's book of rejected replies: per phase, then kept for the summary."""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from fedkd.errors import RunFailed

log = logging.getLogger("fedkd")


class RejectionLog:
    """Rejected replies: those of the phase in progress, and all of the run.

    Attributes
    ----------
    pending : list of dict
        The current phase's rejections (``partition``, ``kind``, ``reason``), moved to
        ``all`` by :meth:`flush`.
    all : list of dict
        Every rejection of the run, each with its ``round`` label (checkpointed).

    """

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.all: list[dict[str, Any]] = []

    def reject(self, partition: int, kind: str, reason: str) -> None:
        """Record that ``partition``'s reply was rejected (``kind``: short category)."""
        log.info("rejected reply from partition %s (%s): %s", partition, kind, reason)
        self.pending.append({"partition": partition, "kind": kind, "reason": reason})

    def by_kind(self) -> dict[str, int]:
        """How many replies were rejected, per kind (over the whole run)."""
        return dict(Counter(r["kind"] for r in self.all))

    def flush(self, label: int | str) -> None:
        """Log one warning per distinct pending reason and keep them under ``label``."""
        if self.pending:
            counts = Counter(r["reason"] for r in self.pending)
            for reason, n in counts.most_common():
                log.warning(
                    "round %s: rejected %d repl%s: %s", label, n, "y" if n == 1 else "ies", reason
                )
        self.all.extend({"round": label, **r} for r in self.pending)
        self.pending = []

    def require_valid(
        self,
        label: int | str,
        phase: str,
        valid: int,
        asked: int,
        min_valid_fraction: float,
        floor: bool = False,
    ) -> None:
        """Stop the run when too few of the ``asked`` replies of ``phase`` were valid.

        Fewer than ``min_valid_fraction`` of ``asked`` (rounded up) raises
        :class:`RunFailed` with one line: the phase, the counts and the rejection kinds
        (with one example reason); the phase's rejections are logged and kept under
        ``label`` first. ``floor``: at least one valid reply is needed even when the
        fraction is 0 (discovery, the local-only baseline).
        """
        if asked <= 0:
            return
        frac = min_valid_fraction
        need = min(asked, math.ceil(frac * asked - 1e-9))
        if floor:
            need = max(need, 1)
        if valid >= need:
            return
        kinds = Counter(r["kind"] for r in self.pending).most_common()
        detail = ", ".join(f"{k} x{n}" for k, n in kinds) or "none recorded"
        if kinds:
            example = next(r["reason"] for r in self.pending if r["kind"] == kinds[0][0])
            detail += f" (e.g. {example})"
        self.flush(label)
        raise RunFailed(
            f"{phase}: only {valid} of {asked} replies were valid and "
            f"strategy.min_valid_fraction={frac:g} needs {need}; rejected: {detail}"
        )
