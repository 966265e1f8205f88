"""Bytes that crossed the wire during a run, by direction and phase."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Traffic:
    """Bytes that crossed the wire, by direction and phase.

    Attributes
    ----------
    down, up : dict of str to int
        Bytes sent to clients (``down``) and received from them (``up``), per phase
        (``discover``, ``train``, ``evaluate``, ``baseline``).

    """

    down: dict[str, int] = field(default_factory=dict)
    up: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, down: int, up: int) -> None:
        """Count ``down`` and ``up`` bytes for ``phase``."""
        self.down[phase] = self.down.get(phase, 0) + down
        self.up[phase] = self.up.get(phase, 0) + up

    @property
    def total_down(self) -> int:
        """Bytes sent to clients over all phases."""
        return sum(self.down.values())

    @property
    def total_up(self) -> int:
        """Bytes received from clients over all phases."""
        return sum(self.up.values())
