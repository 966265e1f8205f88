"""fedkd compare: pure aggregation and table, failure handling, end to end, CLI bad input."""

import json
import math
import subprocess
from pathlib import Path

import pytest
from fedkd.strategies.catalogue import STRATEGY_REGISTRY

import fedkd.compare as cmp
from fedkd.errors import ConfigError, RunFailed
from fedkd.results import RunResult

from .conftest import TINY, fedkd_cmd


def _result(acc, p10, local, up, down, wall, curve=None):
    curve = curve if curve is not None else [acc]
    return RunResult(
        summary={
            "rounds": len(curve),
            "final": {
                "student_accuracy_mean": acc,
                "student_accuracy_p10": p10,
                "teacher_accuracy": 0.9,
            },
            "baselines": {"local_only_accuracy_mean": local},
            "communication": {"bytes_up": up, "bytes_down": down},
            "wall_time_s": wall,
        },
        metrics=[
            {"round": i + 1, "student_accuracy_mean": a, "bytes_up": 1} for i, a in enumerate(curve)
        ],
    )


def _rows():
    a = [
        (0, _result(0.80, 0.70, 0.20, 1e6, 4e6, 10.0, [0.5, 0.80])),
        (1, _result(0.90, 0.80, 0.30, 2e6, 4e6, 20.0, [0.7, 0.90])),
        (2, _result(0.85, 0.75, 0.25, 3e6, 4e6, 30.0, [None, 0.85])),
    ]
    rows = [cmp.run_row("a", seed, Path(f"o/a-seed{seed}"), r) for seed, r in a]
    rows.append(cmp.run_row("b", 0, Path("o/b-seed0"), _result(0.5, 0.4, None, 1500, 0, 2.0)))
    rows.append(cmp.failed_row("b", 1, Path("o/b-seed1"), RunFailed("no client answered")))
    return rows


def test_summarize_mean_and_sample_std_over_seeds():
    table = cmp.summarize(_rows())
    assert [t["strategy"] for t in table] == ["a", "b"]
    a, b = table
    assert (a["runs"], a["failed"], a["seeds"]) == (3, 0, [0, 1, 2])
    expected = {
        "student_accuracy_mean": (0.85, 0.05),
        "student_accuracy_p10": (0.75, 0.05),
        "local_only_accuracy_mean": (0.25, 0.05),
        "bytes_up": (2e6, 1e6),
        "bytes_down": (4e6, 0.0),
        "wall_time_s": (20.0, 10.0),
    }
    for key, (mean, std) in expected.items():
        assert math.isclose(a[key], mean) and math.isclose(a[f"{key}_std"], std, abs_tol=1e-12)
    # one finished seed: no std; the failed seed counts as failed; missing values stay None
    assert (b["runs"], b["failed"], b["seeds"]) == (1, 1, [0])
    assert b["student_accuracy_mean"] == 0.5 and b["student_accuracy_mean_std"] is None
    assert b["local_only_accuracy_mean"] is None and b["local_only_accuracy_mean_std"] is None


def test_markdown_table_golden():
    assert cmp.markdown_table(cmp.summarize(_rows())) == (
        "| strategy | runs | students mean | p10 | local-only | bytes up | bytes down "
        "| wall time |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| a | 3 | 85.00 ± 5.00% | 75.00 ± 5.00% | 25.00 ± 5.00% | 2.0 ± 1.0 MB "
        "| 4.0 ± 0.0 MB | 20.0 ± 10.0 s |\n"
        "| b | 1 (1 failed) | 50.00% | 40.00% | - | 1.5 kB | 0 B | 2.0 s |\n"
    )


def test_rows_curves_and_failed_reason():
    rows = _rows()
    assert rows[0]["out_dir"] == str(Path("o/a-seed0")) and rows[0]["status"] == "ok"
    assert rows[-1] == {
        "strategy": "b",
        "seed": 1,
        "status": "failed",
        "error": "no client answered",
        "out_dir": str(Path("o/b-seed1")),
    }
    curves = cmp.curves(rows)
    assert curves["b"] == [(1, 0.5)]
    (r1, m1), (r2, m2) = curves["a"]
    assert (r1, r2) == (1, 2) and math.isclose(m1, 0.6) and math.isclose(m2, 0.85)
    assert cmp.one_line(ValueError("two\nlines")) == "ValueError: two lines"


def test_input_validation_names_what_is_allowed():
    assert cmp.parse_seeds(" 0, 1,2 ") == [0, 1, 2]
    assert cmp.validate_strategies(["local", "multi_teacher"]) == ["local", "multi_teacher"]
    for bad, words in [
        ("a,b", ["'a'", "non-negative integer", "0,1,2"]),
        ("-1", ["'-1'", "non-negative integer"]),
        ("0,0", ["seed 0", "twice"]),
        ("", ["no seed"]),
    ]:
        with pytest.raises(ConfigError) as err:
            cmp.parse_seeds(bad)
        assert all(w in str(err.value) for w in words), str(err.value)
    with pytest.raises(ConfigError) as err:
        cmp.validate_strategies(["local", "nope"])
    assert f"unknown strategy 'nope'; allowed: {STRATEGY_REGISTRY.allowed()}" == str(err.value)
    with pytest.raises(ConfigError, match="given twice"):
        cmp.validate_strategies(["local", "local"])


