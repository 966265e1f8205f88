"""A ~10.6 M-parameter residual teacher brought by the user: time and memory of its logits.

    python simulations/big_teacher.py [--out big_teacher.json] [--proxy 2000]

Builds a wide 1-D ResNet (:func:`make_teacher`, defined here: BasicBlocks of Conv1d +
BatchNorm, widths 128-256-512-768, stride 2 per stage) for MNIST-1D, saves its randomly
initialised weights as ``.safetensors`` in a temporary folder and runs a small fedkd run
(``tests/tiny.toml``: 1 round, ``--proxy`` proxy rows) with it as ``[[teachers.given]]``.
Three cases, each in a fresh subprocess so that ``ru_maxrss`` is its own:

``small``     a given ``mlp:width=32`` (2,698 parameters): the run's own footprint;
``big``       the big teacher with the defaults (``teachers.inference_batch_size = 2048``
              cut by ``teachers.inference_memory_mb = 256`` from its measured activations);
``big_2048``  the big teacher, 2048 rows per pass whatever their activations;
``big_256``   the big teacher, 256 rows per pass.

For each: parameters, the seconds of the teacher's proxy logits (fedkd's own log line),
RSS before the run, after it, the process's peak RSS (``resource.getrusage``
``ru_maxrss``) when the proxy logits are done and at the end of the run. The weights
are random (the figure is about inference cost, not accuracy). One torch thread.

Measured 2026-12-02 on this 2-core machine (shared with other jobs; ``--proxy 2000``):
see the report in ``big_teacher.json``; the figures are quoted in docs/teachers.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (128, 256, 512, 768)


def make_teacher(input_shape, num_classes, widths=WIDTHS, stem=64):  # noqa: ANN001, ANN201
    """A wide 1-D ResNet: a stem, two BasicBlocks per stage (stride 2), pool, linear."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm1d(cout)
            self.conv2 = nn.Conv1d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm1d(cout)
            self.short = (
                nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):  # noqa: ANN001, ANN202
            h = self.bn1(self.conv1(x)).relu()
            return (self.bn2(self.conv2(h)) + self.short(x)).relu()

    class ResNet1d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv1d(1, stem, 5, 1, 2, bias=False), nn.BatchNorm1d(stem))
            blocks, cin = [], stem
            for w in widths:
                blocks += [Block(cin, w, 2), Block(w, w, 1)]
                cin = w
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):  # noqa: ANN001, ANN202
            h = self.blocks(self.stem(x.reshape(len(x), 1, -1)).relu())
            return self.fc(h.mean(-1))

    return ResNet1d()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CASES = {
    "small": [],
    "big": [],
    "big_2048": ["teachers.inference_memory_mb=1000000"],
    "big_256": ["teachers.inference_batch_size=256"],
}


class _ProxyTimes(logging.Handler):
    """Collects fedkd's ``given teacher I: proxy logits of N rows in S s`` lines."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.peak_mb: list[float] = []
        self.batch: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if b := re.search(r"(\d+) rows per forward pass", text):
            self.batch.append(int(b.group(1)))
        m = re.search(r"proxy logits of (\d+) rows in ([\d.]+) s", text)
        if m:
            self.seconds.append(float(m.group(2)))
            self.peak_mb.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def one_case(case: str, proxy: int) -> dict:
    """Run case ``case`` in this process; its figures."""
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    import fedkd

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "teacher.safetensors"
        torch.manual_seed(0)
        if case == "small":
            from fedkd.models import build_model

            model = build_model("mlp:width=32", (40,), 10)
            entry = f"{{model='mlp:width=32', weights='{weights}'}}"
        else:
            model = make_teacher((40,), 10)
            entry = f"{{factory='big_teacher:make_teacher', weights='{weights}'}}"
        params = sum(p.numel() for p in model.parameters())
        save_file(model.state_dict(), str(weights))
        del model
        times = _ProxyTimes()
        logging.getLogger("fedkd").addHandler(times)
        logging.getLogger("fedkd").setLevel(logging.INFO)
        before = _rss_mb()
        start = time.perf_counter()
        result = fedkd.run(
            ROOT / "tests" / "tiny.toml",
            overrides=[
                f"teachers.given=[{entry}]",
                "teachers.count=1",
                f"teachers.python_path=['{Path(__file__).parent}']",
                *CASES[case],
                "data.num_samples=4500",
                f"data.proxy_size={proxy}",
                "rounds=1",
                "baselines.local_only=false",
            ],
            out=Path(tmp) / "run",
        )
        wall = time.perf_counter() - start
        teacher = result.summary["models"]["teachers"][0]
    return {
        "case": case,
        "parameters": params,
        "reported_parameters": teacher["parameters"],
        "teacher_test_accuracy": teacher["test_accuracy"],
        "proxy_rows": proxy,
        "rows_per_forward_pass": times.batch[0] if times.batch else None,
        "proxy_logits_s": times.seconds[0] if times.seconds else None,
        "peak_rss_after_proxy_logits_mb": round(times.peak_mb[0], 1) if times.peak_mb else None,
        "run_wall_s": round(wall, 2),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(_rss_mb(), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": 1,
    }


def main() -> None:
    """Run the three cases in fresh subprocesses; print and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="big_teacher.json")
    ap.add_argument("--proxy", type=int, default=2000)
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON on stdout
    args = ap.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case, args.proxy)))
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for case in CASES:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", case, "--proxy", str(args.proxy)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
