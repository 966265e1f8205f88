"""Speed and memory of one distillation workload on four engines, side by side.

    python simulations/bench.py [--clients 100,1000] [--rounds 2] [--out bench.json]

The workload is the quickstart scenario (MNIST-1D, 3 CNN teachers, CNN students, Dirichlet
0.3) with every client sampled every round, ``local_epochs`` epochs over a
``proxy_fraction`` of the proxy set per round, then proxy logits and test accuracy per
client. It runs as

(a) ``bare``: a plain PyTorch loop written below (one client after another, each
    student and Adam state kept in a dict, torch's default threads), the yardstick;
(b) ``inprocess``: ``fedkd run`` on the in-process engine (Flower Messages, Grid);
(c) ``vectorized``: ``fedkd run`` on the vectorized engine;
(d) ``flower``: the same ServerApp and ClientApp on Flower's own simulation engine
    (``flwr.simulation.run_simulation``, Ray, one CPU per client).

Each runs in a fresh subprocess (its own peak RSS; Ray's worker processes are not
included for ``flower``). Times are the federated rounds only (sum of ``round_time_s``;
data, teachers (cached, trained once before) and discovery excluded), ratios are to (a).
Writes ``bench.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("bare", "inprocess", "vectorized", "flower")


def overrides(
    clients: int, rounds: int, epochs: int, proxy_fraction: float, cohort_size: int = 16
) -> list[str]:
    """The workload as ``fedkd run --set`` overrides of the quickstart config."""
    return [
        f"cohort_size={cohort_size}",
        f"num_clients={clients}",
        f"rounds={rounds}",
        f"distill.local_epochs={epochs}",
        f"strategy.proxy_fraction={proxy_fraction}",
        "strategy.fraction=1.0",
        "baselines.local_only=false",
        "evaluate.every=1000",  # trained clients report their accuracy in the train reply
    ]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bare(cfg: Any) -> dict[str, Any]:
    """(a) The same training as a plain PyTorch loop, no framework."""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as F

    from fedkd.data import client_partitions, make_splits
    from fedkd.models import build_seeded_model
    from fedkd.teachers import build_teachers

    splits = make_splits(cfg.data, cfg.seed)
    parts = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)
    teachers = build_teachers(cfg)
    targets_all = torch.from_numpy(teachers.proxy_logits.mean(0).astype(np.float32))
    x = torch.from_numpy(splits.x(np.arange(len(splits.data.y))))
    y = torch.from_numpy(splits.data.y)
    x_proxy_all = x[torch.from_numpy(splits.proxy)]
    x_test, y_test = x[torch.from_numpy(splits.test)], y[torch.from_numpy(splits.test)]
    shape, classes = splits.data.input_shape, splits.data.num_classes
    d, temp = cfg.distill, cfg.distill.temperature
    students: dict[int, tuple[torch.nn.Module, torch.optim.Optimizer]] = {}
    t0 = time.perf_counter()
    accs: list[float] = []
    for rnd in range(1, cfg.rounds + 1):
        rng = np.random.default_rng([cfg.seed, 5, rnd])
        k = max(1, int(round(cfg.strategy.proxy_fraction * len(x_proxy_all))))
        rows = torch.from_numpy(np.sort(rng.choice(len(x_proxy_all), k, replace=False)))
        xp, tp = x_proxy_all[rows], targets_all[rows]
        accs = []
        for c in range(cfg.num_clients):
            if c not in students:
                m = build_seeded_model(cfg.student.model, shape, classes, c)
                students[c] = (m, torch.optim.Adam(m.parameters(), lr=d.lr))
            model, opt = students[c]
            idx = torch.from_numpy(parts[c])
            xl, yl = x[idx], y[idx]
            g = torch.Generator().manual_seed(rnd * 100003 + c)
            steps = math.ceil(max(len(xp), len(xl)) / d.batch_size)
            model.train()
            for _ in range(d.local_epochs):
                pp = torch.randperm(len(xp), generator=g).split(d.batch_size)
                for s in range(steps):
                    pi = pp[s % len(pp)]
                    li = torch.randint(0, len(xl), (min(d.batch_size, len(xl)),), generator=g)
                    out = model(torch.cat([xp[pi], xl[li]]))
                    kd = F.kl_div(
                        F.log_softmax(out[: len(pi)] / temp, -1),
                        F.log_softmax(tp[pi] / temp, -1),
                        log_target=True,
                        reduction="batchmean",
                    ) * (temp**2)
                    ce = F.cross_entropy(out[len(pi) :], yl[li])
                    loss = d.alpha * kd + (1 - d.alpha) * ce
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            model.eval()
            with torch.no_grad():
                _ = model(xp)  # the logits a client would send back
                accs.append(float((model(x_test).argmax(-1) == y_test).float().mean()))
    return {"time_s": time.perf_counter() - t0, "accuracy_mean": float(np.mean(accs))}


def run_fedkd(cfg: Any, engine: str) -> dict[str, Any]:
    """(b), (c) fedkd's own engines, through ``fedkd.run``."""
    import fedkd

    with tempfile.TemporaryDirectory() as tmp:
        res = fedkd.run(cfg.model_copy(update={"engine": engine}), out=Path(tmp) / "run")
    return {
        "time_s": sum(r["round_time_s"] for r in res.metrics),
        "accuracy_mean": res.summary["final"]["student_accuracy_mean"],
    }


