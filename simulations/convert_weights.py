"""Convert YOUR OWN PyTorch weight file (.pt/.pth/.bin, a pickle) to .safetensors.

fedkd never loads a pickle: ``teachers.given`` takes ``.safetensors`` (or ``.npz``). Run
this once on a file you made yourself or fully trust::

    python simulations/convert_weights.py teacher.pt                # -> teacher.safetensors
    python simulations/convert_weights.py ckpt.pth out.safetensors --key state_dict

WARNING: this script *does* read a pickle. It uses ``torch.load(weights_only=True)``,
which only rebuilds tensors and plain containers, but a pickle parser is still exposed
to the file; never run it on a file from someone you do not trust (ask them for a
.safetensors instead). The output holds only named tensors and is safe to share.

``--key`` picks a nested state dict (``{"state_dict": {...}}``, ``{"model": {...}}``;
tried automatically). A ``torch.save(model)`` whole-module file cannot be read with
``weights_only=True``: load it in your own code and save ``model.state_dict()``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

NESTED = ("state_dict", "model_state_dict", "model", "module")


def _state_dict(obj: object, key: str | None) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping inside ``obj`` (a state dict, maybe nested)."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise SystemExit(f"error: no key {key!r} at the top of the file")
        obj = obj[key]
    elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for name in NESTED:
            if isinstance(obj.get(name), dict):
                obj = obj[name]
                break
    if not isinstance(obj, dict) or not obj:
        raise SystemExit(f"error: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise SystemExit(f"error: entries that are not named tensors: {bad[:5]}; use --key")
    # safetensors refuses tensors sharing memory (tied weights): store each on its own
    return {k: v.detach().cpu().contiguous().clone() for k, v in obj.items()}


def main(argv: list[str] | None = None) -> int:
    """Convert one file; print what was written."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="your .pt/.pth/.bin state-dict file")
    ap.add_argument("out", type=Path, nargs="?", help="output (default: SOURCE.safetensors)")
    ap.add_argument("--key", help="the state dict's key in a nested checkpoint")
    args = ap.parse_args(argv)
    out = args.out or args.source.with_suffix(".safetensors")
    try:
        obj = torch.load(args.source, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - one line for any unreadable file
        print(f"error: cannot read {args.source} with weights_only=True: {err}", file=sys.stderr)
        return 2
    state = _state_dict(obj, args.key)
    save_file(state, str(out))
    n = sum(v.numel() for v in state.values())
    print(f"wrote {out}: {len(state)} tensors, {n:,} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
