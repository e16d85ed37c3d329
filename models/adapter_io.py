"""Committed adapters in few bytes: LoRA factors stored as int8 with one scale per row, restored to float for peft.

A LoRA adapter on Qwen's top 8 layers has 2.9M parameters: 5.9 MB in float16, more than we keep in git. Row-wise
int8 (absmax / 127 per row, float32 scales) halves that, and its rounding (at most half a step, ~0.4% of a row's
largest value) is far below what the int8 export of the merged weights rounds away anyway. `publish` writes this
form; `materialized` gives peft an ordinary float adapter directory to load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"
FORMAT_KEY = "querywise_quant"
ROWWISE_INT8 = "int8-rowwise-v1"
SCALE_SUFFIX = ".qscale"


def save_rowwise_int8(weights: dict, path: Path) -> None:
    """Every 2-D float tensor as int8 rows plus a float32 scale per row; anything else as float16."""
    import torch
    from safetensors.torch import save_file

    out = {}
    for name, w in weights.items():
        w = w.float()
        if w.ndim == 2:
            scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
            out[name] = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
            out[name + SCALE_SUFFIX] = scale
        else:
            out[name] = w.to(torch.float16)
    save_file(out, str(path), metadata={"format": "pt", FORMAT_KEY: ROWWISE_INT8})


def load_weights(path: Path) -> dict:
    """The adapter's float32 weights, whichever form the file has."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        quant = (f.metadata() or {}).get(FORMAT_KEY)
    raw = load_file(str(path))
    if quant is None:
        return {k: v.float() for k, v in raw.items()}
    if quant != ROWWISE_INT8:
        raise ValueError(f"{path}: unknown adapter storage {quant!r}")
    return {
        k: v.float() * raw[k + SCALE_SUFFIX].float() if k + SCALE_SUFFIX in raw else v.float()
        for k, v in raw.items()
        if not k.endswith(SCALE_SUFFIX)
    }


def is_compact(adapter_dir: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(Path(adapter_dir) / WEIGHTS), "pt") as f:
        return (f.metadata() or {}).get(FORMAT_KEY) is not None


@contextmanager
def materialized(adapter_dir: Path) -> Iterator[Path]:
    """A directory peft can load, for the `with` block: the adapter itself when stored in float, else a float32 copy
    in a temp folder, removed on leaving (peft reads the weights into memory; each load left ~10 MB behind)."""
    from safetensors.torch import save_file

    adapter_dir = Path(adapter_dir)
    if not is_compact(adapter_dir):
        yield adapter_dir
        return
    out = Path(tempfile.mkdtemp(prefix="qw-adapter-"))
    try:
        shutil.copy(adapter_dir / "adapter_config.json", out / "adapter_config.json")
        save_file(load_weights(adapter_dir / WEIGHTS), str(out / WEIGHTS), metadata={"format": "pt"})
        json.loads((out / "adapter_config.json").read_text())  # fail here, not inside peft, on a broken config
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)
