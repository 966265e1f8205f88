"""Hugging Face datasets: local copies (save_to_disk, parquet, image folder), the hub
offline, the decoded-array cache, and a separate proxy set whose labels are never read."""

import json
import os
import subprocess
import time

import datasets
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fedkd
from fedkd.cli import app
from fedkd.config import DataConfig
from fedkd.data import hub as hub_mod
from fedkd.data import load_dataset, make_splits

from .conftest import TINY, fedkd_cmd

RUNNER = CliRunner()
SMALL = [
    "data.teacher_size=0.3",
    "data.proxy_size=0.2",
    "data.client_pool_size=0.3",
    "data.test_size=0.2",
    'teachers.models=["mlp:width=16"]',
    "teachers.count=1",
    "teachers.epochs=10",
    'student.model="mlp:width=16"',
]


def _pixels(n, k=3, seed=0, size=(8, 8)):
    """uint8 (N, H, W, 3) images whose class lights one channel's centre, and labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.integers(0, 120, (n, size[1], size[0], 3)).astype(np.uint8)
    for c in range(k):
        x[y == c, 2:6, 2:6, c] += 120
    return x, y


def _hf(n, seed=0, labels=None):
    x, y = _pixels(n, seed=seed)
    feats = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}
    )
    data = {"img": [Image.fromarray(a) for a in x], "label": y.tolist()}
    if labels is not None:  # a proxy set's label column of garbage
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.Value("string")})
        data["label"] = labels
    return datasets.Dataset.from_dict(data, features=feats), x, y


def test_save_to_disk_copy_loads_as_uint8_images_and_is_cached(tmp_path):
    ds, x, y = _hf(60)
    split = ds.train_test_split(test_size=20, shuffle=False)
    split.save_to_disk(str(tmp_path / "copy"))
    cfg = DataConfig(name=f"hf:{tmp_path / 'copy'}")
    got = load_dataset(cfg, 0)
    assert got.x.dtype == np.uint8 and got.x.shape == (60, 3, 8, 8)
    np.testing.assert_array_equal(got.x, x.transpose(0, 3, 1, 2))  # train then test
    np.testing.assert_array_equal(got.y, y)
    only = load_dataset(cfg.model_copy(update={"hf_splits": ("test",)}), 0)
    np.testing.assert_array_equal(only.y, y[40:])


def test_decoded_arrays_are_cached_and_not_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKD_CACHE", str(tmp_path / "cache"))
    ds, x, _ = _hf(40, seed=1)
    ds.save_to_disk(str(tmp_path / "one"))
    cfg = DataConfig(name=f"hf:{tmp_path / 'one'}", label_column="label")
    first = hub_mod.load_hf(str(tmp_path / "one"), cfg, 0)
    files = list((tmp_path / "cache" / "hf").glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0]) as f:
        assert f["x"].dtype == np.uint8 and f["x"].shape == (40, 3, 8, 8)

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(hub_mod, "_pil_arrays", no_decode)
    again = hub_mod.load_hf(str(tmp_path / "one"), cfg, 0)
    np.testing.assert_array_equal(again.x, first.x)


def test_parquet_and_imagefolder_copies_load_the_same_images(tmp_path):
    ds, x, y = _hf(60, seed=2)
    ds.to_parquet(str(tmp_path / "data.parquet"))
    got = load_dataset(DataConfig(name=f"hf:{tmp_path / 'data.parquet'}"), 0)
    np.testing.assert_array_equal(got.x, x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got.y, y)
    root = tmp_path / "folder"
    for i, (a, c) in enumerate(zip(x, y, strict=True)):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / f"class{c}" / f"{i:03d}.png")
    folder = load_dataset(DataConfig(name=f"hf:{root}"), 0)
    assert folder.x.dtype == np.uint8 and folder.x.shape == (60, 3, 8, 8)
    # the same multiset of (image, label) pairs, whatever order the folder gives
    key = lambda xs, ys: sorted(a.tobytes() + bytes([b]) for a, b in zip(xs, ys, strict=True))  # noqa: E731
    assert key(folder.x, folder.y) == key(x.transpose(0, 3, 1, 2), y)


def test_hf_copy_with_separate_hf_proxy_runs_dirichlet_end_to_end(tmp_path):
    main, _, _ = _hf(300, seed=3)
    main.save_to_disk(str(tmp_path / "main"))
    garbage = [f"not-a-label-{i}" for i in range(150)]  # labels of the proxy: garbage
    proxy, _, _ = _hf(150, seed=4, labels=garbage)
    proxy.save_to_disk(str(tmp_path / "proxy"))
    over = [
        f"data.name=hf:{tmp_path / 'main'}",
        f"data.proxy=hf:{tmp_path / 'proxy'}",
        *SMALL,
        "data.proxy_size=100",
        "partition.kind=dirichlet",
        "partition.alpha=0.5",
    ]
    from fedkd.validation import load_config

    cfg = load_config(TINY, over)
    s = make_splits(cfg.data, cfg.seed)
    assert s.data.x.dtype == np.uint8 and len(s.proxy) == 100 and s.proxy.min() == 300
    summary = fedkd.run(TINY, overrides=over, out=tmp_path / "run").summary
    assert summary["dataset"]["input_shape"] == [3, 8, 8]
    assert summary["final"]["teacher_accuracy"] > 0.8
    assert summary["final"]["student_accuracy_mean"] > 0.5
    part = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert part["kind"] == "dirichlet" and part["alpha"] == 0.5
    sizes = [c["size"] for c in part["clients"]]
    assert sum(sizes) == len(s.clients) == 90 and min(sizes) >= cfg.partition.min_size


def _cli(*args):
    res = RUNNER.invoke(app, [str(a) for a in args])
    return res.exit_code, [ln for ln in res.output.splitlines() if ln.strip()]


def test_images_of_different_sizes_are_one_line_exit_2(tmp_path):
    x, y = _pixels(30)
    big, _ = _pixels(10, size=(9, 8))
    imgs = [Image.fromarray(a) for a in x] + [Image.fromarray(a) for a in big]
    ds = datasets.Dataset.from_dict(
        {"img": imgs, "label": [*y.tolist(), *[0] * 10]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")}),
    )
    ds.save_to_disk(str(tmp_path / "mixed"))
    code, lines = _cli("run", TINY, "--set", f"data.name=hf:{tmp_path / 'mixed'}")
    assert code == 2 and len(lines) == 1, lines
    assert "different sizes: 8x8 (30 images), 9x8 (10 images)" in lines[0]


def test_proxy_shape_mismatch_and_missing_column_are_one_line_exit_2(tmp_path):
    main, _, _ = _hf(100)
    main.save_to_disk(str(tmp_path / "main"))
    x, _ = _pixels(50, size=(6, 6))
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in x]})
    ds.save_to_disk(str(tmp_path / "small"))
    base = ["--set", f"data.name=hf:{tmp_path / 'main'}", *sum((["--set", s] for s in SMALL), [])]
    code, lines = _cli("run", TINY, *base, "--set", f"data.proxy=hf:{tmp_path / 'small'}")
    assert code == 2 and len(lines) == 1, lines
    assert "samples have shape (3, 6, 6)" in lines[0] and "(3, 8, 8)" in lines[0]
    code, lines = _cli("run", TINY, *base, "--set", "data.label_column=fine_label")
    assert code == 2 and len(lines) == 1, lines
    assert "data.label_column='fine_label' is not a column; the dataset has img, label" in lines[0]


def test_hub_name_not_cached_offline_is_one_line_exit_2_fast(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "FEDKD_CACHE": str(tmp_path / "c")}
    env.pop("HF_HUB_OFFLINE", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        fedkd_cmd(
            "run",
            str(TINY),
            "--set",
            "data.name=hf:uoft-cs/cifar10",
            "--out",
            str(tmp_path / "run"),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    took = time.monotonic() - t0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    line = lines[0]
    assert "data.name=hf:uoft-cs/cifar10: not found in the local Hugging Face cache" in line
    assert str(tmp_path / "hf") in line  # where it looked
    assert "datasets.load_dataset('uoft-cs/cifar10')" in line and "save_to_disk" in line
    assert took < 30, took


@pytest.mark.parametrize("splits", [("validation",)])
def test_unknown_hf_split_is_a_clear_error(tmp_path, splits):
    ds, _, _ = _hf(40)
    ds.train_test_split(test_size=10).save_to_disk(str(tmp_path / "d"))
    from fedkd.errors import DataError

    with pytest.raises(DataError, match="asks for validation; the dataset has train, test"):
        load_dataset(DataConfig(name=f"hf:{tmp_path / 'd'}", hf_splits=splits), 0)
