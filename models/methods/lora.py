"""LoRA (Hu et al., 2021) through peft: low-rank updates on the top layers' linear modules, the base frozen.

What this project did before it had several methods, moved here unchanged: the same peft config, the same
directory (`adapter_config.json`, `adapter_model.safetensors`), the same merge; the committed adapters stay row-wise
int8 (`models.adapter_io`).

`lora_rank_pattern` ({module-name regex: rank}, e.g. `models.rank`'s proposal {"q_proj": 8, "down_proj": 32}) gives
modules another rank than `lora_r`: peft's `rank_pattern`, whose keys must match the end of a module's name, starting
at a dot or at the name's start (peft 0.21's `get_pattern_key`; the first matching key wins). Each such module's
alpha keeps the uniform alpha/r, so its update has the scale it would have at `lora_r`. peft writes both patterns
into adapter_config.json: loading, publishing (row-wise int8 works per row, whatever a factor's rank) and merging
need nothing else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from models.adapter_io import load_weights, materialized, save_rowwise_int8
from models.methods.base import WEIGHTS, MethodError, TuningMethod, top_layers


def rank_pattern(cfg: dict) -> dict:
    """The config's `lora_rank_pattern` ({} when absent: uniform `lora_r`), each rank a positive integer."""
    ranks = cfg.get("lora_rank_pattern") or {}
    if not isinstance(ranks, dict):
        raise MethodError(f"lora_rank_pattern: a dict {{module-name regex: rank}}, got {ranks!r}")
    bad = {k: r for k, r in ranks.items() if isinstance(r, bool) or not isinstance(r, int) or r < 1}
    if bad:
        raise MethodError(f"lora_rank_pattern: ranks must be positive integers, got {bad}")
    for key in ranks:
        try:
            re.compile(key)
        except re.error as exc:
            raise MethodError(f"lora_rank_pattern: {key!r} is not a regular expression ({exc})") from None
    return dict(ranks)


def alpha_for(cfg: dict, r: int) -> float:
    """The alpha giving rank `r` the uniform run's scale alpha/r (an int where it is one, as peft's default is)."""
    alpha = cfg["lora_alpha"] * r / cfg["lora_r"]
    return int(alpha) if alpha == int(alpha) else alpha


def check_pattern_matches(model, ranks: dict) -> None:
    """Every pattern key names at least one LoRA module (peft only warns, and a typo would train at `lora_r`)."""
    if not ranks:
        return
    names = [name for name, m in model.named_modules() if hasattr(m, "lora_A") and m.lora_A]
    unmatched = [key for key in ranks if not any(re.match(rf"(.*\.)?({key})$", name) for name in names)]
    if unmatched:
        raise MethodError(f"lora_rank_pattern: {unmatched} match no LoRA module (targets end in e.g. "
                          f"{sorted({n.rsplit('.', 1)[-1] for n in names})})")  # fmt: skip


class LoRA(TuningMethod):
    name = "lora"

    def prepare(self, model, cfg: dict):
        from peft import LoraConfig, get_peft_model

        layers = top_layers(model, cfg["train_layers"])
        ranks = rank_pattern(cfg)
        lcfg = LoraConfig(
            r=cfg["lora_r"],
            lora_alpha=cfg["lora_alpha"],
            lora_dropout=cfg["lora_dropout"],
            target_modules=cfg["target_modules"],
            layers_to_transform=list(layers) if layers.start else None,
            rank_pattern=ranks,
            alpha_pattern={key: alpha_for(cfg, r) for key, r in ranks.items()},
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        check_pattern_matches(model, ranks)
        return model

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

        with materialized(path) as src:
            return PeftModel.from_pretrained(model, src)

    def merge(self, model):
        return model.merge_and_unload()

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        """Row-wise int8 LoRA factors (a quarter of float32's bytes; `materialized` restores them for peft)."""
        from safetensors.torch import load_file

        dest.mkdir(parents=True, exist_ok=True)
        save_rowwise_int8(load_file(src / WEIGHTS), dest / WEIGHTS)
        adapter_cfg = json.loads((src / "adapter_config.json").read_text())
        # the base by its registry name, not the training machine's path (peft is handed the base model explicitly)
        adapter_cfg["base_model_name_or_path"] = base_name
        (dest / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
