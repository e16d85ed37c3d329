"""The lifecycle every tuning method implements, and what the methods share: which decoder layers are trained and
the small JSON file that says how a saved directory was made.

A method is used in this order (peft's lesson: interchangeable methods behind one lifecycle):

    model = method.prepare(base_model, cfg)      # its modules in place, only the top `train_layers` layers trainable
    method.trainable_state(model)                # the tensors a checkpoint holds (and the optimizer updates)
    method.save(model, path, cfg)                # a run's best: what `publish` and `export` start from
    model = method.load(base_model, path)        # a saved directory onto a fresh base: computes what training did
    plain = method.merge(model)                  # a transformers model without training machinery, for ONNX
    method.publish(path, dest, base_name)        # the committed, compact form of a saved directory

Training runs the top layers only, on the cached outputs of the frozen lower layers (`models.train`), so every
method changes those top layers and nothing else: the cache stays valid whatever the method.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"  # every method's weights, under the name peft gives LoRA's
METHOD_FILE = "adapter_method.json"  # the method and its settings; absent from LoRA adapters (peft's config says it)

_LAYER = re.compile(r"\blayers\.(\d+)\.")


class MethodError(ValueError):
    """A saved directory that does not fit the method or the run asked of it."""


def layer_of(name: str) -> int | None:
    """The decoder layer a parameter or module name belongs to (`model.layers.28.mlp...` → 28), else None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def top_layers(model, train_layers: int) -> range:
    """The indices of the top `train_layers` decoder layers (all of them when it is larger)."""
    n = model.config.num_hidden_layers
    return range(n - min(train_layers, n), n)


def write_method_file(path: Path, name: str, **settings) -> None:
    (Path(path) / METHOD_FILE).write_text(json.dumps({**settings, "method": name}, indent=2))


def read_method_file(path: Path) -> dict:
    try:
        return json.loads((Path(path) / METHOD_FILE).read_text())
    except FileNotFoundError:
        return {}


class TuningMethod:
    """One way of fine-tuning the top layers; subclasses implement every step (see the module docstring)."""

    name = ""

    def prepare(self, model, cfg: dict):
        """The base model with this method's modules in place and only the top `cfg["train_layers"]` layers'
        parameters of the method trainable; may return another object (peft wraps the model)."""
        raise NotImplementedError

    def cache_tag(self, cfg: dict) -> str:
        """A suffix for the lower-layer cache's file names: empty for a method that leaves the frozen layers as the
        base has them (every method but `prune`), so runs of different methods share the cache."""
        return ""

    def trainable_state(self, model) -> dict:
        """Name → tensor of what training changes, named as in `model.state_dict()` (the checkpoint's content)."""
        raise NotImplementedError

    def save(self, model, path: Path, cfg: dict) -> None:
        """The trained state in `path`, loadable by `load` without the run's config."""
        raise NotImplementedError

    def init_from(self, model, path: Path) -> None:
        """A saved directory's weights into a model this method prepared (a run started from earlier weights);
        MethodError when they do not fill every trained tensor."""
        raise NotImplementedError

    def load(self, model, path: Path):
        """A saved directory (a run's or a published one) onto a fresh base model: the model as trained."""
        raise NotImplementedError

    def merge(self, model):
        """A transformers model computing what `model` computes, without training machinery, for the export."""
        raise NotImplementedError

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        """A saved directory's committed form in `dest` (smaller where rounding costs nothing that matters)."""
        raise NotImplementedError
