"""What the server knows of its teachers once they are built: the :class:`TeacherBundle`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class TeacherBundle:
    """What the server knows of its teachers.

    ``proxy_logits`` is ``(K, P, C)``: each teacher's logits on the proxy split.
    Accuracies are on the test split; ``train_accuracy`` on the teacher split.
    ``given[i]`` is True for a teacher the user brought (``teachers.given``).
    """

    specs: list[str]
    parameters: list[int]
    proxy_logits: np.ndarray
    test_logits: np.ndarray
    test_accuracy: list[float]
    train_accuracy: list[float]
    cached: list[bool]
    models: list[torch.nn.Module] = field(default_factory=list, repr=False)
    pate_targets: np.ndarray | None = field(default=None, repr=False)
    """privacy.mode='pate': the run's one GNMax release (drawn once, kept in checkpoints)."""
    given: list[bool] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of teachers."""
        return len(self.specs)

    def is_given(self, index: int) -> bool:
        """Whether teacher ``index`` was brought by the user (never trained by fedkd)."""
        return index < len(self.given) and self.given[index]

    def fusion_weights(self, fusion: str) -> np.ndarray | None:
        """Per-teacher weights a fusion rule needs (accuracy on the teacher split)."""
        return np.asarray(self.train_accuracy) if fusion == "accuracy_weighted" else None

    def fused(
        self, logits: np.ndarray, fusion: str, temperature: float, **params: float
    ) -> np.ndarray:
        """``fusion`` applied to per-teacher ``logits`` of shape (K, N, C)."""
        from fedkd.strategies.fusion import apply_fusion

        return apply_fusion(
            fusion, logits, weights=self.fusion_weights(fusion), temperature=temperature, **params
        )

    def ensemble_accuracy(
        self, y_test: np.ndarray, fusion: str, temperature: float, **params: float
    ) -> float | None:
        """Test accuracy of the fused ensemble (``None`` without teachers)."""
        if self.count == 0:
            return None
        pred = self.fused(self.test_logits, fusion, temperature, **params).argmax(-1)
        return float((pred == y_test).mean())
