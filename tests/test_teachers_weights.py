"""Bad user teachers and crafted weight files: one line, exit 2, never a crash.

Each case runs ``fedkd run`` in-process (typer's CliRunner) on the tiny config with a
``[[teachers.given]]`` entry; none may reach training.
"""

import json
import logging
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from fedkd.cli import app
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.teachers import build_given, load_weights
from fedkd.teachers import training as teacher_training
from fedkd.validation import load_config

from .conftest import TINY
from .test_teachers_given import write_user_package

RUNNER = CliRunner()
MLP = "mlp:width=32"


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """The user's package ``myteachers`` (and a failing module ``broken``)."""
    return write_user_package(tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """Restore logging and torch threads after in-process runs; refuse any training."""
    root = logging.getLogger()
    handlers, level, threads = root.handlers[:], root.level, torch.get_num_threads()

    def refuse(*args, **kwargs):
        raise AssertionError("a bad-input case reached teacher training")

    monkeypatch.setattr(teacher_training, "train_one", refuse)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    torch.set_num_threads(threads)


def one_error_line(tmp_path, *overrides: str) -> str:
    """``fedkd run tiny --set ...``: exit 2 and exactly one ``error:`` line; that line."""
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    args = ["run", str(TINY), "--out", str(out)]
    for o in [*overrides, "baselines.local_only=false"]:
        args += ["--set", o]
    res = RUNNER.invoke(app, args)
    crashed = res.exception if not isinstance(res.exception, SystemExit) else None
    assert crashed is None, f"raised {crashed!r}\n{res.output}"
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def given(weights, source: str = f"model='{MLP}'") -> list[str]:
    """One given teacher (tiny.toml has teachers.count=2: set it to 1)."""
    return [f"teachers.given=[{{{source}, weights='{weights}'}}]", "teachers.count=1"]


def mlp_state() -> dict[str, torch.Tensor]:
    return build_model(MLP, (40,), 10).state_dict()


def factory(name: str, root) -> list[str]:
    return [
        f"teachers.given=[{{factory='{name}', weights='{root / 'w.safetensors'}'}}]",
        f"teachers.python_path=['{root}']",
        "teachers.count=1",
    ]


# ------------------------------------------------------------------- factories, config


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nosuch.nets:make", "no module named 'nosuch' on sys.path (add its folder to"),
        ("broken:make", "importing broken failed (RuntimeError: no GPU driver here)"),
        ("myteachers.nets:nope", "myteachers.nets has no 'nope'"),
        ("myteachers.nets:NOT_CALLABLE", "is a int, not callable"),
        ("myteachers.nets:not_a_module", "returned a str, not a torch.nn.Module"),
    ],
)
def test_a_factory_that_cannot_give_a_module_is_one_line(user_package, tmp_path, name, expected):
    line = one_error_line(tmp_path, *factory(name, user_package))
    assert f"teachers.given[0].factory='{name}'" in line and expected in line, line


def test_factory_import_and_call_errors_give_the_users_reason(user_package, tmp_path):
    (user_package / "needs_dep.py").write_text("import timm_not_installed\n")
    line = one_error_line(tmp_path, *factory("needs_dep:make", user_package))
    assert "importing needs_dep failed (ModuleNotFoundError: No module named" in line, line
    overrides = factory("myteachers.nets:make_teacher", user_package)
    overrides[0] = overrides[0].replace("weights=", "kwargs={widht=3}, weights=")
    line = one_error_line(tmp_path, *overrides)
    assert "calling it failed (TypeError: make_teacher() got an unexpected keyword" in line, line


def test_a_teacher_with_the_wrong_number_of_classes_is_one_line(user_package, tmp_path):
    import sys

    sys.path.insert(0, str(user_package))
    from myteachers.nets import no_classes

    save_file(no_classes().state_dict(), str(user_package / "w.safetensors"))
    line = one_error_line(tmp_path, *factory("myteachers.nets:no_classes", user_package))
    assert line == (
        "error: teachers.given[0]: the model gives outputs of shape (7,) per input; the "
        "dataset has 10 classes, so it must give (10,) logits"
    )


