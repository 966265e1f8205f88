"""Write a synthetic 64-feature (flattened 8x8) 10-class dataset as .npz for fedkd.

Each class is a random smooth 8x8 prototype; a sample is its prototype shifted by up to
one pixel, rescaled, plus noise. Usage::

    python simulations/make_tabular_npz.py /tmp/tab64.npz [--samples 12000] [--seed 0]
    fedkd run simulations/quickstart.toml --set data.name=npz:/tmp/tab64.npz
"""

from __future__ import annotations

import argparse

import numpy as np


def make(
    samples: int, seed: int, classes: int = 10, noise: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(classes, 10, 10))
    # smooth the prototypes with a 3x3 box filter so shifts keep them recognisable
    protos = sum(np.roll(np.roll(protos, i, 1), j, 2) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9
    y = rng.integers(0, classes, samples)
    dx, dy = rng.integers(0, 3, samples), rng.integers(0, 3, samples)
    x = np.stack([protos[c, a : a + 8, b : b + 8] for c, a, b in zip(y, dx, dy, strict=True)])
    x = x * rng.uniform(0.7, 1.3, (samples, 1, 1)) + noise * rng.normal(size=x.shape) * x.std()
    return x.reshape(samples, 64).astype(np.float32), y.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y = make(args.samples, args.seed)
    np.savez(args.path, x=x, y=y)
    print(f"wrote {args.path}: x {x.shape}, y {y.shape}, {len(np.unique(y))} classes")


if __name__ == "__main__":
    main()
