"""Full fine-tuning of the top `train_layers` decoder layers: every weight of those layers trained, nothing added.

Saved: those layers' tensors only (a few MB for SmolLM2's top 2, not the whole model), with the layers named in
`adapter_method.json`; loading puts them back into the base. Published in float16: row-wise int8, right for LoRA's
factors, would move a weight by up to 0.4% of its row's largest one, more than a short fine-tune moves most
weights; float16 keeps 11 significant bits.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.methods.base import (
    WEIGHTS,
    MethodError,
    TuningMethod,
    layer_of,
    read_method_file,
    top_layers,
    write_method_file,
)


class FullTopK(TuningMethod):
    name = "full"

    def prepare(self, model, cfg: dict):
        layers = top_layers(model, cfg["train_layers"])
        for name, p in model.named_parameters():
            p.requires_grad = layer_of(name) in layers
        return model

    def trainable_state(self, model) -> dict:
        return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def save(self, model, path: Path, cfg: dict) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.trainable_state(model).items()}
        save_file(state, str(path / WEIGHTS), metadata={"format": "pt"})
        write_method_file(path, self.name, train_layers=cfg["train_layers"])

    def init_from(self, model, path: Path) -> None:
        from models.adapter_io import load_weights

        if not (path / WEIGHTS).exists():
            raise MethodError(f"no {WEIGHTS} in {path}")
        self._fill(model, load_weights(path / WEIGHTS), path)

    def _fill(self, model, weights: dict, path: Path) -> None:
        """Every trained tensor of `model` from `weights` (same names and shapes), or MethodError."""
        trained = self.trainable_state(model)
        missing = sorted(set(trained) - set(weights))
        wrong = [k for k in trained if k in weights and weights[k].shape != trained[k].shape]
        if missing or wrong:
            raise MethodError(f"{path} does not fit this run's trained layers: {len(missing)} tensors missing, "
                              f"{len(wrong)} of another shape (e.g. {(missing + wrong)[:1]})")  # fmt: skip
        with torch.no_grad():
            model.load_state_dict({k: weights[k] for k in trained}, strict=False)

    def load(self, model, path: Path):
        settings = read_method_file(path)
        model = self.prepare(model, {"train_layers": settings["train_layers"]})
        self.init_from(model, path)
        return model.eval()

    def merge(self, model):
        for p in model.parameters():
            p.requires_grad = False
        return model

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        from safetensors.torch import save_file

        from models.adapter_io import load_weights

        dest.mkdir(parents=True, exist_ok=True)
        half = {k: v.to(torch.float16) for k, v in load_weights(src / WEIGHTS).items()}
        save_file(half, str(dest / WEIGHTS), metadata={"format": "pt"})
        write_method_file(dest, self.name, **read_method_file(src) | {"base": base_name, "storage": "float16"})
