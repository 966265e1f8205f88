import hashlib

import numpy as np
import pytest

from fedkd.config import DataConfig, PartitionConfig
from fedkd.data import client_partitions, load_dataset, load_npz, make_splits, partition_clients
from fedkd.errors import DataError


def test_mnist1d_is_generated_offline_and_cached_with_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKD_CACHE", str(tmp_path))
    import mnist1d.data

    def no_download(*a, **k):
        raise AssertionError("get_dataset downloads; fedkd must not call it")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    cfg = DataConfig(num_samples=500)
    ds = load_dataset(cfg, 3)
    files = list(tmp_path.glob("mnist1d-500-3.npz"))
    assert len(files) == 1 and ds.x.shape == (500, 40) and ds.num_classes == 10
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    files[0].unlink()
    from fedkd import data as data_mod

    data_mod._load_dataset.cache_clear()
    load_dataset(cfg, 3)
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == digest


def test_splits_are_disjoint_and_sized():
    cfg = DataConfig(
        num_samples=1000, teacher_size=300, proxy_size=0.2, client_pool_size=250, test_size=100
    )
    s = make_splits(cfg, 0)
    parts = [s.teacher, s.proxy, s.clients, s.test]
    assert [len(p) for p in parts] == [300, 200, 250, 100]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)


def test_splits_that_do_not_fit_are_a_clear_error():
    with pytest.raises(DataError, match="need 1200 samples"):
        make_splits(
            DataConfig(
                num_samples=1000,
                teacher_size=600,
                proxy_size=600,
                client_pool_size=0.0001,
                test_size=0.0001,
            ),
            0,
        )


def _labels(n=4000, k=10, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


@pytest.mark.parametrize(
    ("n_clients", "cfg"),
    [
        (200, PartitionConfig(kind="dirichlet", alpha=0.05)),
        (100, PartitionConfig(kind="dirichlet", alpha=0.1)),
        (5, PartitionConfig(kind="dirichlet", alpha=0.05)),
        (37, PartitionConfig(kind="iid")),
        (50, PartitionConfig(kind="classes", classes_per_client=2)),
    ],
)
def test_partitions_are_disjoint_covering_and_nonempty(n_clients, cfg):
    y = _labels()
    parts = partition_clients(y, n_clients, cfg, seed=1)
    assert len(parts) == n_clients
    flat = np.concatenate(parts)
    assert len(flat) == len(y) and len(np.unique(flat)) == len(y)  # a partition of the pool
    assert min(len(p) for p in parts) >= cfg.min_size


def test_dirichlet_partitions_are_seeded_and_skewed():
    y = _labels()
    a = partition_clients(y, 20, PartitionConfig(alpha=0.1), seed=4)
    b = partition_clients(y, 20, PartitionConfig(alpha=0.1), seed=4)
    c = partition_clients(y, 20, PartitionConfig(alpha=0.1), seed=5)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(len(p) == len(q) and np.array_equal(p, q) for p, q in zip(a, c, strict=True))
    # label skew: the dominant class holds most of a typical client's data
    share = np.median([np.bincount(y[p], minlength=10).max() / len(p) for p in a])
    iid = partition_clients(y, 20, PartitionConfig(kind="iid"), seed=4)
    share_iid = np.median([np.bincount(y[p], minlength=10).max() / len(p) for p in iid])
    assert share > 0.5 > share_iid


def test_classes_partition_gives_k_classes():
    y = _labels()
    parts = partition_clients(
        y, 30, PartitionConfig(kind="classes", classes_per_client=3, min_size=1), seed=0
    )
    assert all(len(np.unique(y[p])) <= 3 for p in parts)


def test_pool_too_small_lowers_min_size_with_a_warning(caplog):
    y = _labels(100)
    with caplog.at_level("WARNING", logger="fedkd"):
        parts = partition_clients(y, 50, PartitionConfig(min_size=4), seed=0)
    assert "25 clients get private data" in caplog.text
    sizes = [len(p) for p in parts]
    assert len(parts) == 50 and sizes.count(0) == 25 and min(s for s in sizes if s) >= 4
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))  # still a partition
    more = partition_clients(_labels(100), 300, PartitionConfig(min_size=1), seed=0)
    assert len(more) == 300 and sum(len(p) for p in more) == 100


def test_client_partitions_index_the_client_pool():
    cfg = DataConfig(
        num_samples=1000, teacher_size=0.2, proxy_size=0.2, client_pool_size=0.4, test_size=0.2
    )
    parts = client_partitions(cfg, PartitionConfig(alpha=0.3), 10, 0)
    pool = set(make_splits(cfg, 0).clients.tolist())
    assert set(np.concatenate(parts).tolist()) == pool


# ---------------------------------------------------------------- npz datasets


def test_npz_loads_and_infers_shape(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.random.rand(50, 3, 16), y=np.arange(50) % 4)
    ds = load_npz(str(p), DataConfig(), 0)
    assert ds.input_shape == (3, 16) and ds.num_classes == 4 and ds.x.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((5, 3))}, "missing array\\(s\\) y"),
        (
            {"x": np.zeros((5, 3)), "y": np.zeros(4, int)},
            "y has shape \\(4,\\) but x has 5 samples",
        ),
        ({"x": np.zeros((5, 3)), "y": np.array([0.5, 1, 2, 3, 4])}, "labels must be integers"),
        ({"x": np.zeros(5), "y": np.zeros(5, int)}, "allowed: \\(N, features\\)"),
        ({"x": np.full((5, 3), np.nan), "y": np.zeros(5, int)}, "finite"),
    ],
)
def test_npz_errors_are_one_clear_line(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=message) as err:
        load_npz(str(p), DataConfig(), 0)
    assert "\n" not in str(err.value)


def test_npz_missing_or_not_npz(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_npz(str(tmp_path / "nope.npz"), DataConfig(), 0)
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(str(junk), DataConfig(), 0)
