"""One lock around the work that builds Python ASTs while client threads run.

CPython 3.11 keeps the AST constructor's recursion counter per interpreter, not per
thread (gh-106905): two threads building ASTs at once can fail with ``SystemError: AST
constructor recursion depth mismatch``. In fedkd's threaded engines two such calls meet:
``np.load`` (behind Flower's ``Array.numpy()``) parses every ``.npy`` header with
``ast.literal_eval``, and the first fused optimizer imports ``torch._dynamo``, which parses
many builtin signatures. A test run hit it once in CI (a client's train reply became an
error). Both go through :data:`PARSE_LOCK`.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

PARSE_LOCK = threading.RLock()


def array_numpy(array: Array) -> np.ndarray:
    """``array.numpy()`` under :data:`PARSE_LOCK`."""
    with PARSE_LOCK:
        return array.numpy()


def record_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Every array of ``record`` as numpy, by name."""
    return {name: array_numpy(record[name]) for name in record}


def record_state_dict(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """``record.to_torch_state_dict()`` with each array decoded under the lock."""
    return {name: torch.from_numpy(a) for name, a in record_numpy(record).items()}
