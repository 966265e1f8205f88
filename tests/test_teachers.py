import numpy as np
import pytest
import torch

from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.teachers import build_teachers, save_teachers_checkpoint
from fedkd.validation import load_config

from .conftest import TINY


def test_teachers_are_cached_by_config_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKD_CACHE", str(tmp_path))
    cfg = load_config(TINY)
    first = build_teachers(cfg)
    assert first.cached == [False, False]
    second = build_teachers(cfg)
    assert second.cached == [True, True]
    np.testing.assert_array_equal(first.proxy_logits, second.proxy_logits)
    # a different recipe is a different cache entry
    other = build_teachers(load_config(TINY, ["teachers.epochs=2"]))
    assert other.cached == [False, False]
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 4


def test_teachers_train_concurrently_with_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKD_CACHE", str(tmp_path))
    cfg = load_config(TINY, ["teachers.cache=false"])
    a = build_teachers(cfg, workers=1)
    b = build_teachers(cfg, workers=2)
    np.testing.assert_array_equal(a.proxy_logits, b.proxy_logits)
    assert a.test_accuracy == b.test_accuracy and len(a.specs) == 2
    assert a.parameters[0] != a.parameters[1]  # two different architectures


def test_teachers_load_from_a_checkpoint(tmp_path):
    cfg = load_config(TINY)
    models = [build_model(spec, (40,), 10) for spec in cfg.teachers.models]
    path = tmp_path / "teachers.pt"
    save_teachers_checkpoint(models, path)
    bundle = build_teachers(load_config(TINY, [f"teachers.checkpoint={path}"]))
    assert bundle.cached == [True, True]
    x = torch.zeros(1, 40)
    assert bundle.proxy_logits.shape[0] == 2 and models[0](x).shape == (1, 10)


def test_bad_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        build_teachers(load_config(TINY, [f"teachers.checkpoint={tmp_path / 'none.pt'}"]))
    path = tmp_path / "one.pt"
    save_teachers_checkpoint([build_model("mlp:width=32", (40,), 10)], path)
    with pytest.raises(ConfigError, match="expected a list of 2 state dicts"):
        build_teachers(load_config(TINY, [f"teachers.checkpoint={path}"]))


def test_ensemble_accuracy_reported():
    cfg = load_config(TINY)
    bundle = build_teachers(cfg)
    from fedkd.data import make_splits

    splits = make_splits(cfg.data, cfg.seed)
    y = splits.data.y[splits.test]
    acc = bundle.ensemble_accuracy(y, "mean", 4.0)
    assert 0 <= acc <= 1
    manual = float((bundle.test_logits.mean(0).argmax(-1) == y).mean())
    assert acc == pytest.approx(manual)


def test_teachers_do_not_depend_on_the_callers_torch_threads(tmp_path, monkeypatch):
    # fedkd attack once trained (and cached) different teachers at 2 threads than fedkd run
    import torch

    from fedkd.teachers import build_teachers as _build
    from fedkd.validation import load_config as _load

    cfg = _load(TINY, ["teachers.cache=false"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = _build(cfg).test_accuracy
        torch.set_num_threads(1)
        one = _build(cfg).test_accuracy
    finally:
        torch.set_num_threads(before)
    assert two == one
    assert torch.get_num_threads() == before
