"""Image arrays: layouts, compact uint8 storage, per-channel standardisation, proxy sets."""

import numpy as np
import pytest
from typer.testing import CliRunner

import fedkd
from fedkd.cli import app
from fedkd.config import DataConfig
from fedkd.data import channel_stats, load_dataset, make_splits, to_channels_first
from fedkd.errors import DataError
from fedkd.views import transform

from .conftest import TINY

RUNNER = CliRunner()
SIZES = [
    "data.teacher_size=150",
    "data.proxy_size=100",
    "data.client_pool_size=150",
    "data.test_size=100",
    'teachers.models=["mlp:width=16"]',
    "teachers.count=1",
    "teachers.epochs=10",
    'student.model="mlp:width=16"',
]


def _images(n=500, k=3, seed=0):
    """uint8 (N, 3, 8, 8) images whose class lights up one channel's centre."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.integers(0, 120, (n, 3, 8, 8)).astype(np.uint8)
    for c in range(k):
        x[y == c, c, 2:6, 2:6] += 120
    return x, y


def _cli(*args):
    res = RUNNER.invoke(app, [str(a) for a in args])
    return res.exit_code, [ln for ln in res.output.splitlines() if ln.strip()]


def test_npz_channels_first_and_channels_last_run_end_to_end_alike(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "chw.npz", x=x, y=y)
    np.savez(tmp_path / "hwc.npz", x=x.transpose(0, 2, 3, 1), y=y)
    summaries = []
    for name, layout in [("chw", "auto"), ("hwc", "auto"), ("hwc", "channels_last")]:
        over = [f"data.name=npz:{tmp_path / name}.npz", f"data.layout={layout}", *SIZES]
        summaries.append(fedkd.run(TINY, overrides=over, out=tmp_path / f"{name}{layout}").summary)
    first = summaries[0]
    assert first["dataset"]["input_shape"] == [3, 8, 8]
    assert first["final"]["teacher_accuracy"] > 0.9  # the class signal is learnt
    for other in summaries[1:]:  # the same images in another layout: the same run
        assert other["dataset"]["input_shape"] == [3, 8, 8]
        assert other["final"] == first["final"]


def test_uint8_images_stay_uint8_until_a_split_is_taken(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "d.npz", x=x.transpose(0, 2, 3, 1), y=y)
    cfg = DataConfig(
        name=f"npz:{tmp_path / 'd.npz'}",
        teacher_size=200,
        proxy_size=100,
        client_pool_size=100,
        test_size=100,
    )
    ds = load_dataset(cfg, 0)
    assert ds.x.dtype == np.uint8 and ds.x.shape == (500, 3, 8, 8)
    assert ds.x.nbytes == 500 * 3 * 8 * 8  # one byte per value in memory
    np.testing.assert_array_equal(ds.x, x)
    s = make_splits(cfg, 0)
    assert s.data.x.dtype == np.uint8 and s.data.x.nbytes == x.nbytes
    xt, yt = s.xy("teacher")
    assert xt.dtype == np.float32 and xt.shape == (200, 3, 8, 8)
    # per channel: the teacher split has mean 0 and std 1 in every channel
    np.testing.assert_allclose(xt.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(xt.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_array_equal(yt, y[s.teacher])
    # a device's own file is standardised the same way
    np.testing.assert_array_equal(s.normalize(x[s.test]), s.x(s.test))


def test_per_channel_statistics_golden_values():
    x = np.zeros((2, 2, 1, 2), np.uint8)
    x[:, 0] = [[[0, 2]], [[4, 6]]]  # channel 0: 0, 2, 4, 6 -> mean 3, std sqrt(5)
    x[:, 1] = 10  # channel 1: constant -> mean 10, std 0 (+1e-8)
    mean, std = channel_stats(x, np.arange(2), chunk=1)
    np.testing.assert_allclose(mean, [3.0, 10.0])
    np.testing.assert_allclose(std, [np.sqrt(5.0), 1e-8], rtol=1e-6)
    mean1, _ = channel_stats(x, np.array([1]))
    np.testing.assert_allclose(mean1, [5.0, 10.0])


def test_layouts_of_image_arrays():
    a = np.arange(2 * 5 * 6 * 3, dtype=np.uint8).reshape(2, 5, 6, 3)
    np.testing.assert_array_equal(to_channels_first(a, "auto", "w"), a.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(
        to_channels_first(a, "channels_last", "w"), a.transpose(0, 3, 1, 2)
    )
    assert to_channels_first(a, "channels_first", "w").shape == (2, 5, 6, 3)
    gray = a[..., 0]
    assert to_channels_first(gray, "auto", "w").shape == (2, 1, 5, 6)  # uint8 (N, H, W)
    signal = gray.astype(np.float32)
    assert to_channels_first(signal, "auto", "w").shape == (2, 5, 6)  # stays (N, C, L)
    assert to_channels_first(signal, "channels_first", "w").shape == (2, 1, 5, 6)
    with pytest.raises(DataError, match=r"data.layout=channels_last needs images of shape"):
        to_channels_first(signal[:, 0], "channels_last", "w")


def test_views_on_images_full_noise_channels_work_crop_is_refused():
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    assert transform("channels:0,2", x).shape == (4, 2, 5, 5)
    noise = np.ones_like(x)
    np.testing.assert_allclose(transform("noise:0.5", x, noise), x + 0.5)
    for spec in ("crop:0:2", "downsample:2"):
        with pytest.raises(ValueError, match="images allow full, noise:S, channels"):
            transform(spec, x)


def test_proxy_from_another_npz_without_labels_runs_end_to_end(tmp_path):
    x, y = _images(600)
    np.savez(tmp_path / "main.npz", x=x[:400], y=y[:400])
    np.savez(tmp_path / "proxy.npz", x=x[400:].transpose(0, 2, 3, 1))  # no labels at all
    over = [
        f"data.name=npz:{tmp_path / 'main.npz'}",
        f"data.proxy=npz:{tmp_path / 'proxy.npz'}",
        *SIZES,
        "data.proxy_size=150",
    ]
    from fedkd.validation import load_config

    cfg = load_config(TINY, over)
    s = make_splits(cfg.data, cfg.seed)
    assert len(s.proxy) == 150 and s.proxy.min() == 400 and s.proxy_source
    assert (s.data.y[s.proxy] == -1).all() and s.data.x.dtype == np.uint8
    pooled = np.concatenate([s.teacher, s.clients, s.test])
    assert pooled.max() < 400 and len(np.unique(pooled)) == 400
    # standardised with the MAIN teacher split's per-channel statistics
    mean, std = channel_stats(x[:400], s.teacher)
    np.testing.assert_allclose(s.norm_mean, mean) and np.testing.assert_allclose(s.norm_std, std)
    summary = fedkd.run(TINY, overrides=over, out=tmp_path / "run").summary
    assert summary["final"]["teacher_accuracy"] > 0.9
    assert summary["final"]["student_accuracy_mean"] > 0.5


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (
            lambda x, y: {"x": x.reshape(len(x), -1).astype(np.float32), "y": y},
            ["data.layout=channels_last"],
            "data.layout=channels_last needs images of shape (N, H, W) or (N, H, W, C)",
        ),
        (lambda x, y: {"x": x, "y": y}, ["data.proxy=npz:{tmp}/p.npz"], "data.proxy=npz:"),
    ],
)
def test_bad_image_inputs_are_one_line_exit_2(tmp_path, make, extra, message):
    x, y = _images(500)
    np.savez(tmp_path / "d.npz", **make(x, y))
    np.savez(tmp_path / "p.npz", x=x[:, :2])  # two channels: not the main dataset's shape
    sets = []
    for item in [f"data.name=npz:{tmp_path / 'd.npz'}", *SIZES, *extra]:
        sets += ["--set", item.replace("{tmp}", str(tmp_path))]
    code, lines = _cli("run", TINY, "--out", tmp_path / "run", *sets)
    assert code == 2 and len(lines) == 1, lines
    assert message in lines[0], lines[0]
    if "proxy" in message:
        assert "(2, 8, 8)" in lines[0] and "(3, 8, 8)" in lines[0]


def test_registered_dataset_as_proxy_drops_its_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 40)).astype(np.float32)
    np.savez(tmp_path / "sig.npz", x=x, y=rng.integers(0, 4, 300))
    cfg = DataConfig(
        name=f"npz:{tmp_path / 'sig.npz'}",
        proxy="mnist1d",
        num_samples=500,
        teacher_size=100,
        proxy_size=0.5,
        client_pool_size=100,
        test_size=100,
    )
    s = make_splits(cfg, 0)
    assert len(s.proxy) == 250 and (s.data.y[s.proxy] == -1).all()
    assert s.data.num_classes == 4  # the proxy's 10 mnist1d classes are not seen
    ref = x[s.teacher]
    mean, std = float(ref.mean()), float(ref.std() + 1e-8)
    np.testing.assert_allclose(s.x(s.teacher), (x[s.teacher] - mean) / std, rtol=1e-5)
    too_many = cfg.model_copy(update={"proxy_size": 501})
    with pytest.raises(
        DataError,
        match=r"data.proxy=mnist1d: data.proxy_size=501 gives 501 rows; the proxy dataset has 500",
    ):
        make_splits(too_many, 0)
