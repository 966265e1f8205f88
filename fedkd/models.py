"""Teacher and student model families, built from a spec string.

A spec is ``family`` or ``family:key=value,key=value``, for example
``cnn:width=32,depth=3`` or ``mlp:width=256,depth=2``. Families are registered with
:func:`register_model`, so a researcher can add one from their own module::

    @fedkd.register_model("tiny")
    def tiny(input_shape, num_classes, width: int = 4) -> torch.nn.Module: ...
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading
from collections.abc import Callable, Iterator
from math import prod
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from torch import nn

from fedkd.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODEL_REGISTRY: Registry[ModelFactory] = Registry("model family")
register_model = MODEL_REGISTRY.register
"""Register a model family under ``name`` (usable as ``name:key=value`` in specs).

The factory receives ``input_shape`` (tuple without the batch axis), ``num_classes``
and the keyword arguments of the spec.
"""


MAX_PARAMETERS = 100_000_000
"""Largest model (trainable parameters) :func:`build_model` builds: 400 MB of fp32 weights."""


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``family:key=value,...`` into the family name and typed keyword arguments.

    Each value is validated against the family factory's parameter: its annotation (an
    ``Annotated[int, Field(ge=..., le=...)]`` carries bounds) or, unannotated, the type of
    its default. Floats must be finite.

    Raises
    ------
    ValueError
        When the spec is malformed, names an unknown family or argument, or a value is of
        the wrong type or out of range (the message names the argument and what is allowed).

    """
    if not isinstance(spec, str):
        raise ValueError(f"a model spec is a string like 'cnn:width=8', not {spec!r}")
    family = spec.strip().partition(":")[0]
    if family not in MODEL_REGISTRY:
        raise ValueError(f"unknown model family '{family}'; allowed: {MODEL_REGISTRY.allowed()}")
    kwargs = _parse_spec(spec.strip(), MODEL_REGISTRY[family])
    return family, dict(kwargs)


@functools.lru_cache(maxsize=256)
def _parse_spec(spec: str, factory: ModelFactory) -> tuple[tuple[str, Any], ...]:
    family, _, rest = spec.partition(":")
    params = _arguments(factory)
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not key or not value:
            raise ValueError(f"malformed model argument '{item}' in '{spec}'; use key=value")
        if key not in params:
            raise ValueError(
                f"unknown argument '{key}' for model family '{family}'; allowed: "
                f"{', '.join(params)}"
            )
        if key in kwargs:
            raise ValueError(f"argument '{key}' given twice in '{spec}'")
        adapter = params[key]
        if adapter is None:
            kwargs[key] = _coerce(value)
            continue
        try:
            kwargs[key] = adapter.validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"]
            raise ValueError(
                f"argument {key}={value!r} of model family '{family}': {msg}"
            ) from None
    return tuple(kwargs.items())


_STRICT = ConfigDict(allow_inf_nan=False)


