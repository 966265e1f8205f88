"""Cross-modal views: golden transforms, npz arrays, wiring into teachers and students."""

import numpy as np
import pytest

import fedkd
from fedkd.client.private_data import device_file
from fedkd.data import make_splits
from fedkd.validation import load_config
from fedkd.views import parse_view, student_x, teacher_x, transform, view_rows

from .conftest import TINY

X = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)


def test_downsample_is_the_mean_of_each_block_and_drops_the_remainder():
    out = transform("downsample:5", X)
    assert out.shape == (2, 2)
    assert np.allclose(out, [[2.0, 7.0], [14.0, 19.0]])


def test_crop_and_channels_select_positions_and_sensors():
    assert np.array_equal(transform("crop:3:6", X), X[:, 3:6])
    x3 = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(transform("channels:2,0", x3), x3[:, [2, 0], :])
    assert np.array_equal(transform("downsample:2", x3), x3.reshape(2, 3, 2, 2).mean(-1))
    with pytest.raises(ValueError, match=r"needs samples of shape \(C, L\)"):
        transform("channels:0", X)
    with pytest.raises(ValueError, match="exceeds the sample length 12"):
        transform("crop:0:13", X)


@pytest.mark.parametrize("spec", ["", "blur", "downsample:0", "crop:5:2", "noise:-1", "array:"])
def test_unknown_or_malformed_views_name_what_is_allowed(spec):
    with pytest.raises(ValueError, match="allowed: full, downsample:K, crop:A:B"):
        parse_view(spec)


def test_noise_is_fixed_per_sample_and_seed():
    cfg = load_config(TINY)
    splits = make_splits(cfg.data, cfg.seed)
    rows = splits.proxy[:50]
    a = view_rows("noise:0.5", splits, rows, 0)
    assert np.array_equal(a, view_rows("noise:0.5", splits, rows, 0))
    # the same sample gets the same noise whatever else is selected with it
    assert np.array_equal(a[10:20], view_rows("noise:0.5", splits, rows[10:20], 0))
    diff = a - splits.data.x[rows]
    assert 0.45 < diff.std() < 0.55
    assert not np.array_equal(a, view_rows("noise:0.5", splits, rows, 1))


def _two_modality_npz(path, n=2500):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 16)).astype(np.float32) + y[:, None]  # the rich view
    low = x.reshape(n, 4, 4).mean(-1) * 10 + 3  # another sensor, other units
    np.savez(path, x=x, y=y, x_low=low, not_per_sample=np.zeros(3))
    return x, low


def test_array_view_reads_another_npz_array_standardised(tmp_path):
    path = tmp_path / "two.npz"
    _, low = _two_modality_npz(path)
    cfg = load_config(
        TINY,
        [f"data.name=npz:{path}", "data.student_view=array:x_low", "data.teacher_size=500"],
    )
    splits = make_splits(cfg.data, cfg.seed)
    assert set(splits.data.extras) == {"x_low"}
    s = student_x(cfg.data, splits, splits.proxy, cfg.seed)
    ref = low[splits.teacher]
    assert np.allclose(s, (low[splits.proxy] - ref.mean()) / (ref.std() + 1e-8), atol=1e-5)
    assert teacher_x(cfg.data, splits, splits.proxy, cfg.seed).shape[1:] == (16,)
    with pytest.raises(ValueError, match="has no array 'x_hi' \\(it has: x_low\\)"):
        view_rows("array:x_hi", splits, splits.proxy, 0)


def test_cross_modal_run_trains_teachers_and_students_on_their_own_views(tmp_path):
    s = fedkd.run(TINY, overrides=["data.student_view=downsample:2"], out=tmp_path / "run").summary
    assert s["dataset"]["teacher_input_shape"] == [40]
    assert s["dataset"]["student_input_shape"] == [20]
    assert s["final"]["teacher_accuracy"] > 0.3  # teachers see the full signal
    assert s["final"]["student_accuracy_mean"] > 0.11


def test_a_device_file_is_seen_through_the_students_view(tmp_path):
    cfg = load_config(TINY, ["data.student_view=crop:0:10"])
    rng = np.random.default_rng(1)
    path = tmp_path / "device.npz"
    np.savez(path, x=rng.normal(size=(30, 40)).astype(np.float32), y=rng.integers(0, 10, 30))
    x, y = device_file(cfg.data, cfg.seed, str(path))
    assert tuple(x.shape) == (30, 10) and len(y) == 30


def test_a_two_array_npz_runs_cross_modal_end_to_end(tmp_path):
    path = tmp_path / "two.npz"
    _two_modality_npz(path)
    s = fedkd.run(
        TINY,
        overrides=[f"data.name=npz:{path}", "data.student_view=array:x_low"],
        out=tmp_path / "run",
    ).summary
    assert s["dataset"]["teacher_input_shape"] == [16]
    assert s["dataset"]["student_input_shape"] == [4]
    assert s["final"]["teacher_accuracy"] > 0.5  # 4 well-separated classes, rich view
    assert s["final"]["student_accuracy_mean"] > 0.3  # better than chance (0.25)
