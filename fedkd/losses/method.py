"""What a knowledge-distillation method is, and the registries that collect them.

A method is one file of :mod:`fedkd.losses`: a :class:`KDMethod` subclass decorated with
:func:`register_method`, holding its metadata (for the config checks, the server and
``docs/losses.md``), its logit loss and optional per-row form, its client-side
:class:`ExtraTerm` and the teacher knowledge the server sends for it. Every catalogue
method trains the student on

    alpha * [loss(s, t, T) + beta * term] + (1 - alpha) * CE(private)

(``alpha`` weighs the distillation side, ``beta`` = ``distill.beta`` or the method's
``default_beta``). :func:`register_loss` adds a plain logit loss (no metadata, no term).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from fedkd.registry import Registry

if TYPE_CHECKING:
    from fedkd.config import DistillConfig

DistillLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""``(student_logits, teacher_logits, temperature) -> scalar`` on a proxy batch."""
RowLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""Per-row form ``(..., C) -> (...)`` of a distillation loss (vectorized engine)."""
Knowledge = Literal["logits", "features", "attention"]


@dataclass
class StepBatch:
    """One training step: the batch the student saw and its outputs.

    ``x`` is the proxy batch followed by the private batch (``n_proxy`` proxy rows);
    ``pi`` / ``li`` index the round's proxy rows and the private data (None when absent).
    """

    x: torch.Tensor
    n_proxy: int
    pi: torch.Tensor | None
    li: torch.Tensor | None
    logits: torch.Tensor
    features: torch.Tensor | None
    targets: torch.Tensor | None
    y: torch.Tensor | None
    temperature: float
    alpha: float


class ExtraTerm:
    """A method's client-side term, added to each step as ``alpha * beta * term``.

    Terms may own modules that persist on the device between rounds (the hint adapter,
    mutual-learning peers, the previous born-again generation): :meth:`state` returns
    them and the next round's :meth:`KDMethod.client_term` finds them in
    :attr:`TermContext.aux`.
    """

    needs_features = False
    """The step must compute the student's last-block features (:class:`StepBatch`)."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def term(self, batch: StepBatch) -> torch.Tensor | None:
        """The method's term on this step (None: nothing to add).

        Parameters
        ----------
        batch : StepBatch
            The step's inputs, the student's logits (and features) and targets.

        Returns
        -------
        Tensor or None
            A scalar with a gradient into the student.

        """
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Clear the gradients of modules trained with the student."""

    def step(self) -> None:
        """Update modules trained with the student (after the student's step)."""

    def state(self) -> dict[str, Any]:
        """What must persist on the device until the next round."""
        return {}


@dataclass
class TermContext:
    """What a method's :meth:`KDMethod.client_term` may use, built by the client per job.

    A term may replace ``model`` and ``opt`` (born_again starts a fresh student for a new
    generation); the client trains and keeps whatever they hold afterwards.
    """

    beta: float
    params: dict[str, float]
    """The method's parameters: its defaults updated with ``distill.params``."""
    distill: DistillConfig
    rounds: int
    server_round: int
    model: nn.Module
    opt: torch.optim.Optimizer
    lr: float
    x_proxy: torch.Tensor
    """This round's proxy rows (the student's view)."""
    x_local: torch.Tensor
    knowledge: torch.Tensor | None
    """The teacher knowledge that came with the targets, one entry per proxy row."""
    aux: dict[str, Any]
    """What the method's term kept on the device last time (:meth:`ExtraTerm.state`)."""
    init_seed: int
    """Seed for modules the method initialises on the client (the hint adapter)."""
    fresh_student: Callable[[int], nn.Module]
    """``generation -> `` a freshly initialised student of this client (0: its first)."""
    new_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    """The client's optimizer kind at this round's learning rate, over the given parameters."""


class KDMethod:
    """One ``distill.loss``: subclass, fill in the metadata, decorate with :func:`register_method`.

    The class attributes are the metadata; override the hooks a method needs (the base
    is the plain response loss: soft targets only, nothing else sent or added).
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    """Family shown in docs/losses.md ("response-based", "feature-based", ...)."""
    knowledge: ClassVar[Knowledge] = "logits"
    """What travels down besides logits: nothing, teacher features, or attention maps."""
    default_beta: ClassVar[float] = 0.0
    """Weight of the client term when ``distill.beta`` is unset."""
    formula: ClassVar[str]
    paper: ClassVar[str]
    needs_teachers: ClassVar[bool] = False
    """The method needs the server's teachers (a strategy with teachers, count >= 1)."""
    keeps_students: ClassVar[bool] = False
    """Students (or peers) must persist on the device: no strategy that replaces them."""
    uses_assistants: ClassVar[bool] = False
    """The server distils its teachers into an assistant chain that teaches the clients."""
    params: ClassVar[dict[str, float]] = {}
    """The method's own parameters (``distill.params``) with their defaults."""
    rank: ClassVar[int] = 100
    """Position in docs/losses.md (then by name)."""

    loss: ClassVar[Callable[..., torch.Tensor]]
    """The logit loss ``(s, t, T, **params) -> scalar`` on a proxy batch (a staticmethod)."""
    rows: ClassVar[Callable[..., torch.Tensor] | None] = None
    """Per-row form of :meth:`loss` (``(..., C) -> (...)``) for vectorized cohorts, if any."""

    def resolve(self, params: Mapping[str, float] | None = None) -> dict[str, float]:
        """The method's defaults updated with ``params``; unknown names raise ValueError."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "none"
            raise ValueError(
                f"distill.params {', '.join(unknown)} unknown to distill.loss={self.name!r}; "
                f"allowed: {allowed}"
            )
        return {**self.params, **given}

    def distill_loss(self, params: Mapping[str, float] | None = None) -> DistillLoss:
        """:meth:`loss` with the method's parameters bound."""
        if not self.params:
            self.resolve(params)
            return self.loss
        return functools.partial(self.loss, **self.resolve(params))

    def row_loss(self, params: Mapping[str, float] | None = None) -> RowLoss | None:
        """:attr:`rows` with the method's parameters bound (None: no per-row form)."""
        rows = type(self).rows
        if rows is None or not self.params:
            return rows
        return functools.partial(rows, **self.resolve(params))

    @property
    def has_client_term(self) -> bool:
        """Whether :meth:`client_term` is overridden (the client adds its own term)."""
        return type(self).client_term is not KDMethod.client_term

    def students_per_device(self, distill: DistillConfig) -> int:
        """Students the method trains on a device in the same steps (the virtual clock).

        Parameters
        ----------
        distill : DistillConfig
            The run's ``distill`` section.

        """
        return 1

    def client_term(self, ctx: TermContext) -> ExtraTerm | None:
        """The term the client adds this round (None: the logit loss only).

        Parameters
        ----------
        ctx : TermContext
            The client's student, data, teacher knowledge and persisted modules.

        """
        return None

    def teacher_knowledge(
        self, teachers: list[nn.Module], x_proxy: torch.Tensor, distill: DistillConfig, seed: int
    ) -> np.ndarray | None:
        """What the server sends besides logits, one entry per proxy row (None: nothing).

        Called once per run when :attr:`knowledge` is not ``"logits"``; ValueError for a
        setting the teachers cannot serve.

        Parameters
        ----------
        teachers : list of nn.Module
            The server's trained teachers.
        x_proxy : Tensor
            The whole proxy split, as the teachers see it.
        distill : DistillConfig
            The run's ``distill`` section (``feature_teacher``, ``rkd_projection``, ...).
        seed : int
            The run seed.

        """
        return None


LOSS_REGISTRY: Registry[DistillLoss] = Registry("loss")
"""Every ``distill.loss`` name: the catalogue's logit losses and user-registered ones."""
METHODS: Registry[KDMethod] = Registry("distillation method")
"""The catalogue: one :class:`KDMethod` per method file of :mod:`fedkd.losses`."""
ROW_LOSSES: dict[str, RowLoss] = {}
"""Per-row forms by name, with default parameters. A loss listed here trains cohorts of
clients together (``engine = "vectorized"``); one without falls back to one client after
another."""


def register_loss(name: str) -> Callable[[DistillLoss], DistillLoss]:
    """Register a logit loss ``(s, t, T) -> scalar`` under ``name`` for ``distill.loss``."""
    return LOSS_REGISTRY.register(name)


def get_loss(name: str) -> DistillLoss:
    """The registered distillation loss ``name`` (KeyError naming what is allowed)."""
    return LOSS_REGISTRY.lookup(name)


def register_method(cls: type[KDMethod]) -> type[KDMethod]:
    """Class decorator: add one instance of ``cls`` to the catalogue under ``cls.name``."""
    method = cls()
    METHODS[cls.name] = method
    LOSS_REGISTRY[cls.name] = method.distill_loss()
    rows = method.row_loss()
    if rows is not None:
        ROW_LOSSES[cls.name] = rows
    return cls


def method_of(loss: str) -> KDMethod | None:
    """The catalogue entry of ``distill.loss`` (None for user-registered logit losses)."""
    return METHODS.get(loss)


def catalogue() -> list[KDMethod]:
    """Every catalogue method in docs order (:attr:`KDMethod.rank`, then name)."""
    return sorted(METHODS.values(), key=lambda m: (m.rank, m.name))


def resolve_loss(name: str, params: Mapping[str, float] | None = None) -> DistillLoss:
    """The logit loss of ``distill.loss = name`` with ``distill.params`` bound."""
    method = method_of(name)
    if method is None:
        if params:
            raise ValueError(f"distill.loss={name!r} takes no distill.params")
        return get_loss(name)
    return method.distill_loss(params)


def resolve_rows(name: str, params: Mapping[str, float] | None = None) -> RowLoss | None:
    """The per-row form of ``distill.loss = name`` with its parameters (None: none)."""
    method = method_of(name)
    if method is None:
        return ROW_LOSSES.get(name)
    return method.row_loss(params)


def received_knowledge(method: KDMethod, ctx: TermContext) -> torch.Tensor | None:
    """The teacher knowledge of this job (None: no proxy rows this round, nothing to add).

    ValueError when the job has proxy rows but its instruction carried no knowledge.
    """
    if ctx.knowledge is None:
        if len(ctx.x_proxy) == 0:
            return None
        raise ValueError(
            f"distill.loss={method.name!r} needs teacher {method.knowledge} with the "
            "targets; the instruction carries none"
        )
    return ctx.knowledge


def require_teachers(method: KDMethod, teachers: list[nn.Module]) -> None:
    """ValueError unless the server has teachers to compute ``method``'s knowledge."""
    if not teachers:
        raise ValueError(f"distill.loss={method.name!r} needs teachers (teachers.count >= 1)")
