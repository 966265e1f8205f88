"""The ``[distill]`` table: how each client trains its student.

The loss name, the assistants' model specs and ``params`` (against the parameters the
chosen method declares) are checked by :mod:`fedkd.validation`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fedkd.config.section import MAX_BATCH, Section


class DistillConfig(Section):
    """Client-side training: ``alpha * distill(proxy) + (1 - alpha) * CE(private)``."""

    loss: str = Field(
        "response",
        description="Distillation loss: a method of the catalogue (one file each in "
        "fedkd/losses/; docs/losses.md lists them with formulas, papers and a measured run: "
        "'response' (Hinton), 'dkd', 'hint', 'rkd', 'attention', 'born_again', 'mutual', "
        "'takd', ...) or a name registered with @fedkd.register_loss. Catalogue methods "
        "minimise alpha * [loss + beta * term] + (1 - alpha) * CE; see docs/losses.md.",
    )
    temperature: float = Field(4.0, gt=0, le=1000, description="Softening temperature T > 0.")
    alpha: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Weight of the distillation term in [0, 1]; 1 - alpha weighs the "
        "cross-entropy on private data.",
    )
    local_epochs: int = Field(
        5, ge=1, le=10_000, description="Epochs per round (passes over the proxy)."
    )
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Proxy and private batch size.")
    lr: float = Field(1e-2, gt=0, le=10, description="Client learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="Client optimizer; its state persists across rounds."
    )
    beta: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="Weight of the catalogue method's own term (unset: the method's "
        "default: hint 1, rkd 25 (the paper's distance weight), attention 100, "
        "born_again 1, mutual 1).",
    )
    params: dict[str, Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        default_factory=dict,
        description="The chosen method's own parameters by name (e.g. a method's two term "
        "weights); unset ones take the method's defaults (docs/losses.md). Names must be "
        "ones the method declares.",
    )
    feature_teacher: int = Field(
        0, ge=0, le=63, description="hint / rkd: index of the teacher whose features travel."
    )
    relation_batch: int = Field(
        64,
        ge=3,
        le=1024,
        description="rkd: relations (distances, triplet angles) are computed among the "
        "first this-many rows of each (shuffled) proxy batch; the angle term costs O(n^3).",
    )
    rkd_projection: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="rkd: send the teacher's flattened features through a seeded Gaussian "
        "random projection to this many dimensions (pairwise distances and angles are "
        "kept approximately, Johnson-Lindenstrauss); 0 sends the features unprojected.",
    )
    generations: int = Field(
        2,
        ge=1,
        le=1000,
        description="born_again: generations; rounds are cut into this many equal parts "
        "and each new generation starts a fresh student taught by the previous one.",
    )
    peers: int = Field(
        2, ge=2, le=8, description="mutual: co-located students per device (peer 0 reports)."
    )
    assistants: list[str] = Field(
        default_factory=lambda: ["cnn:width=24,depth=2"],
        min_length=1,
        description="takd: the teacher-assistant chain, largest first; the server distils "
        "the teachers into the first, each into the next, the last teaches the clients.",
    )
    assistant_epochs: int = Field(
        20,
        ge=1,
        le=10_000,
        description="takd: server-side epochs per assistant (teacher split + proxy).",
    )

    def beta_or(self, default_beta: float) -> float:
        """``beta``, or ``default_beta`` (the catalogue method's weight) when unset.

        Parameters
        ----------
        default_beta : float
            ``fedkd.losses.method_of(loss).default_beta`` of the method in use.

        """
        return self.beta if self.beta is not None else default_beta
