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


def test_lean_export_from_the_gguf_keeps_only_the_served_model_and_matches_the_kept_one(tmp_path, monkeypatch):
    """`models.export` without --keep: the base read from the GGUF in memory (no converted copy), merged in memory,
    the fp32 export removed once quantized; the int8 model computes exactly what the kept export's int8 does."""
    import numpy as np
    import onnxruntime as ort

    from models import bases
    from models.export import build

    monkeypatch.setattr(bases.BaseSpec, "model_dir", property(lambda self: tmp_path / "no-base" / self.name))
    out = tmp_path / "exports"
    qdir = build(SMOLLM2, DEFAULT_ADAPTER, out_dir=out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["int8"] and not (tmp_path / "no-base").exists()
    assert read_manifest(qdir)["stamp"] == _stamp(SMOLLM2, DEFAULT_ADAPTER, 8, 32)
    assert {"tokenizer.json", "config.json", "generation_config.json"} <= {p.name for p in qdir.iterdir()}
    kept = SMOLLM2.onnx_dir / "int8"  # make test builds the small base with --keep, from the converted base
    assert read_manifest(kept)["stamp"] == read_manifest(qdir)["stamp"]
    ids = np.array([[1, 2, 3, 4, 5, 6]], np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(6)[None]}
    outs = []
    for d in (kept, qdir):
        s = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        past = {
            i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
            for i in s.get_inputs()
            if i.name.startswith("past")
        }
        outs.append(s.run(["logits"], feed | past)[0])
    assert np.array_equal(outs[0], outs[1])
