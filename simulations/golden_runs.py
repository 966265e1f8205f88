"""Record (or check) the metrics of a fixed set of small runs: the behaviour-preservation set.

Every strategy, every distillation loss, each engine, private runs with reproducible noise,
compression, an attack and an edge fleet, each on the tiny test scenario. ``record`` writes
``tests/golden/<case>.jsonl`` (``metrics.jsonl`` without its time fields, then the summary's
``final``, ``communication`` and ``privacy``) and ``tests/golden/MACHINE.json`` (what float
results depend on: CPU, its vector unit, torch, threads); ``tests/test_golden_runs.py`` reruns
every case and compares.

On a machine with the recorded fingerprint the comparison is exact. Elsewhere float rounding
differs (measured: losses agree to about 1e-5 relative, and a test sample or two flips, moving
a per-client accuracy by up to 0.004), so there floats are compared to ``rel 0.05 / abs 0.01``
and everything else (bytes, counts, names, the set of keys, the number of rounds) exactly.
Rerecord only for a change that is *meant* to alter results, and say so in the commit::

    python simulations/golden_runs.py record [CASE ...]
    python simulations/golden_runs.py check [CASE ...]   # exact comparison, one line per case
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
TINY = ROOT / "tests" / "tiny.toml"
EDGE = ROOT / "tests" / "edge_tiny.toml"
FAST = ["baselines.local_only=false", "rounds=2"]

CASES: dict[str, tuple[Path, list[str]]] = {
    **{
        f"strategy-{name}": (TINY, [f"strategy.name={name}"])
        for name in (
            "multi_teacher",
            "fedmd",
            "dsfl",
            "feddf",
            "hybrid",
            "centralized_kd",
            "fedavg",
            "local",
        )
    },
    **{
        f"loss-{name}": (TINY, [f"distill.loss={name}"])
        for name in ("hint", "rkd", "attention", "born_again", "mutual", "takd")
    },
    "engine-ray": (TINY, ["engine=ray"]),
    "engine-vectorized": (TINY, ["engine=vectorized"]),
    "private-client_dp": (
        TINY,
        [
            "strategy.name=fedmd",
            "privacy.mode=client_dp",
            "privacy.noise_multiplier=0.5",
            "privacy.reproducible_noise=true",
        ],
    ),
    "private-client_dp-local": (
        TINY,
        [
            "strategy.name=dsfl",
            "privacy.mode=client_dp",
            "privacy.local=true",
            "privacy.noise_multiplier=0.5",
            "privacy.reproducible_noise=true",
        ],
    ),
    "private-pate": (
        TINY,
        ["privacy.mode=pate", "privacy.noise_multiplier=0.5", "privacy.reproducible_noise=true"],
    ),
    "private-dp_sgd": (
        TINY,
        ["privacy.mode=dp_sgd", "privacy.noise_multiplier=1.0", "privacy.reproducible_noise=true"],
    ),
    "compression-int8-attack": (
        TINY,
        [
            "compression.soft_labels=int8",
            "attack.fraction=0.25",
            "attack.kind=scaled_logits",
            "strategy.fusion=median",
        ],
    ),
    "edge": (EDGE, []),
}

TIME_KEYS = {"round_time_s", "wall_time_s", "virtual_time_s", "time_s", "train_time_s"}


def _strip(obj: object) -> object:
    if isinstance(obj, dict):
        return {
            k: _strip(v) for k, v in obj.items() if k not in TIME_KEYS and not k.endswith("_time_s")
        }
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def run_case(name: str) -> list[dict]:
    """Run case ``name`` in a scratch directory; its metrics rows and summary parts."""
    import fedkd

    config, overrides = CASES[name]
    with tempfile.TemporaryDirectory(prefix=f"golden-{name}-") as tmp:
        fedkd.run(config, overrides=[*FAST, *overrides], out=Path(tmp) / "run")
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    tail = {k: summary.get(k) for k in ("final", "communication", "privacy")}
    return [_strip(r) for r in rows] + [_strip({"summary": tail})]


def machine() -> dict[str, object]:
    """What this machine's float results depend on (compared before demanding exact equality)."""
    import torch

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = lines[0].split(":", 1)[1].strip() if lines else ""
    return {
        "cpu": model or platform.processor(),
        "arch": platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def recorded_machine() -> dict[str, object]:
    """The fingerprint of the machine that recorded the goldens."""
    return json.loads((GOLDEN / "MACHINE.json").read_text())


def differences(got: object, want: object, exact: bool, path: str = "") -> list[str]:
    """Where ``got`` departs from ``want``: exactly, or with float tolerance when not ``exact``."""
    if isinstance(got, dict) and isinstance(want, dict):
        if set(got) != set(want):
            return [f"{path}: keys {sorted(set(got) ^ set(want))} on one side only"]
        return [d for k in sorted(want) for d in differences(got[k], want[k], exact, f"{path}.{k}")]
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} items, recorded {len(want)}"]
        pairs = zip(got, want, strict=True)
        return [
            d for i, (g, w) in enumerate(pairs) for d in differences(g, w, exact, f"{path}[{i}]")
        ]
    floats = isinstance(got, float) and isinstance(want, float)
    if floats and not exact and math.isclose(got, want, rel_tol=0.05, abs_tol=0.01):
        return []
    return [] if got == want else [f"{path}: {got!r}, recorded {want!r}"]


def golden_path(name: str) -> Path:
    """Where case ``name``'s recorded rows live."""
    return GOLDEN / f"{name}.jsonl"


def record(names: list[str]) -> None:
    """Run and write the recorded rows of ``names`` (all cases when empty)."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "MACHINE.json").write_text(json.dumps(machine(), indent=2, sort_keys=True) + "\n")
    for name in names or list(CASES):
        rows = run_case(name)
        golden_path(name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        print(f"recorded {name}: {len(rows) - 1} rounds")


def check(names: list[str]) -> int:
    """Rerun ``names`` (all when empty), compare exactly, print one line each; failures count."""
    failed = 0
    for name in names or list(CASES):
        want = [json.loads(line) for line in golden_path(name).open()]
        got = json.loads(json.dumps(run_case(name), sort_keys=True))
        found = differences(got, want, exact=True, path=name)
        failed += bool(found)
        print(f"{name}: {'identical' if not found else f'{len(found)} differences: {found[0]}'}")
    same = machine() == recorded_machine()
    print(f"{len(names or CASES) - failed} identical, {failed} differ; recording machine: {same}")
    return failed


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("record", "check"):
        sys.exit("usage: python simulations/golden_runs.py record|check [CASE ...]")
    if sys.argv[1] == "record":
        record(sys.argv[2:])
    else:
        sys.exit(1 if check(sys.argv[2:]) else 0)
