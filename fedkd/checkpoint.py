"""Round checkpoints of the server side of a run: what ``fedkd run --resume`` needs.

After every completed round, ``<run dir>/checkpoint/server-r<R>.npz`` holds the strategy's
state (:meth:`KDStrategy.checkpoint_state`), the metrics rows so far, the global RNG
states, the time spent and the sha256 of the run's resolved config (a resume refuses a
``config.json`` changed since). It is written to a temporary file and renamed, so a
half-written checkpoint is never read. Node states live in the engine's
:class:`fedkd.state_store.ClientStateStore`, committed right after the checkpoint.

File format (nothing in it can run code when read)
--------------------------------------------------
A plain ``.npz`` archive read with ``np.load(allow_pickle=False)``:

- ``meta``: UTF-8 JSON as a ``uint8`` array: ``{"format": "fedkd-checkpoint",
  "version": 1, "round": R, "config_sha256": HEX}``;
- ``tree``: UTF-8 JSON as a ``uint8`` array, the payload. JSON numbers, strings, ``null``,
  lists and objects (str keys not starting with ``$``) stand for themselves; every other
  value is an object with a ``"$"`` tag: ``tuple``, ``set``, ``frozenset``, ``dict`` /
  ``odict`` (``items``: ``[key, value]`` pairs, keys int or str), ``float`` (``nan``,
  ``inf``, ``-inf``), ``ndarray`` / ``npscalar`` / ``bytes`` (``ref``: an array member),
  ``tensor`` (``ref`` and torch ``dtype``), ``arrayrecord`` (Flower ``ArrayRecord``: each
  ``Array``'s ``dtype``, ``shape``, ``stype`` and its serialized bytes by ``ref``) and
  ``dataclass`` (one of a fixed list, e.g. ``Traffic``);
- ``a0``, ``a1``, ...: the arrays referred to.

:func:`encode_tree` refuses (``TypeError``, at save time) any type not listed above;
:func:`decode_tree` rebuilds only those types and refuses anything else. Checkpoints of
older fedkd versions (``server-r<R>.pt``, a pickle) are refused, never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedkd.errors import ConfigError
from fedkd.results import atomic_write_bytes

if TYPE_CHECKING:
    from fedkd.config import FedkdConfig

FORMAT = "fedkd-checkpoint"
VERSION = 1
_NAME = re.compile(r"^server-r(?P<round>\d+)\.npz$")
_LEGACY = re.compile(r"^server-r(?P<round>\d+)\.pt$")

#: torch dtypes a checkpoint stores, by name; bfloat16 travels as the int16 of its bits
_TORCH_DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    )
}


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read (corrupt, truncated, foreign or old format)."""


def _dataclasses() -> dict[str, type]:
    """The dataclasses a checkpoint may hold, by tag name (a fixed list, never imported by name)."""
    from fedkd.traffic import Traffic

    return {"Traffic": Traffic}


