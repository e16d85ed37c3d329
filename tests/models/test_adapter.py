"""The committed LoRA adapter loads on the base model, changes it, merges, and the service's export uses it."""

import json

import pytest
import torch

from models.bases import SMOLLM2
from models.export import _stamp, read_manifest

DEFAULT_ADAPTER = SMOLLM2.adapter_dir

pytestmark = pytest.mark.slow


def test_committed_adapter_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in DEFAULT_ADAPTER.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert files["adapter_model.safetensors"] < 50e6
    cfg = json.loads((DEFAULT_ADAPTER / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] > 0


def test_committed_adapter_loads_and_merges():
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(SMOLLM2.model_dir, dtype=torch.float32)
    before = {k: v.clone() for k, v in base.state_dict().items() if "layers.29.self_attn.q_proj" in k}
    merged = PeftModel.from_pretrained(base, DEFAULT_ADAPTER).merge_and_unload()
    after = {k: v for k, v in merged.state_dict().items() if k in before}
    assert after and any(not torch.equal(before[k], after[k]) for k in before)
    assert not any("lora_" in k for k in merged.state_dict())


def test_serving_export_is_built_from_the_committed_adapter():
    manifest = read_manifest(SMOLLM2.onnx_dir / "fp32")
    assert manifest.get("adapter") == DEFAULT_ADAPTER.name and manifest.get("base") == SMOLLM2.name
    assert manifest.get("stamp") == _stamp(SMOLLM2, DEFAULT_ADAPTER, 8, 32)