def run_flower(cfg: Any) -> dict[str, Any]:
    """(d) The same apps on Flower's simulation engine (Ray)."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedkd import keys
    from fedkd.client_app import app as client_app
    from fedkd.experiment import run_server

    os.environ[keys.ENV_CONFIG_JSON] = cfg.model_dump_json()
    result: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Any, context: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            res = run_server(grid, cfg, Path(tmp) / "run")
        result["time_s"] = sum(r["round_time_s"] for r in res.metrics)
        result["accuracy_mean"] = res.summary["final"]["student_accuracy_mean"]

    run_simulation(
        server,
        client_app,
        num_supernodes=cfg.num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    if not result:
        raise RuntimeError("Flower's simulation ended without a result")
    return result


def one(
    engine: str, clients: int, rounds: int, epochs: int, proxy_fraction: float, cohort_size: int
) -> None:
    """Child process: one engine on one workload; prints one JSON line."""
    from fedkd.validation import load_config

    cfg = load_config(
        ROOT / "simulations" / "quickstart.toml",
        overrides(clients, rounds, epochs, proxy_fraction, cohort_size),
    )
    if engine == "bare":
        out = run_bare(cfg)
    elif engine == "flower":
        out = run_flower(cfg)
    else:
        out = run_fedkd(cfg, engine)
    print(json.dumps({**out, "peak_rss_mb": _peak_rss_mb()}))


def main() -> None:
    """Run every engine on every client count; write bench.json and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="100,1000", help="comma-separated client counts")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    ap.add_argument("--proxy-fraction", type=float, default=1.0)
    ap.add_argument("--cohort-size", type=int, default=16, help="vectorized engine's cohort_size")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--out", default="bench.json")
    ap.add_argument("--one", nargs=2, metavar=("ENGINE", "CLIENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(
            args.one[0],
            int(args.one[1]),
            args.rounds,
            args.epochs,
            args.proxy_fraction,
            args.cohort_size,
        )
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        sys.exit(f"error: unknown engine(s) {', '.join(bad)}; allowed: {', '.join(ENGINES)}")
    try:
        counts = [int(c) for c in args.clients.split(",")]
    except ValueError:
        sys.exit(f"error: --clients {args.clients!r} must be comma-separated integers")
    # train (or load) the teachers once, so no engine pays for them
    subprocess.run(
        [sys.executable, __file__, "--one", "bare", "2", "--rounds", "1"],
        check=True,
        capture_output=True,
    )
    results: dict[str, Any] = {
        "workload": {
            "config": "simulations/quickstart.toml",
            "rounds": args.rounds,
            "local_epochs": args.epochs,
            "proxy_fraction": args.proxy_fraction,
            "fraction": 1.0,
            "cohort_size": args.cohort_size,
            "cpus": len(os.sched_getaffinity(0)),
        },
        "runs": {},
    }
    for n in counts:
        row: dict[str, Any] = {}
        for engine in engines:
            cmd = [sys.executable, __file__, "--one", engine, str(n)]
            cmd += ["--rounds", str(args.rounds), "--epochs", str(args.epochs)]
            cmd += ["--proxy-fraction", str(args.proxy_fraction)]
            cmd += ["--cohort-size", str(args.cohort_size)]
            print(f"{n} clients, {engine} ...", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                row[engine] = {"error": tail}
                continue
            row[engine] = json.loads(lines[-1])
        base = row.get("bare", {}).get("time_s")
        for r in row.values():
            if base and "time_s" in r:
                r["ratio_to_bare"] = r["time_s"] / base
        results["runs"][str(n)] = row
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'clients':>8} {'engine':>11} {'time s':>9} {'x bare':>7} {'RSS MB':>8} {'acc':>6}")
    for n, row in results["runs"].items():
        for engine, r in row.items():
            if "error" in r:
                print(f"{n:>8} {engine:>11}  error: {r['error']}")
                continue
            ratio = r.get("ratio_to_bare", float("nan"))
            print(
                f"{n:>8} {engine:>11} {r['time_s']:9.1f} {ratio:7.2f}"
                f" {r['peak_rss_mb']:8.0f} {r['accuracy_mean']:6.3f}"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
