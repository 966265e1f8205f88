"""Tensors every node of a run shares: the public proxy inputs, the test set, shapes."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fedkd.config import DataConfig, FedkdConfig
from fedkd.data import make_splits
from fedkd.views import student_shape, student_x


@dataclass(frozen=True)
class PublicData:
    """What every node of a run holds besides its private data, in the students' view.

    Attributes
    ----------
    x_proxy : torch.Tensor
        The public, unlabeled proxy inputs the soft targets refer to (by row).
    x_test, y_test : torch.Tensor
        The test set every student is evaluated on.
    input_shape : tuple of int
        Shape of one student input.
    num_classes : int
        Number of classes.

    """

    x_proxy: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int


def public_data(cfg: FedkdConfig) -> PublicData:
    """The run's :class:`PublicData` (cached per data config and seed)."""
    return _public_data_of(cfg.data, cfg.seed)


@functools.lru_cache(maxsize=4)
def _public_data_of(data: DataConfig, seed: int) -> PublicData:
    splits = make_splits(data, seed)
    return PublicData(
        torch.from_numpy(student_x(data, splits, splits.proxy, seed)),
        torch.from_numpy(student_x(data, splits, splits.test, seed)),
        torch.from_numpy(splits.data.y[splits.test]),
        student_shape(data, splits, seed),
        splits.data.num_classes,
    )