def _arguments(factory: ModelFactory) -> dict[str, TypeAdapter[Any] | None]:
    """The spec arguments of ``factory``: a validator each (None: untyped, kept as parsed)."""
    try:
        sig = inspect.signature(factory, eval_str=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to defaults' types
        sig = inspect.signature(factory)
    out: dict[str, TypeAdapter[Any] | None] = {}
    for name, p in sig.parameters.items():
        if name in ("input_shape", "num_classes") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann: Any = p.annotation
        if ann is p.empty or isinstance(ann, str):
            ann = type(p.default) if type(p.default) in (bool, int, float, str) else None
        try:
            out[name] = None if ann is None else TypeAdapter(ann, config=_STRICT)
        except Exception:  # noqa: BLE001 - a type pydantic cannot check: keep it as parsed
            out[name] = None
    return out


def _coerce(value: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a model from its spec for inputs of ``input_shape`` and ``num_classes``.

    Raises
    ------
    ValueError
        A bad spec, a spec that does not fit the inputs, or a model of more than
        :data:`MAX_PARAMETERS` parameters (counted on the meta device, before any memory
        is allocated).

    """
    family, kwargs = parse_spec(spec)
    _check_size(spec, tuple(int(d) for d in input_shape), int(num_classes))
    return MODEL_REGISTRY[family](input_shape=input_shape, num_classes=num_classes, **kwargs)


@functools.lru_cache(maxsize=256)
def _check_size(spec: str, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Parameters of ``spec`` for these inputs, built on the meta device (no memory)."""
    family, kwargs = parse_spec(spec)
    try:
        with torch.device("meta"):
            model = MODEL_REGISTRY[family](
                input_shape=input_shape, num_classes=num_classes, **kwargs
            )
    except ValueError:
        raise
    except TypeError as err:
        raise ValueError(f"cannot build it for inputs {input_shape}: {err}") from None
    except Exception:  # noqa: BLE001 - a factory that cannot run on meta: build it for real
        return 0
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"the model has {n:,} parameters for inputs {input_shape} and {num_classes} "
            f"classes; at most {MAX_PARAMETERS:,}"
        )
    return n


_INIT_LOCK = threading.Lock()


def build_seeded_model(
    spec: str, input_shape: tuple[int, ...], num_classes: int, seed: int
) -> nn.Module:
    """:func:`build_model` with parameters drawn from ``seed`` (thread-safe).

    The global torch RNG is forked, seeded and restored under a lock, so concurrent
    clients get the same initial weights as sequential ones.
    """
    with seeded_init(seed):
        return build_model(spec, input_shape, num_classes)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Draw from the global torch RNG seeded with ``seed``, under a lock; restored after.

    Every module built from the global RNG in client threads (students, the hint adapter)
    is built inside this block, so concurrent clients draw what sequential ones would.
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class MatmulConv1d(nn.Module):
    """1D convolution computed as unfold + matmul on channels-last tensors ``(N, L, C)``.

    Same function class as ``nn.Conv1d`` (zero padding, stride); on CPU with the tiny
    channel counts of edge students, it trains about twice as fast as ``nn.Conv1d``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        fan_in = in_ch * kernel
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(fan_in, out_ch).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_ch).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.pad(x, (0, 0, self.padding, self.padding))
        windows = x.unfold(1, self.kernel, self.stride)  # (N, L', C, k)
        return windows.flatten(2) @ self.weight + self.bias


class CNN1D(nn.Module):
    """1D convolutional classifier: ``depth`` conv blocks (kernel 5, ReLU), then a linear head.

    The first ``min(depth, 2)`` blocks downsample by 2. Input ``(N, L)`` is treated as one
    channel; ``(N, C, L)`` keeps its channels.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        in_ch, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape[:2]
        convs: list[nn.Module] = []
        for i in range(depth):
            stride = 2 if i < 2 else 1
            convs.append(MatmulConv1d(in_ch, width, 5, stride, 2))
            in_ch = width
            length = (length + 2 * 2 - 5) // stride + 1
        self.convs = nn.ModuleList(convs)
        self.head = nn.Linear(width * length, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last conv block, channels-last ``(N, L', width)``."""
        x = x.unsqueeze(-1) if x.dim() == 2 else x.transpose(1, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(self.features(x).flatten(1))

    def forward_stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """K models at once: ``params`` stacked on a leading axis, ``x`` of shape (K, N, ...).

        Same function as ``forward`` per model (batched matmuls instead of ``vmap``, whose
        ``unfold`` backward has no batching rule and falls back to a slow loop).
        """
        h = x.unsqueeze(-1) if x.dim() == 3 else x.transpose(2, 3)  # (K, N, L, C)
        k, n = h.shape[:2]
        for i, conv in enumerate(self.convs):
            assert isinstance(conv, MatmulConv1d)
            h = F.pad(h, (0, 0, conv.padding, conv.padding))
            win = h.unfold(2, conv.kernel, conv.stride)  # (K, N, L', C, k)
            length = win.shape[2]
            h = torch.baddbmm(
                params[f"convs.{i}.bias"].unsqueeze(1),
                win.reshape(k, n * length, -1),
                params[f"convs.{i}.weight"],
            )
            h = F.relu(h).view(k, n, length, -1)
        return torch.baddbmm(
            params["head.bias"].unsqueeze(1), h.flatten(2), params["head.weight"].transpose(1, 2)
        )


@register_model("cnn")
def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: Annotated[int, Field(ge=1, le=4096)] = 8,
    depth: Annotated[int, Field(ge=1, le=64)] = 3,
) -> nn.Module:
    """1D CNN with ``width`` channels per layer and ``depth`` conv layers."""
    if width < 1 or depth < 1:
        raise ValueError("cnn needs width >= 1 and depth >= 1")
    if len(input_shape) not in (1, 2):
        raise ValueError(f"cnn needs inputs of shape (L,) or (C, L), got {input_shape}")
    return CNN1D(input_shape, num_classes, int(width), int(depth))


@register_model("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: Annotated[int, Field(ge=1, le=65536)] = 128,
    depth: Annotated[int, Field(ge=0, le=64)] = 2,
) -> nn.Module:
    """Multi-layer perceptron on flattened inputs: ``depth`` hidden layers of ``width``."""
    if width < 1 or depth < 0:
        raise ValueError("mlp needs width >= 1 and depth >= 0")
    layers: list[nn.Module] = [nn.Flatten()]
    in_f = prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(in_f, int(width)), nn.ReLU()]
        in_f = int(width)
    layers.append(nn.Linear(in_f, num_classes))
    return nn.Sequential(*layers)
