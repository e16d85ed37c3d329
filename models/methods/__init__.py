"""Fine-tuning methods behind one lifecycle (`models.methods.base`): `lora`, `qlora`, `full` (top layers), `bitnet`,
`prune` (structured pruning, then `full` on the top layers).

`models.train` picks one by the preset's `method`; `models.publish`, `models.export` and the torch generator find
a saved directory's method with `method_of`, so every trained model is published, exported and evaluated alike.
The methods' modules import torch and are imported only when asked for: `models.export` imports this package and
its CLI needs no torch to say what is wrong.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from models.methods.base import METHOD_FILE, MethodError, TuningMethod, read_method_file

_CLASSES = {
    "lora": ("models.methods.lora", "LoRA"),
    "qlora": ("models.methods.qlora", "QLoRA"),
    "full": ("models.methods.full", "FullTopK"),
    "bitnet": ("models.methods.bitnet", "BitNet"),
    "prune": ("models.methods.prune", "Prune"),
}
METHODS = tuple(_CLASSES)

__all__ = ["METHODS", "MethodError", "TuningMethod", "get_method", "is_saved", "load_merged", "method_of"]


def get_method(name: str) -> TuningMethod:
    if name not in _CLASSES:
        raise MethodError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)()


def is_saved(path: Path) -> bool:
    """Whether `path` holds a saved method (a LoRA adapter, or any directory with adapter_method.json)."""
    return (Path(path) / METHOD_FILE).exists() or (Path(path) / "adapter_config.json").exists()


def method_of(path: Path) -> TuningMethod:
    """The method that saved `path`: named in its adapter_method.json, else LoRA (peft's adapter_config.json)."""
    path = Path(path)
    if not is_saved(path):
        raise MethodError(f"no trained weights at {path} (expected {METHOD_FILE} or adapter_config.json)")
    return get_method(read_method_file(path).get("method", "lora"))


def load_merged(model, path: Path):
    """The base `model` with the weights saved in `path` loaded and merged: what export and evaluation run."""
    method = method_of(path)
    return method.merge(method.load(model, Path(path)))