# --------------------------------------------------------------------------- encoder
class _Encoder:
    """Turns a payload into a JSON tree plus numbered arrays (see the module docstring)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.classes = _dataclasses()
        self.class_names = {cls: name for name, cls in self.classes.items()}

    def ref(self, arr: np.ndarray, where: str) -> str:
        if arr.dtype.hasobject:
            raise TypeError(f"checkpoint: {where} is an object array, which cannot be stored")
        key = f"a{len(self.arrays)}"
        self.arrays[key] = arr
        return key

    def encode(self, obj: Any, where: str) -> Any:
        t = type(obj)
        if obj is None or t in (bool, int, str):
            return obj
        if t is float:
            return obj if math.isfinite(obj) else {"$": "float", "v": repr(obj)}
        if t is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if t is tuple:
            return {"$": "tuple", "items": self.encode(list(obj), where)}
        if t in (set, frozenset):
            return {"$": t.__name__, "items": self.encode(list(obj), where)}
        if t in (dict, OrderedDict):
            for k in obj:
                if type(k) not in (int, str):
                    raise TypeError(
                        f"checkpoint: {where} has a key {k!r} of type {type(k).__name__}; "
                        "keys must be int or str"
                    )
            plain = t is dict and all(type(k) is str and not k.startswith("$") for k in obj)
            if plain:
                return {k: self.encode(v, f"{where}.{k}") for k, v in obj.items()}
            tag = "dict" if t is dict else "odict"
            return {
                "$": tag,
                "items": [[k, self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()],
            }
        if t is np.ndarray:
            return {"$": "ndarray", "ref": self.ref(obj, where)}
        if isinstance(obj, np.generic):
            return {"$": "npscalar", "ref": self.ref(np.asarray(obj), where)}
        if t is bytes:
            return {"$": "bytes", "ref": self.ref(np.frombuffer(obj, np.uint8), where)}
        if t is torch.Tensor:
            return self.tensor(obj, where)
        if t is ArrayRecord:
            items = []
            for name, arr in obj.items():
                items.append(
                    [
                        name,
                        {
                            "dtype": arr.dtype,
                            "shape": [int(s) for s in arr.shape],
                            "stype": arr.stype,
                            "ref": self.ref(np.frombuffer(arr.data, np.uint8), f"{where}.{name}"),
                        },
                    ]
                )
            return {"$": "arrayrecord", "items": items}
        if t in self.class_names:
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            return {
                "$": "dataclass",
                "type": self.class_names[t],
                "fields": self.encode(fields, where),
            }
        raise TypeError(
            f"checkpoint: cannot store {where} of type {t.__module__}.{t.__qualname__}; "
            "fedkd.checkpoint stores dicts, lists, tuples, sets, numbers, strings, None, "
            "numpy arrays, torch tensors, ArrayRecords and "
            f"{', '.join(self.classes)} (extend its encoder for a new type)"
        )

    def tensor(self, obj: torch.Tensor, where: str) -> dict[str, Any]:
        if obj.layout != torch.strided or obj.is_quantized:
            raise TypeError(f"checkpoint: {where} is a {obj.layout} tensor; only dense ones")
        name = str(obj.dtype).removeprefix("torch.")
        if name not in _TORCH_DTYPES:
            raise TypeError(f"checkpoint: {where} has torch dtype {obj.dtype}, not stored")
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return {"$": "tensor", "dtype": name, "ref": self.ref(t.numpy(), where)}


def encode_tree(obj: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """``obj`` as a JSON-able tree and the arrays it refers to.

    Raises
    ------
    TypeError
        A value of a type the format does not hold, naming where it is in ``obj``.

    """
    enc = _Encoder()
    return enc.encode(obj, "payload"), enc.arrays


# --------------------------------------------------------------------------- decoder
class _Decoder:
    def __init__(self, arrays: Any) -> None:
        self.arrays = arrays
        self.classes = _dataclasses()

    def array(self, node: dict[str, Any]) -> np.ndarray:
        ref = node["ref"]
        if not isinstance(ref, str) or not re.fullmatch(r"a\d+", ref):
            raise ValueError(f"bad array reference {ref!r}")
        return self.arrays[ref]

    def decode(self, node: Any) -> Any:
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(v) for v in node]
        if type(node) is not dict:
            raise ValueError(f"unexpected JSON value {type(node).__name__}")
        if "$" not in node:
            return {k: self.decode(v) for k, v in node.items()}
        tag = node["$"]
        if tag == "float":
            if node["v"] not in ("nan", "inf", "-inf"):
                raise ValueError(f"bad float {node['v']!r}")
            return float(node["v"])
        if tag in ("tuple", "set", "frozenset"):
            items = self.decode(self._list(node["items"]))
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
        if tag in ("dict", "odict"):
            out: dict[Any, Any] = {} if tag == "dict" else OrderedDict()
            for pair in self._list(node["items"]):
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in (int, str):
                    raise ValueError("bad dict item")
                out[pair[0]] = self.decode(pair[1])
            return out
        if tag == "ndarray":
            return self.array(node)
        if tag == "npscalar":
            arr = self.array(node)
            if arr.ndim != 0:
                raise ValueError("numpy scalar with a shape")
            return arr[()]
        if tag == "bytes":
            return self._bytes(self.array(node))
        if tag == "tensor":
            dtype = _TORCH_DTYPES[node["dtype"]]
            t = torch.from_numpy(np.array(self.array(node)))
            return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t.to(dtype)
        if tag == "arrayrecord":
            arrays: dict[str, Array] = {}
            for pair in self._list(node["items"]):
                name, spec = pair
                if type(name) is not str:
                    raise ValueError("bad ArrayRecord key")
                arrays[name] = Array(
                    dtype=str(spec["dtype"]),
                    shape=tuple(int(s) for s in self._list(spec["shape"])),
                    stype=str(spec["stype"]),
                    data=self._bytes(self.array(spec)),
                )
            return ArrayRecord(arrays)
        if tag == "dataclass":
            cls = self.classes[node["type"]]
            fields = self.decode(node["fields"])
            if type(fields) is not dict or set(fields) != {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(f"fields of {node['type']} do not match")
            return cls(**fields)
        raise ValueError(f"unknown tag {tag!r}")

    @staticmethod
    def _list(value: Any) -> list[Any]:
        if type(value) is not list:
            raise ValueError("expected a list")
        return value

    @staticmethod
    def _bytes(arr: np.ndarray) -> bytes:
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise ValueError("bytes must be a 1-d uint8 array")
        return arr.tobytes()


def decode_tree(tree: Any, arrays: Any) -> Any:
    """Rebuild what :func:`encode_tree` encoded (``arrays``: a mapping of ``a<N>`` names).

    Raises
    ------
    ValueError, KeyError, TypeError
        A tree that :func:`encode_tree` cannot have written.

    """
    return _Decoder(arrays).decode(tree)


# --------------------------------------------------------------------------- files
def checkpoint_dir(out: Path) -> Path:
    """Folder of a run's checkpoints."""
    return out / "checkpoint"


def config_digest(cfg: FedkdConfig) -> str:
    """sha256 (hex) of the resolved config JSON, as ``config.json`` holds it."""
    return hashlib.sha256(cfg.to_json().encode()).hexdigest()


