"""Behaviour preservation: fixed small runs reproduce their recorded metrics.

The recorded rows live in ``tests/golden/`` and are written by
``python simulations/golden_runs.py record``; only a change meant to alter results rerecords
them. Time fields are left out of both sides. On the recording machine (same CPU, vector unit,
torch and thread count) the comparison is exact; elsewhere floats get the tolerance that
cross-CPU rounding needs (see the script's docstring).
"""

import json

import pytest

from .conftest import load_script

golden = load_script("simulations/golden_runs.py", "golden_runs")
EXACT = golden.machine() == golden.recorded_machine()


@pytest.mark.parametrize("case", sorted(golden.CASES))
def test_case_reproduces_its_recorded_metrics(case):
    recorded = [json.loads(line) for line in golden.golden_path(case).open()]
    rows = json.loads(json.dumps(golden.run_case(case), sort_keys=True))
    assert golden.differences(rows, recorded, exact=EXACT, path=case) == []


def test_every_case_has_a_recording_and_no_recording_is_orphaned():
    on_disk = {path.stem for path in golden.GOLDEN.glob("*.jsonl")}
    assert on_disk == set(golden.CASES)


def test_the_comparison_catches_a_changed_metric_and_tolerates_only_float_rounding():
    row = {"round": 1, "loss": 2.0, "bytes_up": 100, "tags": ["a"]}
    assert golden.differences(row, dict(row), exact=True) == []
    assert golden.differences({**row, "loss": 2.0 + 1e-12}, row, exact=True) != []
    assert golden.differences({**row, "loss": 2.001}, row, exact=False) == []
    assert golden.differences({**row, "loss": 2.5}, row, exact=False) != []
    assert golden.differences({**row, "bytes_up": 101}, row, exact=False) != []
    assert golden.differences({**row, "extra": 1}, row, exact=False) != []
