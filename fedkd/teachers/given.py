"""Teachers the user brings (``[[teachers.given]]``): a factory or a spec, and weights.

The factory is imported from the user's own module (``teachers.python_path`` can add
its folder to ``sys.path``), called with the table's ``kwargs`` (and ``input_shape`` /
``num_classes`` when it names them), filled from a weight file read without pickle
(:mod:`fedkd.teachers.weights`) and checked by a forward pass on one input: it must
give one logit per class. Given teachers are never trained and never cached.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedkd.config import GivenTeacher
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.teachers.logits import batched_logits
from fedkd.teachers.weights import load_weights


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def add_python_path(folders: list[str]) -> None:
    """Put ``folders`` (``teachers.python_path``) in front of ``sys.path``, once each."""
    for folder in reversed(folders):
        path = str(Path(folder).expanduser().resolve())
        if path not in sys.path:
            sys.path.insert(0, path)


def import_factory(path: str, where: str) -> Callable[..., Any]:
    """The callable named ``package.module:attr`` (one-line ConfigError otherwise)."""
    module_name, _, attr = path.partition(":")
    key = f"{where}.factory={path!r}"
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(f"{err.name}.")):
            raise ConfigError(
                f"{key}: no module named {err.name!r} on sys.path (add its folder to "
                "teachers.python_path or install it)"
            ) from None
        raise ConfigError(f"{key}: importing {module_name} failed ({_one_line(err)})") from None
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's module: its reason
        raise ConfigError(f"{key}: importing {module_name} failed ({_one_line(err)})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}: {getattr(obj, '__name__', obj)!s} has no {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key}: is a {type(obj).__name__}, not callable")
    return obj


def _call_factory(
    factory: Callable[..., Any], kwargs: dict[str, Any], shape: tuple[int, ...], k: int, key: str
) -> nn.Module:
    """``factory(**kwargs)``, plus ``input_shape``/``num_classes`` when it names them."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    extra = {"input_shape": shape, "num_classes": k}
    args = {n: v for n, v in extra.items() if n in params and n not in kwargs}
    try:
        model = factory(**args, **kwargs)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code: its reason
        raise ConfigError(f"{key}: calling it failed ({_one_line(err)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{key}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_given(
    given: GivenTeacher, index: int, shape: tuple[int, ...], k: int, sample: torch.Tensor
) -> nn.Module:
    """Given teacher ``index``: built, filled with its weights, checked on ``sample``.

    Parameters
    ----------
    given : GivenTeacher
        Its ``[[teachers.given]]`` table.
    index : int
        Its position (messages name ``teachers.given[index]``).
    shape : tuple of int
        Inputs' shape without the batch axis (as the teachers see them).
    k : int
        Number of classes of the dataset.
    sample : Tensor
        One input, ``(1, *shape)``, for the output-width check.

    Returns
    -------
    nn.Module
        The teacher in eval mode.

    Raises
    ------
    ConfigError
        One line for anything wrong: import, call, weights, forward pass, class count.

    """
    where = f"teachers.given[{index}]"
    if given.model is not None:
        try:
            model = build_model(given.model, shape, k)
        except ValueError as err:
            raise ConfigError(f"{where}.model={given.model!r}: {err}") from None
    else:
        assert given.factory is not None
        factory = import_factory(given.factory, where)
        model = _call_factory(factory, given.kwargs, shape, k, f"{where}.factory={given.factory!r}")
    load_weights(model, given.weights, where)
    try:
        out = batched_logits(model, sample[:1])
    except Exception as err:  # noqa: BLE001 - the user's forward: its reason
        raise ConfigError(
            f"{where}: a forward pass on one input of shape {tuple(sample[:1].shape)} failed "
            f"({_one_line(err)})"
        ) from None
    if tuple(out.shape) != (1, k):
        raise ConfigError(
            f"{where}: the model gives outputs of shape {tuple(out.shape[1:])} per input; the "
            f"dataset has {k} classes, so it must give ({k},) logits"
        )
    return model


def total_parameters(model: nn.Module) -> int:
    """Every parameter of ``model`` (a given teacher may have frozen parts)."""
    return sum(p.numel() for p in model.parameters())