def test_failed_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    calls = []

    def fake_run(config, *, overrides, out, progress):
        name = next(o.split("=", 1)[1] for o in overrides if o.startswith("strategy.name="))
        seed = int(next(o.split("=", 1)[1] for o in overrides if o.startswith("seed=")))
        calls.append((name, seed, Path(out)))
        if (name, seed) == ("local", 0):
            raise RuntimeError("boom\nsecond line")
        progress("round", {"round": 1, "student_accuracy_mean": 0.5})
        return _result(0.5 + seed / 10, 0.4, 0.1, 100, 200, 1.0)

    monkeypatch.setattr(cmp.api, "run", fake_run)
    events = []
    result = cmp.compare(
        TINY,
        ["local", "multi_teacher"],
        [0, 1],
        tmp_path,
        ["rounds=1"],
        progress=lambda e, i: events.append((e, i.get("index"))),
    )
    assert [(n, s) for n, s, _ in calls] == [
        ("local", 0),
        ("local", 1),
        ("multi_teacher", 0),
        ("multi_teacher", 1),
    ]
    assert [p for *_, p in calls] == [tmp_path / cmp.run_dir_name(n, s) for n, s, _ in calls]
    assert events[:3] == [("run_start", 1), ("run_end", 1), ("run_start", 2)]
    assert ("round", None) in events
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["complete"] and [r["status"] for r in saved["runs"]] == [
        "failed",
        "ok",
        "ok",
        "ok",
    ]
    assert saved["runs"][0]["error"] == "RuntimeError: boom second line"
    assert "Traceback" in (tmp_path / "local-seed0" / "error.txt").read_text()
    assert [(t["strategy"], t["runs"], t["failed"]) for t in saved["table"]] == [
        ("local", 1, 1),
        ("multi_teacher", 2, 0),
    ]
    assert len(result.failed) == 1
    assert "local seed 0: RuntimeError: boom second line" in (tmp_path / "compare.md").read_text()


def test_finished_rows_survive_an_interrupted_compare(tmp_path, monkeypatch):
    def fake_run(config, *, overrides, out, progress):
        if "seed=1" in overrides:
            raise KeyboardInterrupt
        return _result(0.5, 0.4, 0.1, 100, 200, 1.0)

    monkeypatch.setattr(cmp.api, "run", fake_run)
    with pytest.raises(KeyboardInterrupt):
        cmp.compare(TINY, ["local"], [0, 1], tmp_path, [])
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert not saved["complete"] and [r["seed"] for r in saved["runs"]] == [0]
    assert (tmp_path / "compare.png").is_file() and not list(tmp_path.glob(".*.tmp"))


def test_compare_end_to_end_on_tiny(tmp_path):
    result = cmp.compare(
        TINY,
        ["multi_teacher", "local"],
        [0, 1],
        tmp_path,
        ["rounds=1", "num_clients=3", "teachers.epochs=5"],
    )
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["config"] == str(TINY) and saved["seeds"] == [0, 1]
    assert saved["strategies"] == ["multi_teacher", "local"]
    assert len(saved["runs"]) == 4 and all(r["status"] == "ok" for r in saved["runs"])
    assert [t["strategy"] for t in saved["table"]] == ["multi_teacher", "local"]
    assert all(
        t["runs"] == 2 and t["student_accuracy_mean_std"] is not None for t in saved["table"]
    )
    for r in saved["runs"]:
        summary = json.loads((Path(r["out_dir"]) / "summary.json").read_text())
        assert (summary["strategy"], summary["seed"]) == (r["strategy"], r["seed"])
        assert summary["rounds"] == 1 and summary["num_clients"] == 3
        assert r["student_accuracy_mean"] == summary["final"]["student_accuracy_mean"]
    assert (tmp_path / "compare.png").stat().st_size > 1000
    md = (tmp_path / "compare.md").read_text()
    assert result.markdown in md and "| multi_teacher | 2 |" in md and "| local | 2 |" in md


def _stderr_errors(proc):
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--strategies", "multi_teacher,nope"], ["unknown strategy 'nope'", "allowed:"]),
        (["--strategies", "local", "--seeds", "a,b"], ["seeds='a,b'", "'a'", "non-negative"]),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_nothing_runs(tmp_path, args, words):
    out = tmp_path / "o"
    proc = subprocess.run(
        fedkd_cmd("compare", str(TINY), *args, "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _stderr_errors(proc)
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    if "allowed:" in words:
        assert all(name in lines[0] for name in STRATEGY_REGISTRY)
    assert not out.exists()


def test_cli_failed_runs_are_recorded_and_exit_1(tmp_path):
    out = tmp_path / "o"
    missing = tmp_path / "missing.npz"
    proc = subprocess.run(
        fedkd_cmd(
            "compare",
            str(TINY),
            "--strategies",
            "local",
            "--set",
            f"data.name=npz:{missing}",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "1 of 1 runs failed" in proc.stderr
    saved = json.loads((out / "compare.json").read_text())
    (run,) = saved["runs"]
    assert saved["seeds"] == [0] and run["status"] == "failed"
    assert run["error"] == f"data.name=npz:{missing}: file not found"
    assert "| local | 0 (1 failed) |" in proc.stdout
