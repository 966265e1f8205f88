"""Run directories: where a run writes, and that runs never mix or get lost.

``name`` is a safe folder name; ``--out ""`` is refused; ``--out`` onto a non-empty
directory is refused unless ``--overwrite``, which starts clean; the same for
``fedkd compare --out`` and ``fedkd.run(out=...)``; one fedkd process per directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import fedkd
from fedkd.errors import ConfigError
from fedkd.results import LOCK_NAME, RunDirLock, check_out_dir, unique_dir
from fedkd.validation import load_config

from .conftest import TINY, fedkd_cmd, without_keys

FAST = ["baselines.local_only=false"]
TIME_KEYS = {"round_time_s", "wall_time_s", "cached", "name"}


def _strip(obj):
    return without_keys(obj, TIME_KEYS)


def _one_line_error(res, *needles: str) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(fedkd_cmd(*args), capture_output=True, text=True, timeout=300, cwd=cwd)


def _files(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------------ name


@pytest.mark.parametrize(
    "name",
    ["../../x", "/tmp/abs", "a/b", ".hidden", "..", "", "x" * 65, "a b", "a\nb", "ü", "a\\b"],
)
def test_unsafe_run_names_are_refused(name):
    with pytest.raises(ConfigError, match=r"name=.*letters, digits"):
        load_config(TINY, [f"name={json.dumps(name)}"])


@pytest.mark.parametrize("name", ["tiny", "a", "x" * 64, "run_1.v2-final", "-dash", "9"])
def test_safe_run_names_are_accepted(name):
    assert load_config(TINY, [f"name={json.dumps(name)}"]).name == name


def test_escaping_name_writes_nothing_outside_runs(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    res = _run_cli("run", str(TINY), "--set", "name=../../escaped", cwd=work)
    _one_line_error(res, "name='../../escaped'")
    assert list(tmp_path.rglob("*escaped*")) == []
    assert not (work / "runs").exists()


# ------------------------------------------------------------------------------ --out


def test_empty_out_is_refused_everywhere(tmp_path):
    _one_line_error(_run_cli("run", str(TINY), "--out", "", cwd=tmp_path), "--out=''")
    _one_line_error(
        _run_cli("compare", str(TINY), "--strategies", "local", "--out", "", cwd=tmp_path),
        "--out=''",
    )
    with pytest.raises(ConfigError, match="--out=''"):
        fedkd.run(TINY, out="")
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_a_link_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for name in ("file", "link"):
        with pytest.raises(ConfigError, match="file or a symbolic link"):
            check_out_dir(tmp_path / name)
    assert list((tmp_path / "real").iterdir()) == []


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A finished run (another seed and strategy) whose directory a new run is pointed at."""
    out = tmp_path_factory.mktemp("old") / "run"
    fedkd.run(TINY, out=out, overrides=[*FAST, "seed=3", "strategy.name=local"])
    return out


def test_out_onto_an_earlier_run_is_refused_without_overwrite(old_run, tmp_path):
    run = tmp_path / "run"

    shutil.copytree(old_run, run)
    before = _files(run)
    line = _one_line_error(_run_cli("run", str(TINY), "--out", str(run)), str(run), "not empty")
    assert "--overwrite" in line
    with pytest.raises(ConfigError, match="not empty"):
        fedkd.run(TINY, out=run, overrides=FAST)
    assert _files(run) == before


def test_overwrite_starts_clean_and_reuses_nothing(old_run, tmp_path):

    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    (run / "stray.txt").write_text("left by the old run")
    (run / "checkpoint" / "server-r9.npz").write_bytes(b"an old checkpoint")
    fresh = fedkd.run(TINY, out=tmp_path / "fresh", overrides=FAST)
    again = fedkd.run(TINY, out=run, overrides=FAST, overwrite=True)
    # the same results as a run into an empty directory: the old students were not reused
    assert _strip(again.summary) == _strip(fresh.summary)
    assert _strip(again.metrics) == _strip(fresh.metrics)
    assert not (run / "stray.txt").exists()
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["server-r2.npz"]
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    # and a resume now sees the new run (finished), not the old one
    assert fedkd.run(resume=run).summary == json.loads((run / "summary.json").read_text())


def test_overwrite_refuses_a_directory_that_is_not_a_fedkd_run(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    res = _run_cli("run", str(TINY), "--out", str(mine), "--overwrite")
    _one_line_error(res, "holds no fedkd run")
    res = _run_cli("compare", str(TINY), "--strategies", "local", "--out", str(mine), "--overwrite")
    _one_line_error(res, "holds no fedkd run")
    assert sorted(p.name for p in mine.iterdir()) == ["chapter1.tex"]


def test_resume_with_overwrite_or_out_is_refused(old_run):
    res = _run_cli("run", "--resume", str(old_run), "--overwrite")
    _one_line_error(res, "--resume DIR continues a run as configured")
    with pytest.raises(ConfigError, match="--resume"):
        fedkd.run(resume=old_run, overwrite=True)


# ------------------------------------------------------------------------------ compare --out


def test_compare_out_refused_when_not_empty_and_overwrite_starts_clean(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", str(TINY), "--strategies", "local", "--set", FAST[0], "--out", str(out)]
    first = _run_cli(*args)
    assert first.returncode == 0, first.stderr
    before = _files(out)
    _one_line_error(_run_cli(*args), str(out), "not empty")
    assert _files(out) == before
    # plant leftovers of "an older comparison": a stray file and a stale run of the same name
    (out / "stray.txt").write_text("old")
    (out / "local-seed0" / "stale.txt").write_text("old")
    second = _run_cli(*args, "--overwrite")
    assert second.returncode == 0, second.stderr
    assert not (out / "stray.txt").exists() and not (out / "local-seed0" / "stale.txt").exists()
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["status"] for r in rows] == ["ok"]
    old_rows = json.loads(before["compare.json"])["runs"]
    assert _strip(rows) == _strip(old_rows)


def test_compare_python_api_follows_the_same_rule(tmp_path):
    from fedkd.compare import compare

    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text("{}")
    with pytest.raises(ConfigError, match="not empty"):
        compare(TINY, ["local"], out=out, overrides=FAST)
    assert (out / "compare.json").read_text() == "{}"


# ------------------------------------------------------------------------------ lock


def test_lock_is_exclusive_per_directory_and_names_the_holder(tmp_path):
    run = tmp_path / "run"
    with RunDirLock(run):
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
        # flock is per open file: a second lock, even in this process, is refused
        with pytest.raises(
            ConfigError, match=rf"locked by another fedkd process \(pid {os.getpid()}\)"
        ):
            RunDirLock(run).acquire()
        with pytest.raises(ConfigError, match="locked by another fedkd process"):
            fedkd.run(TINY, out=run, overrides=FAST)
    with RunDirLock(run):  # released on exit
        pass


def test_lock_file_planted_as_a_link_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not truncate")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(victim)
    with pytest.raises(ConfigError, match="lock file"):
        RunDirLock(run).acquire()
    assert victim.read_text() == "do not truncate"


def test_default_out_dirs_never_collide(tmp_path):
    base = tmp_path / "runs" / "tiny-20260101-000000"
    assert unique_dir(base) == base
    base.mkdir(parents=True)
    assert unique_dir(base) == base.with_name(base.name + "-2")
    base.with_name(base.name + "-2").mkdir()
    assert unique_dir(base) == base.with_name(base.name + "-3")
