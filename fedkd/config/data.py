"""The ``[data]`` and ``[partition]`` tables: the dataset, its splits and their partition.

Dataset names and views are checked against their registries by :mod:`fedkd.validation`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fedkd.config.section import MAX_CLASSES, MAX_SAMPLES, Section, Size


class DataConfig(Section):
    """Dataset and its disjoint splits."""

    name: str = Field(
        "mnist1d",
        description="'mnist1d' (generated offline, cached under $FEDKD_CACHE), "
        "'npz:PATH' (a file with 'x' of shape (N, features), (N, channels, length) or "
        "images (N, H, W) / (N, C, H, W) / (N, H, W, C), and integer labels 'y'), "
        "'hf:NAME' (a Hugging Face hub dataset from the local cache, read offline), "
        "'hf:/PATH' (a local copy: save_to_disk directory, parquet files or an image "
        "folder), or a registered dataset. See docs/data.md.",
    )
    layout: Literal["auto", "channels_first", "channels_last"] = Field(
        "auto",
        description="How an npz's image array is laid out. 'auto': 4-D x is channels-last "
        "(N, H, W, C) when its last axis is 1, 3 or 4 long and its second is not, else "
        "(N, C, H, W); 3-D uint8 x is (N, H, W) (one channel); 3-D x of another dtype is a "
        "1-D signal (N, channels, length). 'channels_first' / 'channels_last': x is (N, C, "
        "H, W) / (N, H, W, C), or (N, H, W) as one channel.",
    )
    image_column: str = Field(
        "auto",
        min_length=1,
        description="hf: datasets only: the column of samples. 'auto': the first Image "
        "column, else 'img' or 'image'.",
    )
    label_column: str = Field(
        "label",
        min_length=1,
        description="hf: datasets only: the column of integer labels (never read for data.proxy).",
    )
    hf_splits: tuple[str, ...] = Field(
        (),
        max_length=64,
        description="hf: datasets only: which splits are pooled (e.g. ['train', 'test']); "
        "[] pools all. fedkd then cuts its own teacher / proxy / client / test splits.",
    )
    hf_revision: str = Field(
        "",
        description="hf: hub datasets only: the revision (branch, tag or commit) to read "
        "from the local cache; '' is the default one.",
    )
    proxy: str = Field(
        "",
        description="A separate public proxy dataset (any name data.name accepts; an npz "
        "needs only 'x'); its labels are never read. '' takes the proxy split from the "
        "main dataset. Its samples must have the main dataset's shape; they are "
        "standardised with the main teacher split's statistics.",
    )
    num_samples: int = Field(
        20000,
        ge=100,
        le=10_000_000,
        description="mnist1d only: samples to generate (train + test pooled).",
    )
    teacher_size: Size = Field(
        0.4,
        gt=0,
        le=MAX_SAMPLES,
        description="Labeled teacher-train split: a fraction (< 1) or a count.",
    )
    proxy_size: Size = Field(
        0.2,
        gt=0,
        le=MAX_SAMPLES,
        description="Public proxy split (labels never used by students): a fraction (< 1) "
        "or a count of the main dataset, or with data.proxy of the proxy dataset's rows "
        "(drawn seeded).",
    )
    client_pool_size: Size = Field(
        0.2,
        gt=0,
        le=MAX_SAMPLES,
        description="Private data shared out among clients by the partitioner.",
    )
    test_size: Size = Field(
        0.2, gt=0, le=MAX_SAMPLES, description="Held-out test split for all accuracies."
    )
    normalize: bool = Field(
        True, description="Standardise features with the teacher split's mean and std."
    )
    teacher_view: str = Field(
        "full",
        description="Cross-modal: what the server's teachers see of each sample. 'full', "
        "'downsample:K' (mean of every K samples along the length), 'crop:A:B' (positions "
        "A..B-1), 'channels:I,J' (those channels of (C, L) inputs), 'noise:S' (a fixed "
        "Gaussian noise of std S per sample) or 'array:NAME' (another array of the npz, "
        "same N). See docs/losses.md.",
    )
    student_view: str = Field(
        "full",
        description="Cross-modal: what the clients' students see (private data, proxy, "
        "test); same choices as teacher_view.",
    )

    @field_validator("name")
    @classmethod
    def _npz_has_path(cls, v: str) -> str:
        return _name_has_arg(v)

    @field_validator("proxy")
    @classmethod
    def _proxy_has_path(cls, v: str) -> str:
        return _name_has_arg(v) if v else v


def _name_has_arg(v: str) -> str:
    # the dataset registry is checked by fedkd.validation
    if v.split(":", 1)[0] == "npz" and not v[4:]:
        raise ValueError("npz needs a path: npz:PATH")
    return v


class PartitionConfig(Section):
    """How the client pool is split among clients (flwr-datasets partitioners)."""

    kind: Literal["iid", "dirichlet", "classes"] = Field(
        "dirichlet",
        description="'iid', 'dirichlet' (label skew with concentration alpha) or "
        "'classes' (each client holds classes_per_client labels).",
    )
    alpha: float = Field(
        0.3,
        gt=0,
        le=10_000,
        description="Dirichlet concentration; smaller is more skewed (0.05-100).",
    )
    classes_per_client: int = Field(
        2, ge=1, le=MAX_CLASSES, description="'classes' partitioner only."
    )
    min_size: int = Field(
        4,
        ge=1,
        le=1_000_000,
        description="Every client ends with at least this many samples: if the "
        "partitioner leaves a client smaller, samples move to it from the largest clients.",
    )