def rng_states() -> dict[str, Any]:
    """The process-wide RNG states (Python, numpy, torch)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def _json_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, allow_nan=False).encode(), np.uint8)


def save_checkpoint(
    out: Path, server_round: int, payload: dict[str, Any], *, config_sha256: str
) -> Path:
    """Write round ``server_round``'s checkpoint atomically (see the module for the format).

    Parameters
    ----------
    out : Path
        Run directory.
    server_round : int
        The round just completed.
    payload : dict
        What a resume needs (strategy state, metrics rows, RNG states, ...).
    config_sha256 : str
        :func:`config_digest` of the run's config.

    Raises
    ------
    TypeError
        ``payload`` holds a type the format does not store (nothing is written).

    """
    tree, arrays = encode_tree(payload)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "round": server_round,
        "config_sha256": config_sha256,
    }
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, meta=_json_array(meta), tree=_json_array(tree), **arrays)
    folder = checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"server-r{server_round}.npz"
    atomic_write_bytes(path, buf.getvalue())
    return path


def prune_checkpoints(out: Path, keep_round: int) -> None:
    """Delete checkpoints older than ``keep_round`` and stray temporary files."""
    folder = checkpoint_dir(out)
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m is None or int(m["round"]) < keep_round:
            p.unlink(missing_ok=True)


@dataclass(frozen=True)
class CheckpointInfo:
    """The header of a checkpoint: its file, round and the config digest it was made with."""

    path: Path
    round: int
    config_sha256: str


def _newest(out: Path) -> Path | None:
    """The newest checkpoint file; a refusal if only old-format (pickle) ones are there."""
    folder = checkpoint_dir(out)
    if not folder.is_dir():
        return None
    found = sorted(
        (int(m["round"]), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) is not None
    )
    if found:
        return found[-1][1]
    legacy = sorted(p.name for p in folder.iterdir() if _LEGACY.match(p.name))
    if legacy:
        raise CheckpointError(
            f"{folder / legacy[-1]}: checkpoint in the old pickle format, which fedkd no "
            "longer loads (reading it could run code); this run cannot be resumed, start it "
            "again with a new --out"
        )
    return None


def _read(path: Path, with_payload: bool) -> tuple[dict[str, Any], Any]:
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files") or "meta" not in f.files or "tree" not in f.files:
                raise ValueError("no meta/tree members: not written by fedkd")
            meta = json.loads(_bytes_of(f["meta"]))
            if type(meta) is not dict or meta.get("format") != FORMAT:
                raise ValueError("not a fedkd checkpoint")
            if meta.get("version") != VERSION:
                raise ValueError(f"format version {meta.get('version')!r}, expected {VERSION}")
            expected = int(_NAME.match(path.name)["round"])  # type: ignore[index]
            if type(meta.get("round")) is not int or meta["round"] != expected:
                raise ValueError(f"round {meta.get('round')!r} does not match the file name")
            if type(meta.get("config_sha256")) is not str:
                raise ValueError("no config_sha256")
            payload = None
            if with_payload:
                arrays = {k: f[k] for k in f.files if re.fullmatch(r"a\d+", k)}
                payload = decode_tree(json.loads(_bytes_of(f["tree"])), arrays)
                if type(payload) is not dict:
                    raise ValueError("payload is not a dict")
    except CheckpointError:
        raise
    except Exception as err:  # any failure to parse is one refusal
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable fedkd checkpoint ({type(err).__name__}: {reason}); "
            "it is corrupt or was not written by fedkd"
        ) from None
    return meta, payload


def _bytes_of(arr: np.ndarray) -> bytes:
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError("meta/tree must be 1-d uint8 arrays")
    return arr.tobytes()


def checkpoint_info(out: Path) -> CheckpointInfo | None:
    """Header of the newest checkpoint in ``out`` (``None`` if there is none).

    Raises
    ------
    CheckpointError
        The newest checkpoint is unreadable or in the old pickle format.

    """
    path = _newest(out)
    if path is None:
        return None
    meta, _ = _read(path, with_payload=False)
    return CheckpointInfo(path, meta["round"], meta["config_sha256"])


def latest_checkpoint(out: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint of the run in ``out`` (``None`` if there is none).

    Returns the saved payload plus ``round`` and ``config_sha256``.

    Raises
    ------
    CheckpointError
        The newest checkpoint is unreadable, not fedkd's, or in the old pickle format;
        nothing in the file is executed either way.

    """
    path = _newest(out)
    if path is None:
        return None
    meta, payload = _read(path, with_payload=True)
    return {**payload, "round": meta["round"], "config_sha256": meta["config_sha256"]}


def check_config(out: Path, info: CheckpointInfo | dict[str, Any], cfg: FedkdConfig) -> None:
    """Refuse to resume ``out`` when its config is not the one its checkpoint was made with.

    Raises
    ------
    ConfigError
        One line naming the run directory.

    """
    digest = info.config_sha256 if isinstance(info, CheckpointInfo) else info["config_sha256"]
    if digest != config_digest(cfg):
        raise ConfigError(
            f"--resume {out}: config.json was changed after the run started (its sha256 "
            "differs from the one in the checkpoint); a resume continues the run as it was "
            "configured: restore config.json or start a new run with --out"
        )