def test_a_factory_whose_forward_fails_is_one_line(user_package, tmp_path):
    import sys

    sys.path.insert(0, str(user_package))
    from myteachers.nets import wrong_input

    save_file(wrong_input().state_dict(), str(user_package / "w.safetensors"))
    line = one_error_line(tmp_path, *factory("myteachers.nets:wrong_input", user_package))
    assert line.startswith(
        "error: teachers.given[0]: a forward pass on one input of shape (1, 40) failed ("
    ), line
    assert "1x40 and 30x16" in line, line


def test_a_teacher_for_other_inputs_is_one_line(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(build_model(MLP, (30,), 10).state_dict(), str(path))
    line = one_error_line(tmp_path, *given(path))
    assert "teachers.given[0]: key '1.weight' has shape (32, 30) in the weights file" in line
    assert "the model has (32, 40)" in line


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["teachers.given=[{model='mlp', weights='a.npz'}]"],
            "teachers.count=2 but 1 teachers.given: the given teachers replace trained ones",
        ),
        (
            ["teachers.given=[{model='mlp', factory='a:b', weights='a.npz'}]", "teachers.count=1"],
            "give exactly one of factory='pkg.module:callable' or model='spec'",
        ),
        (
            ["teachers.given=[{factory='a.b', weights='a.npz'}]", "teachers.count=1"],
            "'a.b' is not an import path; use 'package.module:callable'",
        ),
        (
            ["teachers.given=[{model='nosuch', weights='a.npz'}]", "teachers.count=1"],
            "teachers.given[0].model='nosuch': unknown model family 'nosuch'",
        ),
        (
            [*given("a.npz", "model='mlp'"), "teachers.checkpoint='c.pt'"],
            "teachers.given and teachers.checkpoint both load teachers; use one of them",
        ),
        (
            [
                "teachers.given=[{model='mlp', weights='a.npz'}, {model='mlp', weights='b.npz'}]",
                "teachers.count=2",
                "privacy.mode='pate'",
                "privacy.epsilon=1",
            ],
            "teachers.given were trained elsewhere, on data its epsilon does not cover",
        ),
    ],
)
def test_given_teachers_config_errors(tmp_path, overrides, expected):
    line = one_error_line(tmp_path, *overrides)
    assert expected in line, line


# ------------------------------------------------------------------- weight files


