"""Teachers the user brings (``[[teachers.given]]``): loaded, never trained, never cached.

A test writes a module in a temporary package, saves its weights, runs fedkd and checks
that the reported accuracies are those of exactly these weights.
"""

import hashlib
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import fedkd
from fedkd.data import make_splits
from fedkd.models import build_model
from fedkd.teachers import build_teachers
from fedkd.teachers import training as teacher_training
from fedkd.validation import load_config
from fedkd.views import teacher_x

from .conftest import TINY

NETS = '''
import torch
from torch import nn


class Wide(nn.Module):
    """Not one of fedkd's families: LayerNorm, GELU, a residual hidden block."""

    def __init__(self, features, num_classes, width):
        super().__init__()
        self.inp = nn.Linear(features, width)
        self.norm = nn.LayerNorm(width)
        self.block = nn.Sequential(nn.GELU(), nn.Linear(width, width))
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.norm(self.inp(x.flatten(1)))
        return self.out(h + self.block(h))


def make_teacher(input_shape, num_classes, width=16):
    return Wide(input_shape[-1], num_classes, width)


def no_classes(width=16):
    return Wide(40, 7, width)


def wrong_input(width=16):
    return Wide(30, 10, width)


def not_a_module(width=16):
    return "a string"


NOT_CALLABLE = 3
'''


def write_user_package(tmp_path, monkeypatch):
    """A package ``myteachers`` in a folder outside sys.path, and a clean import state."""
    root = tmp_path / "userlib"
    (root / "myteachers").mkdir(parents=True)
    (root / "myteachers" / "__init__.py").write_text("")
    (root / "myteachers" / "nets.py").write_text(textwrap.dedent(NETS))
    (root / "broken.py").write_text("import torch\nraise RuntimeError('no GPU driver here')\n")
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    for name in ("myteachers", "myteachers.nets", "broken"):
        monkeypatch.delitem("sys.modules", name, raising=False)
    monkeypatch.setenv("FEDKD_CACHE", str(tmp_path / "cache"))
    return root


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """:func:`write_user_package`."""
    return write_user_package(tmp_path, monkeypatch)


def _teacher_data(cfg):
    splits = make_splits(cfg.data, cfg.seed)
    x = {
        part: torch.from_numpy(teacher_x(cfg.data, splits, getattr(splits, part), cfg.seed))
        for part in ("teacher", "test")
    }
    y = {part: torch.from_numpy(splits.data.y[getattr(splits, part)]) for part in x}
    return x, y


def _trained_user_weights(root, cfg, path):
    """The user's teacher, fitted briefly outside fedkd, saved as safetensors."""
    import sys

    sys.path.insert(0, str(root))
    from myteachers.nets import make_teacher

    x, y = _teacher_data(cfg)
    torch.manual_seed(0)
    model = make_teacher((40,), 10, width=24)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x["teacher"]), y["teacher"]).backward()
        opt.step()
    save_file(model.state_dict(), str(path))
    model.eval()
    with torch.no_grad():
        acc = float((model(x["test"]).argmax(1) == y["test"]).double().mean())
    sys.path.remove(str(root))
    return acc


def _given(root, weights, factory="myteachers.nets:make_teacher", kwargs="{width=24}"):
    return [
        f"teachers.given=[{{factory='{factory}', kwargs={kwargs}, weights='{weights}'}}]",
        f"teachers.python_path=['{root}']",
        "teachers.count=1",
    ]


def test_a_user_teacher_is_loaded_not_trained_and_reports_its_own_accuracy(
    user_package, tmp_path, monkeypatch
):
    weights = tmp_path / "teacher0.safetensors"
    want = _trained_user_weights(user_package, load_config(TINY), weights)
    assert want > 0.3  # a real teacher, well above chance (0.1)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()

    def refuse(*args, **kwargs):
        raise AssertionError("a given teacher was trained")

    monkeypatch.setattr(teacher_training, "train_one", refuse)
    overrides = [*_given(user_package, weights), "baselines.local_only=false"]
    result = fedkd.run(TINY, overrides=overrides, out=tmp_path / "run")
    teacher = result.summary["models"]["teachers"][0]
    assert teacher["given"] is True and teacher["cached"] is False
    assert teacher["spec"] == "myteachers.nets:make_teacher"
    assert teacher["test_accuracy"] == pytest.approx(want, abs=1e-6)
    assert result.summary["final"]["teacher_accuracies"] == [teacher["test_accuracy"]]
    assert result.summary["final"]["teacher_accuracy"] == pytest.approx(want, abs=1e-6)
    saved = load_file(str(weights))
    assert teacher["parameters"] == sum(t.numel() for t in saved.values())
    # never retrained, never cached: the file is as written, the cache holds no teacher
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    assert not list((tmp_path / "cache").rglob("teachers/*"))
    bundle = build_teachers(load_config(TINY, overrides))
    for name, value in bundle.models[0].state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    assert bundle.cached == [False] and bundle.given == [True]


def test_train_split_accuracy_of_a_given_teacher_feeds_accuracy_weighted_fusion(
    user_package, tmp_path
):
    weights = tmp_path / "t.npz"
    cfg = load_config(TINY)
    _trained_user_weights(user_package, cfg, tmp_path / "t.safetensors")
    state = load_file(str(tmp_path / "t.safetensors"))
    np.savez(weights, **{k: v.numpy() for k, v in state.items()})
    two = [
        f"teachers.given=[{{factory='myteachers.nets:make_teacher', kwargs={{width=24}}, "
        f"weights='{weights}'}}, {{model='mlp:width=32', weights='{tmp_path / 'mlp.npz'}', "
        "name='plain mlp'}]",
        f"teachers.python_path=['{user_package}']",
    ]
    mlp = build_model("mlp:width=32", (40,), 10)
    np.savez(tmp_path / "mlp.npz", **{k: v.numpy() for k, v in mlp.state_dict().items()})
    bundle = build_teachers(load_config(TINY, two))
    assert bundle.specs == ["myteachers.nets:make_teacher", "plain mlp"]
    x, y = _teacher_data(cfg)
    for model, got in zip(bundle.models, bundle.train_accuracy, strict=True):
        with torch.no_grad():
            own = float((model(x["teacher"]).argmax(1) == y["teacher"]).double().mean())
        assert got == pytest.approx(own, abs=1e-6)
    np.testing.assert_allclose(bundle.fusion_weights("accuracy_weighted"), bundle.train_accuracy)
    assert bundle.proxy_logits.shape == (2, 400, 10)


def test_the_converter_writes_safetensors_fedkd_loads(tmp_path):
    from .conftest import load_script

    convert = load_script("simulations/convert_weights.py", "convert_weights")
    model = build_model("mlp:width=32", (40,), 10)
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, tmp_path / "mine.pt")
    assert convert.main([str(tmp_path / "mine.pt")]) == 0
    out = load_file(str(tmp_path / "mine.safetensors"))
    assert out.keys() == model.state_dict().keys()
    spec = f"teachers.given=[{{model='mlp:width=32', weights='{tmp_path / 'mine.safetensors'}'}}]"
    bundle = build_teachers(load_config(TINY, [spec, "teachers.count=1"]))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(bundle.models[0].state_dict()[name], value, rtol=0, atol=0)


def test_the_big_teacher_script_builds_a_ten_million_parameter_resnet():
    from .conftest import load_script

    big = load_script("simulations/big_teacher.py", "big_teacher")
    with torch.device("meta"):
        model = big.make_teacher((40,), 10)
    assert 10_000_000 <= sum(p.numel() for p in model.parameters()) <= 12_000_000
