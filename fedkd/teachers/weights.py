"""A user's weight files, read without pickle: ``.safetensors`` and ``.npz`` of arrays.

Every file is checked from its header before any tensor is read: names against the
model's ``state_dict`` (missing, unexpected), then each tensor's shape and dtype, so a
crafted header (truncated file, huge claimed shapes, foreign dtypes) is refused in one
line and nothing larger than the model itself is ever allocated. Tensors are then copied
one at a time into the model's own parameters (no second copy of the weights).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedkd.errors import ConfigError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
"""Suffixes of pickle-based files, refused (loading one can run arbitrary code)."""
FORMATS = ".safetensors or .npz"
CONVERT = "python simulations/convert_weights.py"

Header = dict[str, tuple[tuple[int, ...], str]]
"""Tensor name -> (shape, dtype kind: 'float', 'int', 'bool' or a foreign dtype name)."""
Reader = Callable[[str], torch.Tensor]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "float"
    return "bool" if dtype == torch.bool else "int" if not dtype.is_complex else str(dtype)


def _st_kind(name: str) -> str:
    if name == "BOOL":
        return "bool"
    if name in ("F16", "BF16", "F32", "F64"):
        return "float"
    return "int" if name[:1] in "IU" and name[1:].isdigit() else name


def _np_kind(dtype: np.dtype) -> str:
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(dtype.kind, str(dtype))


@contextmanager
def _safetensors(path: Path, where: str) -> Iterator[tuple[Header, Reader]]:
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # noqa: BLE001 - any malformed file: one refusal
        raise ConfigError(
            f"{where}: {path} is not a readable .safetensors file ({_one_line(err)})"
        ) from None
    with handle as f:
        header: Header = {}
        for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
            part = f.get_slice(name)
            header[name] = (tuple(int(d) for d in part.get_shape()), _st_kind(part.get_dtype()))
        yield header, f.get_tensor


def _npz_header(path: Path, where: str) -> Header:
    header: Header = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not an .npy array")
                with z.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(fp)
                name = info.filename.removesuffix(".npy")
                if dtype.hasobject:
                    raise ConfigError(
                        f"{where}: {path}: array {name!r} holds Python objects (a pickle), "
                        "which fedkd never loads; store numeric arrays only"
                    )
                header[name] = (tuple(int(d) for d in shape), _np_kind(dtype))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, SyntaxError) as err:
        raise ConfigError(
            f"{where}: {path} is not a readable .npz archive of arrays ({_one_line(err)})"
        ) from None
    return header


@contextmanager
def _npz(path: Path, where: str) -> Iterator[tuple[Header, Reader]]:
    header = _npz_header(path, where)
    with np.load(path, allow_pickle=False) as arrays:
        yield header, lambda name: torch.from_numpy(np.ascontiguousarray(arrays[name]))


@contextmanager
def open_weights(path_text: str, where: str) -> Iterator[tuple[Header, Reader]]:
    """The header and a tensor reader of the weight file ``path_text`` (one-line errors).

    Raises
    ------
    ConfigError
        The file is missing, a pickle (refused, with how to convert it), of another
        format, or not readable as its format says.

    """
    path = Path(path_text).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ConfigError(
            f"{where}: weights={path_text!r} is a pickle file ({suffix}), which fedkd never "
            f"loads (it can run code); convert your own file once with `{CONVERT} "
            f"{path_text}` and give the .safetensors it writes"
        )
    if suffix not in (".safetensors", ".npz"):
        raise ConfigError(f"{where}: weights={path_text!r}: unknown format; allowed: {FORMATS}")
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "file not found"
        raise ConfigError(f"{where}: weights={path_text!r}: {what}")
    opener = _safetensors if suffix == ".safetensors" else _npz
    with opener(path, where) as opened:
        yield opened


def _shape(shape: tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def _names(items: list[str]) -> str:
    shown = ", ".join(repr(n) for n in items[:5])
    return shown + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")


def check_header(header: Header, state: dict[str, torch.Tensor], where: str) -> list[str]:
    """Names of ``header`` to copy into ``state``; ConfigError naming the first mismatch.

    A name the model ties to another (shared storage) may be absent if its twin is there.
    """
    ptrs = {n: t.data_ptr() for n, t in state.items() if t.numel()}
    present = {ptrs[n] for n in header if n in ptrs}
    missing = [n for n in state if n not in header and not (n in ptrs and ptrs[n] in present)]
    if missing:
        raise ConfigError(f"{where}: missing keys in the weights file: {_names(missing)}")
    unexpected = [n for n in header if n not in state]
    if unexpected:
        raise ConfigError(
            f"{where}: unexpected keys in the weights file (not in the model): {_names(unexpected)}"
        )
    for name, (shape, kind) in header.items():
        want = state[name]
        if shape != tuple(want.shape):
            raise ConfigError(
                f"{where}: key {name!r} has shape {_shape(shape)} in the weights file, "
                f"the model has {_shape(tuple(want.shape))}"
            )
        if kind != _kind(want.dtype):
            raise ConfigError(
                f"{where}: key {name!r} is of dtype {kind} in the weights file, the model "
                f"has {want.dtype} (floating-point weights of any common precision are cast)"
            )
    return list(header)


@torch.no_grad()
def load_weights(model: nn.Module, path_text: str, where: str) -> None:
    """Copy the tensors of weight file ``path_text`` into ``model``, checked first.

    Parameters
    ----------
    model : nn.Module
        The freshly built teacher; its parameters and buffers are overwritten in place.
    path_text : str
        A ``.safetensors`` file or an ``.npz`` of arrays named like ``model.state_dict()``.
    where : str
        The config key in messages (``teachers.given[0]``).

    Raises
    ------
    ConfigError
        One line: missing/unreadable/pickle file, missing or unexpected keys, a wrong
        shape (both shapes named) or dtype, or non-finite values.

    """
    state = model.state_dict(keep_vars=True)
    with open_weights(path_text, where) as (header, read):
        for name in check_header(header, state, where):
            try:
                value = read(name)
            except Exception as err:  # noqa: BLE001 - a body that lies about its header
                raise ConfigError(
                    f"{where}: weights={path_text!r}: key {name!r} is unreadable ({_one_line(err)})"
                ) from None
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ConfigError(f"{where}: key {name!r} holds NaN or infinite values")
            state[name].copy_(value)
            del value