def _safetensors_bytes(header: dict, body: bytes) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + body


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _bad_files(tmp_path):
    """(file, what the one line must say) for each hostile or wrong weight file."""
    state = mlp_state()
    ok = tmp_path / "ok.safetensors"
    save_file(state, str(ok))
    raw = ok.read_bytes()
    huge = {"1.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}
    missing = {k: v for k, v in state.items() if k != "3.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    save_file({**state, "extra.weight": torch.ones(2)}, str(tmp_path / "extra.safetensors"))
    save_file({**state, "1.weight": state["1.weight"].long()}, str(tmp_path / "int.safetensors"))
    save_file(
        {**state, "1.bias": torch.full_like(state["1.bias"], float("nan"))},
        str(tmp_path / "nan.safetensors"),
    )
    torch.save(state, tmp_path / "teacher.pt")
    np.savez(tmp_path / "objects.npz", **{"1.weight": np.array([{"a": 1}], dtype=object)})
    np.savez(tmp_path / "wide.npz", **{k: np.zeros((4, 4), np.float32) for k in state})
    with zipfile.ZipFile(tmp_path / "liar.npz", "w") as z:  # header right, data cut short
        for name, value in state.items():
            arr = value.numpy()
            blob = (
                b"\x93NUMPY\x01\x00"
                + _npy_header(arr)
                + (arr.tobytes()[:8] if name == "1.weight" else arr.tobytes())
            )
            z.writestr(f"{name}.npy", blob)
    return [
        (_write(tmp_path, "cut.safetensors", raw[:-10]), "is not a readable .safetensors file"),
        (_write(tmp_path, "tiny.safetensors", raw[:5]), "header too small"),
        (_write(tmp_path, "huge.safetensors", _safetensors_bytes(huge, b"\0" * 64)), "readable"),
        (_write(tmp_path, "hdr.safetensors", struct.pack("<Q", 10**15) + b"{}"), "too large"),
        (_write(tmp_path, "junk.safetensors", b"not a tensor file at all"), "not a readable"),
        (tmp_path / "missing.safetensors", "missing keys in the weights file: '3.bias'"),
        (tmp_path / "extra.safetensors", "unexpected keys in the weights file (not in the"),
        (tmp_path / "int.safetensors", "key '1.weight' is of dtype int in the weights file"),
        (tmp_path / "nan.safetensors", "key '1.bias' holds NaN or infinite values"),
        (tmp_path / "teacher.pt", "is a pickle file (.pt), which fedkd never loads"),
        (tmp_path / "none.safetensors", "weights='" + str(tmp_path / "none.safetensors")),
        (_write(tmp_path, "w.h5", b"x"), "unknown format; allowed: .safetensors or .npz"),
        (_write(tmp_path, "zip.npz", b"PK not a zip"), "is not a readable .npz archive"),
        (tmp_path / "objects.npz", "array '1.weight' holds Python objects (a pickle), which"),
        (tmp_path / "wide.npz", "has shape (4, 4) in the weights file, the model has"),
        (tmp_path / "liar.npz", "key '1.weight' is unreadable"),
    ]


def _npy_header(arr: np.ndarray) -> bytes:
    text = repr({"descr": arr.dtype.str, "fortran_order": False, "shape": arr.shape}).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return struct.pack("<H", len(text)) + text


def test_bad_and_crafted_weight_files_are_one_line_never_a_crash(tmp_path):
    for path, expected in _bad_files(tmp_path):
        line = one_error_line(tmp_path, *given(path))
        assert line.startswith("error: teachers.given[0]: "), line
        assert expected in line, (path.name, line)
    line = one_error_line(tmp_path, *given(tmp_path / "teacher.pt"))
    assert "python simulations/convert_weights.py" in line


def test_corrupted_safetensors_never_crash_nor_load_silently(tmp_path):
    """Flip bytes of a valid file anywhere: a refusal in one line, or exactly the bytes."""
    state = mlp_state()
    path = tmp_path / "ok.safetensors"
    save_file(state, str(path))
    raw = bytearray(path.read_bytes())
    header_end = 8 + struct.unpack("<Q", bytes(raw[:8]))[0]
    rng = np.random.default_rng(0)
    refused = 0
    for trial in range(60):
        data = bytearray(raw)
        where = int(rng.integers(0, header_end if trial % 2 else len(raw)))
        data[where] ^= int(rng.integers(1, 256))
        bad = tmp_path / f"bad{trial}.safetensors"
        bad.write_bytes(bytes(data))
        model = build_model(MLP, (40,), 10)
        try:
            load_weights(model, str(bad), "teachers.given[0]")
        except ConfigError as err:
            assert "\n" not in str(err) and str(err).startswith("teachers.given[0]: ")
            refused += 1
    assert refused >= 20  # header damage is caught; body damage changes values only


def test_given_teacher_loading_keeps_no_second_copy_of_the_weights(tmp_path, monkeypatch):
    """Tensors are read and copied one at a time into the model's own storage."""
    state = mlp_state()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = build_model(MLP, (40,), 10)
    storage = {n: t.data_ptr() for n, t in model.state_dict().items()}
    live = []
    real = torch.Tensor.copy_

    def watched(self, src, *a, **k):
        live.append(src.numel())
        return real(self, src, *a, **k)

    monkeypatch.setattr(torch.Tensor, "copy_", watched)
    load_weights(model, str(path), "teachers.given[0]")
    assert {n: t.data_ptr() for n, t in model.state_dict().items()} == storage
    assert max(live) == max(t.numel() for t in state.values()) and len(live) == len(state)
    for name, value in state.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


def test_a_spec_teacher_loads_from_an_npz_in_eval_mode(tmp_path):
    state = mlp_state()
    path = tmp_path / "w.npz"
    np.savez(path, **{k: v.numpy() for k, v in state.items()})
    g = load_config(TINY, given(path)).teachers.given[0]
    model = build_given(g, 0, (40,), 10, torch.zeros(1, 40))
    assert not model.training
    for name, value in state.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
