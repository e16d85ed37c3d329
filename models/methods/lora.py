"""LoRA (Hu et al., 2021) through peft: low-rank updates on the top layers' linear modules, the base frozen.

What this project did before it had several methods, moved here unchanged: the same peft config, the same
directory (`adapter_config.json`, `adapter_model.safetensors`), the same merge; the committed adapters stay row-wise
int8 (`models.adapter_io`).
"""

from __future__ import annotations

import json
from pathlib import Path

from models.adapter_io import load_weights, materialize, save_rowwise_int8
from models.methods.base import WEIGHTS, MethodError, TuningMethod, top_layers


class LoRA(TuningMethod):
    name = "lora"

    def prepare(self, model, cfg: dict):
        from peft import LoraConfig, get_peft_model

        layers = top_layers(model, cfg["train_layers"])
        lcfg = LoraConfig(
            r=cfg["lora_r"],
            lora_alpha=cfg["lora_alpha"],
            lora_dropout=cfg["lora_dropout"],
            target_modules=cfg["target_modules"],
            layers_to_transform=list(layers) if layers.start else None,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lcfg)

    def trainable_state(self, model) -> dict:
        return {k: v for k, v in model.state_dict().items() if "lora_" in k}

    def save(self, model, path: Path, cfg: dict) -> None:
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)

    def init_from(self, model, path: Path) -> None:
        """The run's LoRA shape (r, target modules, trained layers) must be the adapter's: every LoRA tensor set."""
        from peft import set_peft_model_state_dict

        if not (path / WEIGHTS).exists():
            raise MethodError(f"init_adapter: no {WEIGHTS} in {path}")
        weights = load_weights(path / WEIGHTS)
        try:
            res = set_peft_model_state_dict(model, weights)
        except RuntimeError as exc:  # shape mismatch: another r or other layers
            first = str(exc).splitlines()[0][:300]
            raise MethodError(f"init_adapter: {path} does not fit this run's LoRA shape: {first}") from None
        missing = [k for k in res.missing_keys if "lora_" in k]
        if missing or not weights:
            raise MethodError(f"init_adapter: {path} leaves {len(missing)} LoRA tensors of this run unset "
                              f"(e.g. {missing[:1]})")  # fmt: skip

    def load(self, model, path: Path):
        from peft import PeftModel

        return PeftModel.from_pretrained(model, materialize(path))

    def merge(self, model):
        return model.merge_and_unload()

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        """Row-wise int8 LoRA factors (a quarter of float32's bytes; `materialize` restores them for peft)."""
        from safetensors.torch import load_file

        dest.mkdir(parents=True, exist_ok=True)
        save_rowwise_int8(load_file(src / WEIGHTS), dest / WEIGHTS)
        adapter_cfg = json.loads((src / "adapter_config.json").read_text())
        # the base by its registry name, not the training machine's path (peft is handed the base model explicitly)
        adapter_cfg["base_model_name_or_path"] = base_name
        (dest / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
