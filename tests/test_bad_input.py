"""Hostile and nonsensical input: every case is one line ``error: ...``, exit 2, no traceback.

The CLI runs in-process (typer's CliRunner) so the ~150 cases take seconds; every case
fails in config, data, checkpoint or flag validation, before any training. One case runs
the real ``python -m fedkd`` process to pin the same behaviour outside the runner.
"""

import errno
import io
import json
import logging
import os
import pickle
import subprocess
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from fedkd.strategies import base as strategy_base
from pydantic import BaseModel
from typer.testing import CliRunner

from fedkd.cli import app
from fedkd.cli.shell import fail_os
from fedkd.config import FedkdConfig, TierConfig
from fedkd.teachers import training as teacher_training
from fedkd.validation import load_config

from .conftest import TINY, fedkd_cmd

RUNNER = CliRunner()
TIER = (
    "devices.tiers=[{name='a', preset='low_end_phone', share=1}, "
    "{name='b', preset='low_end_phone', share=1}]"
)


@pytest.fixture(autouse=True)
def _restore_process_state():
    """In-process CLI calls set logging handlers and torch threads: put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("fedkd", "flwr")}
    threads = torch.get_num_threads()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    torch.set_num_threads(threads)


class ReachedTraining(Exception):
    """A bad-input case got past validation (it would now train)."""


@pytest.fixture(autouse=True)
def _no_training(monkeypatch):
    """Every case must fail before training: reaching it fails the case at once."""

    def refuse(*args, **kwargs):
        raise ReachedTraining("input accepted: the run reached teacher training or rounds")

    monkeypatch.setattr(teacher_training, "train_one", refuse)
    monkeypatch.setattr(strategy_base.KDStrategy, "start", refuse)


def one_error_line(args: list[str]) -> str:
    """Run ``fedkd ARGS`` in-process; assert exit 2 and one ``error:`` line; return it."""
    res = RUNNER.invoke(app, [str(a) for a in args])
    crashed = res.exception if not isinstance(res.exception, SystemExit) else None
    assert crashed is None, f"{args}: raised {crashed!r}\n{res.output}"
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, f"{args}: exit {res.exit_code}\n{res.output}"
    assert len(lines) == 1, f"{args}: {len(lines)} lines\n{res.output}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in res.output
    return lines[0]


def _sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# --------------------------------------------------------------------------- config files

CONFIG_FILES = [
    ("syntax", "rounds = [1,\n", "is not valid TOML"),
    ("duplicate key", "rounds = 1\nrounds = 2\n", "is not valid TOML: Cannot overwrite"),
    ("duplicate table", "[data]\nnormalize = true\n[data]\nnormalize = false\n", "twice"),
    ("not utf-8", b'name = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9 at offset 11)"),
    ("utf-16", "rounds = 3\n".encode("utf-16"), "is not UTF-8 text"),
    ("date for int", "rounds = 1979-05-27\n", "rounds=1979-05-27: a TOML date/time"),
    ("datetime for str", "name = 1979-05-27T07:32:00Z\n", "name=1979-05-27T07:32:00+00:00"),
    ("time for float", "[distill]\ntemperature = 07:32:00\n", "distill.temperature=07:32:00"),
    ("date in a list", "[teachers]\nmodels = [1979-05-27]\n", "teachers.models"),
    ("bool for int", "rounds = true\n", "rounds=True: true/false is not a number"),
    ("float for int", "rounds = 2.5\n", "rounds=2.5: Input should be a valid integer"),
    ("int for str", "name = 3\n", "name=3: Input should be a valid string"),
    ("scalar for table", "data = 3\n", "invalid config [data]"),
    ("list for str", "[student]\nmodel = ['cnn']\n", "student.model=['cnn']"),
    (
        "huge int",
        "num_clients = 1000000000000000000000000000000\n",
        "allowed: an integer in [1, 1000000]",
    ),
    ("seed 2**32", "seed = 4294967296\n", "seed=4294967296"),
    ("rounds 1e9", "rounds = 1000000000\n", "allowed: an integer in [1, 100000]"),
    ("inf", "[distill]\nlr = inf\n", "distill.lr=inf: Input should be a finite number"),
    ("nan", "[partition]\nalpha = nan\n", "partition.alpha=nan"),
    ("overflowing float", "[distill]\nalpha = 1e400\n", "distill.alpha=inf"),
    ("negative size", "[data]\ntest_size = -0.2\n", "data.test_size=-0.2"),
    ("unknown key", "roundz = 3\n", "unknown config key 'roundz'; allowed at top level"),
    ("unknown section key", "[distill]\ntemprature = 2\n", "allowed in [distill]: loss"),
    (
        "unknown tier key",
        "[[devices.tiers]]\nname = 'a'\npreset = 'edge_gpu'\nshare = 1\ncolour = 'red'\n",
        "unknown config key 'devices.tiers[0].colour'; allowed in [devices.tiers[0]]: name",
    ),
    ("missing tier key", "[[devices.tiers]]\nname = 'a'\n", "missing config key devices.tiers[0]"),
    (
        "unknown preset",
        "[[devices.tiers]]\nname = 'a'\npreset = 'toaster'\nshare = 1\n",
        "invalid config [devices.tiers[0]]: unknown preset 'toaster'; allowed: edge_gpu",
    ),
    ("empty model list", "[teachers]\nmodels = []\n", "teachers.models=[]"),
    ("bad model in file", "[student]\nmodel = 'cnn:width=abc'\n", "width='abc'"),
    (
        "cross-field pate",
        "[teachers]\ncount = 1\n[privacy]\nmode = 'pate'\nepsilon = 1\n",
        "needs teachers.count >= 2 (teachers vote) [teachers.count=1]",
    ),
    (
        "cross-field feature teacher",
        "[teachers]\ncount = 2\n[distill]\nloss = 'hint'\nfeature_teacher = 5\n",
        "distill.feature_teacher=5 outside 0..1 (teachers.count) [teachers.count=2]",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(t, e, id=i) for i, t, e in CONFIG_FILES],
)
def test_bad_config_file(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    line = one_error_line(["run", path, "--out", tmp_path / "out"])
    assert expected in line
    assert not (tmp_path / "out").exists()  # refused before the run directory is made


def test_cross_field_error_names_fields_not_the_whole_table(tmp_path):
    line = one_error_line(
        [
            "run",
            TINY,
            *_sets(
                "strategy.name=fedavg",
                "devices.tiers=[{name='a', preset='low_end_phone', share=1, student='mlp'},"
                " {name='b', preset='low_end_phone', share=1, student='cnn'}]",
            ),
            "--out",
            tmp_path / "out",
        ]
    )
    assert "strategy.name='fedavg' averages student weights" in line
    assert "{'name'" not in line and "'num_clients'" not in line  # no dict dumped


# --------------------------------------------------------------------------- --set values

SET_VALUES = [
    ("distill.temperature=inf", "distill.temperature=inf: Input should be a finite number"),
    ("distill.temperature=-inf", "finite"),
    ("distill.temperature=nan", "distill.temperature=nan"),
    ("distill.temperature=0", "allowed: a finite number in (0, 1000]"),
    ("distill.alpha=1.5", "allowed: a finite number in [0, 1]"),
    ("distill.lr=nan", "distill.lr=nan"),
    ("attack.scale=nan", "attack.scale=nan"),
    ("strategy.fraction=0", "strategy.fraction=0"),
    ("rounds=1000000000000000000000000000000", "rounds=1000000000000000000000000000000"),
    ("rounds=1000000000", "allowed: an integer in [1, 100000]"),
    ("num_clients=1000000000000000000000000000000", "num_clients="),
    ("seed=4294967296", "allowed: an integer in [0, 4294967295]"),
    ("seed=18446744073709551616", "seed="),
    ("teachers.epochs=100000000", "teachers.epochs="),
    ("distill.batch_size=0", "distill.batch_size=0"),
    ("rounds=true", "true/false is not a number"),
    ("rounds=1979-05-27", "rounds='1979-05-27': Input should be a valid integer"),
    ("privacy.epsilon=-1", "privacy.epsilon=-1: Input should be greater than 0"),
    ("privacy.epsilon=inf", "privacy.epsilon=inf"),
    ("privacy.delta=2", "privacy.delta=2"),
    ("privacy.delta=0", "allowed: a finite number in (0, 1)"),
    ("privacy.clip=0", "privacy.clip=0"),
    ("student.model=cnn:width=abc", "argument width='abc' of model family 'cnn'"),
    ("student.model=cnn:width=0", "width='0'"),
    ("student.model=cnn:width=1.5", "width='1.5'"),
    ("student.model=cnn:width=100000000000", "width='100000000000'"),
    ("student.model=cnn:width=8,width=9", "argument 'width' given twice"),
    ("student.model=cnn:width=", "malformed model argument 'width='"),
    ("student.model=cnn:=3", "malformed model argument '=3'"),
    ("student.model=cnn:widht=3", "unknown argument 'widht' for model family 'cnn'"),
    ("student.model=resnet", "unknown model family 'resnet'"),
    ("teachers.models=['mlp:depth=-1']", "depth='-1'"),
    ("distill.assistants=['mlp:width=inf']", "width='inf'"),
    ("engine=warp", "engine='warp': unknown engine"),
    ("data.name=npz:", "npz needs a path"),
    ("novalue", "malformed override 'novalue'; use dotted.key=value"),
    ("=3", "malformed override '=3'"),
    ("a..b=1", "malformed override 'a..b=1'"),
    ("devices.tiers[x]=1", "list items are key[N]"),
    ("devices.tiers[3].name=a", "no item [3]"),
    ("name.sub=1", "'name' is not a table"),
    ("distill=3", "invalid config [distill]"),
]


@pytest.mark.parametrize(("override", "expected"), SET_VALUES)
def test_bad_set_value(tmp_path, override, expected):
    line = one_error_line(["run", TINY, "--set", override, "--out", tmp_path / "out"])
    assert expected in line
    assert not (tmp_path / "out").exists()


def _numeric_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _numeric_fields(ann, f"{prefix}{name}.")
            continue
        if typing.get_origin(ann) is list and typing.get_args(ann)[0] is TierConfig:
            yield from _numeric_fields(TierConfig, f"{prefix}{name}[0].")
            continue
        kinds = set(typing.get_args(ann)) or {ann}
        if kinds & {int, float} and bool not in kinds:
            yield f"{prefix}{name}", field


NUMERIC = list(_numeric_fields(FedkdConfig))


def test_every_numeric_config_key_has_bounds():
    assert len(NUMERIC) > 60
    for key, field in NUMERIC:
        lo = [m for m in field.metadata if hasattr(m, "ge") or hasattr(m, "gt")]
        hi = [m for m in field.metadata if hasattr(m, "le") or hasattr(m, "lt")]
        assert lo and hi, f"{key} needs a lower and an upper bound (Field(ge=..., le=...))"


@pytest.mark.parametrize("value", ["inf", "nan", str(10**30)])
def test_every_numeric_key_refuses_infinite_and_huge_values(value):
    # one CLI call per value, every key in turn in-process (same code path as `fedkd config`)
    for key, _ in NUMERIC:
        overrides = (
            [TIER, f"{key}={value}"] if key.startswith("devices.tiers") else [f"{key}={value}"]
        )
        res = RUNNER.invoke(app, ["config", str(TINY), *_sets(*overrides)])
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1, f"{key}={value}: {res.output}"
        assert lines[0].startswith(f"error: invalid config value {key}="), lines[0]
        assert "allowed:" in lines[0], lines[0]


# --------------------------------------------------------------------------- data files

N = 64
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, 12)).astype(np.float32)
Y = np.arange(N) % 3


def _savez(**arrays):
    def write(path: Path) -> None:
        np.savez(path, **arrays)

    return write


def _pickle_file(path: Path) -> None:
    path.write_bytes(pickle.dumps({"x": X, "y": Y}))


def _truncated(path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=X, y=Y)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _npy_renamed(path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, X)
    path.write_bytes(buf.getvalue())


def _pickle_member(path: Path) -> None:
    # a hand-made archive whose y.npy is a pickle of an object array
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    xb = io.BytesIO()
    np.save(xb, X)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", xb.getvalue())
        z.writestr("y.npy", buf.getvalue())


def _huge_header(path: Path) -> None:
    # declares a (10**7, 10**4) float64 x (800 GB) in a tiny file
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**4)}
    xb = io.BytesIO()
    np.lib.format.write_array_header_1_0(xb, header)
    yb = io.BytesIO()
    np.save(yb, Y)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", xb.getvalue())
        z.writestr("y.npy", yb.getvalue())


DATA_FILES = [
    ("missing y", _savez(x=X), "missing array(s) y"),
    ("missing x and y", _savez(a=X), "missing array(s) x, y"),
    ("y wrong length", _savez(x=X, y=Y[:-1]), "y has shape (63,) but x has 64 samples"),
    ("y 2-d", _savez(x=X, y=Y[:, None]), "need y of shape (N,)"),
    ("x 1-d", _savez(x=X[:, 0], y=Y), "allowed: (N, features), (N, channels, length) or images"),
    ("x 5-d", _savez(x=X.reshape(N, 2, 3, 2, 1), y=Y), "x has shape (64, 2, 3, 2, 1)"),
    ("zero features", _savez(x=np.zeros((N, 0)), y=Y), "no axis of length 0"),
    ("zero length", _savez(x=np.zeros((N, 3, 0)), y=Y), "x has shape (64, 3, 0)"),
    ("no samples", _savez(x=np.zeros((0, 12)), y=np.zeros(0, int)), "x has 0 samples"),
    ("one sample", _savez(x=X[:1], y=Y[:1]), "x has 1 samples; need at least 2"),
    ("single class", _savez(x=X, y=np.zeros(N, int)), "needs at least 2 classes"),
    ("label 10**9", _savez(x=X, y=np.where(Y == 2, 10**9, Y)), "label 1000000000 out of range"),
    ("label 10**4", _savez(x=X, y=np.where(Y == 2, 10_000, Y)), "labels must be in 0..9999"),
    ("negative label", _savez(x=X, y=Y - 1), "label -1 out of range"),
    ("uint64 label", _savez(x=X, y=Y.astype(np.uint64) * 2**62), "out of range"),
    ("float labels", _savez(x=X, y=Y + 0.5), "labels must be integers"),
    ("float label 1e12", _savez(x=X, y=Y * 1e12), "label 2000000000000 out of range"),
    ("nan labels", _savez(x=X, y=np.full(N, np.nan)), "labels must be integers"),
    ("bool labels", _savez(x=X, y=Y.astype(bool)), "y has dtype bool"),
    ("string labels", _savez(x=X, y=Y.astype(str)), "labels must be integers"),
    ("nan in x", _savez(x=np.where(X > 2, np.nan, X), y=Y), "features must be finite numbers"),
    ("inf in x", _savez(x=np.where(X > 2, np.inf, X), y=Y), "finite"),
    ("x beyond float32", _savez(x=X.astype(np.float64) * 1e300, y=Y), "float32's range"),
    ("string x", _savez(x=np.full((N, 12), "a"), y=Y), "features must be real numbers"),
    ("bool x", _savez(x=X > 0, y=Y), "x has dtype bool"),
    ("complex x", _savez(x=X.astype(complex), y=Y), "x has dtype complex128"),
    ("object x", _savez(x=np.array([{"a": 1}] * N, dtype=object), y=Y), "holds Python objects"),
    ("object extra", _savez(x=X, y=Y, z=np.array([1, "a"], object)), "array 'z' holds Python"),
    ("pickled member", _pickle_member, "array 'y' holds Python objects (a pickle)"),
    ("nan extra", _savez(x=X, y=Y, z=np.full((N, 4), np.nan)), "array 'z' holds NaN"),
    ("pickle file", _pickle_file, "not a readable .npz archive"),
    ("truncated", _truncated, "not a readable .npz archive"),
    ("npy renamed", _npy_renamed, "not a readable .npz archive"),
    ("huge declared shape", _huge_header, "GiB once loaded; at most 8 GiB"),
]


@pytest.mark.parametrize(
    ("write", "expected"),
    [pytest.param(w, e, id=i) for i, w, e in DATA_FILES],
)
def test_bad_npz(tmp_path, monkeypatch, write, expected):
    path = tmp_path / "data.npz"
    write(path)
    if "holds Python objects" in expected:  # refused unread: nothing is unpickled
        monkeypatch.setattr(pickle, "loads", _no_unpickling)
        monkeypatch.setattr(pickle, "load", _no_unpickling)
    line = one_error_line(
        ["run", TINY, "--set", f"data.name=npz:{path}", "--out", tmp_path / "out"]
    )
    assert f"data.name=npz:{path}: " in line and expected in line


def _no_unpickling(*args, **kwargs):
    raise AssertionError("an npz member was unpickled")


def test_npz_missing_or_a_directory(tmp_path):
    line = one_error_line(["run", TINY, "--set", f"data.name=npz:{tmp_path / 'no.npz'}"])
    assert "file not found" in line
    line = one_error_line(["run", TINY, "--set", f"data.name=npz:{tmp_path}"])
    assert "is a directory" in line


# --------------------------------------------------------------------------- CLI flags

CLI_FLAGS = [
    (["run", TINY, "--rounds", "abc"], "rounds='abc': Input should be a valid integer"),
    (["run", TINY, "--rounds", "0"], "rounds=0"),
    (["run", TINY, "--rounds", str(10**30)], "allowed: an integer in [1, 100000]"),
    (["run", TINY, "--rounds", "2.5"], "rounds=2.5"),
    (["run", TINY, "--seed", "-1"], "seed=-1"),
    (["run", TINY, "--seed", str(2**32)], "seed=4294967296"),
    (["run", TINY, "--num-clients", "0"], "num_clients=0"),
    (["run", TINY, "--num-clients", "many"], "num_clients='many'"),
    (["run", TINY, "--num-clients", "nan"], "num_clients=nan"),
    (["run", TINY, "--engine", "warp"], "engine='warp': unknown engine; allowed: inprocess"),
    (["run", TINY, "--engine", "3"], "engine=3"),
    (["run", "/nonexistent/scenario.toml"], "config file not found: /nonexistent/scenario.toml"),
    (["run", "tests"], "config file tests is a directory"),
    (["run"], "missing CONFIG argument"),
    (["run", TINY, "--rounds"], "Option '--rounds' requires an argument"),
    (["run", TINY, "--bogus"], "No such option '--bogus'"),
    (["runn", TINY], "No such command 'runn'"),
    (["attack", "runs/x", "--reference-epochs", "0"], "--reference-epochs"),
    (["compare", TINY], "missing --strategies"),
    (["compare", TINY, "--strategies", "nope"], "unknown strategy 'nope'"),
    (["compare", TINY, "--strategies", "local", "--seeds", "a,b"], "seeds='a,b'"),
    (["compare", TINY, "--strategies", "local", "--seeds", str(2**40)], "seed=1099511627776"),
    (["config", TINY, "--set", "rounds=0"], "rounds=0"),
]


@pytest.mark.parametrize(
    ("args", "expected"),
    [pytest.param(a, e, id=" ".join(map(str, a))) for a, e in CLI_FLAGS],
)
def test_bad_cli_flags(tmp_path, args, expected):
    if args[0] in ("run", "compare") and len(args) > 1:
        args = [args[0], "--out", str(tmp_path / "out"), *args[1:]]
    line = one_error_line(args)
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_out_that_cannot_be_a_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_error_line(["run", TINY, "--out", blocker / "run"])
    assert str(blocker / "run") in line and "Not a directory" in line
    line = one_error_line(["run", TINY, "--out", blocker])
    assert str(blocker) in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_full_disk_is_one_line_naming_the_run_directory_exit_1(capsys):
    # a real ENOSPC (writes to /dev/full always fail so), as a write in the run would raise
    with pytest.raises(OSError) as err, open("/dev/full", "w") as f:
        f.write("x" * 100)
        f.flush()
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(typer.Exit) as stop:
        fail_os(err.value, "runs/x")
    assert stop.value.exit_code == 1  # not the user's input: exit 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: cannot use runs/x: No space left on device"]


# --------------------------------------------------------------------------- teachers, models


def test_bad_teacher_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 10)
    truncated = tmp_path / "truncated.pt"
    buf = io.BytesIO()
    torch.save([{"w": torch.zeros(100)}] * 2, buf)
    truncated.write_bytes(buf.getvalue()[:200])
    not_a_list = tmp_path / "dict.pt"
    torch.save({"a": torch.zeros(2)}, not_a_list)
    wrong_count = tmp_path / "three.pt"
    torch.save([{"w": torch.zeros(2)}] * 3, wrong_count)
    mismatched = tmp_path / "mismatched.pt"
    torch.save([{"w": torch.zeros(2)}] * 2, mismatched)
    cases = [
        (garbage, "not a readable teacher checkpoint"),
        (truncated, "not a readable teacher checkpoint"),
        (not_a_list, "expected a list of 2 state dicts (teachers.count), got dict"),
        (wrong_count, "expected a list of 2 state dicts (teachers.count), got a list of 3"),
        (mismatched, "state dict 0 does not fit teacher model 'cnn:width=8,depth=2'"),
        (tmp_path, "file not found"),
    ]
    for i, (path, expected) in enumerate(cases):
        line = one_error_line(
            [
                "run",
                TINY,
                *_sets(f"teachers.checkpoint='{path}'", "baselines.local_only=false"),
                "--out",
                tmp_path / f"out{i}",
            ]
        )
        assert f"teachers.checkpoint='{path}'" in line and expected in line


def test_models_too_large_are_refused_before_any_allocation(tmp_path):
    line = one_error_line(
        ["run", TINY, "--set", "student.model=mlp:width=60000,depth=4", "--out", tmp_path / "a"]
    )
    assert "student.model='mlp:width=60000,depth=4'" in line
    assert "parameters for inputs (40,) and 10 classes; at most 100,000,000" in line
    line = one_error_line(
        [
            "run",
            TINY,
            "--set",
            "teachers.models=['cnn:width=4096,depth=64']",
            "--out",
            tmp_path / "b",
        ]
    )
    assert "teachers.models: 'cnn:width=4096,depth=64'" in line and "at most" in line


# --------------------------------------------------------------------------- run directories


def _run_dir(root: Path, name: str, checkpoint: bytes | None = None, config: str | None = None):
    run = root / name
    (run / "checkpoint").mkdir(parents=True)
    (run / "client_state").mkdir()
    (run / "config.json").write_text(load_config(TINY).to_json() if config is None else config)
    if checkpoint is not None:
        (run / "checkpoint" / "server-r1.npz").write_bytes(checkpoint)
    return run


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


RUN_DIRS = [
    ("resume a folder that is no run", lambda r: ["run", "--resume", r], "not a run directory"),
    (
        "resume a missing folder",
        lambda r: ["run", "--resume", r / "nope"],
        "not a run directory",
    ),
    (
        "resume with no checkpoint",
        lambda r: ["run", "--resume", _run_dir(r, "a")],
        "no checkpoint there",
    ),
    (
        "resume a garbage checkpoint",
        lambda r: ["run", "--resume", _run_dir(r, "a", b"\x80\x04garbage")],
        "not a readable fedkd checkpoint",
    ),
    (
        "resume a truncated checkpoint",
        lambda r: ["run", "--resume", _run_dir(r, "a", _npz_bytes(meta=np.zeros(9))[:60])],
        "not a readable fedkd checkpoint",
    ),
    (
        "resume a foreign npz checkpoint",
        lambda r: ["run", "--resume", _run_dir(r, "a", _npz_bytes(meta=np.zeros(3, np.uint8)))],
        "not a readable fedkd checkpoint",
    ),
    (
        "resume a pickled checkpoint in an npz",
        lambda r: [
            "run",
            "--resume",
            _run_dir(r, "a", _npz_bytes(meta=np.array([{"x": 1}], dtype=object))),
        ],
        "not a readable fedkd checkpoint",
    ),
    (
        "resume with config.json not JSON",
        lambda r: ["run", "--resume", _run_dir(r, "a", config="{not json")],
        "config.json is not readable JSON",
    ),
    (
        "resume with an invalid config.json",
        lambda r: ["run", "--resume", _run_dir(r, "a", config=json.dumps({"rounds": 0}))],
        "rounds=0",
    ),
    (
        "resume and a CONFIG",
        lambda r: ["run", TINY, "--resume", _run_dir(r, "a")],
        "--resume DIR continues a run as configured",
    ),
    ("attack a folder that is no run", lambda r: ["attack", r], "not a finished fedkd run"),
    (
        "attack a garbage checkpoint",
        lambda r: ["attack", _run_dir(r, "a", b"PK\x03\x04broken")],
        "not a readable fedkd checkpoint",
    ),
]


@pytest.mark.parametrize(
    ("make", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in RUN_DIRS],
)
def test_bad_run_directory(tmp_path, make, expected):
    args = make(tmp_path)
    line = one_error_line(args)
    assert expected in line
    checkpoints = list(tmp_path.glob("*/checkpoint/*"))
    assert all(p.stat().st_size < 10_000 for p in checkpoints)  # nothing was written over


# --------------------------------------------------------------------------- real process


def test_real_process_prints_one_line_for_bad_input(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'rounds = 3\nname = "\xff"\n')
    env = {**os.environ, "COLUMNS": "40"}  # a narrow terminal must not wrap the line
    proc = subprocess.run(
        fedkd_cmd("run", str(bad), "--set", "distill.temperature=nan"),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(out) == 1 and out[0].startswith("error: config file ")
    assert "is not UTF-8 text (byte 0xff at offset 19)" in out[0]
