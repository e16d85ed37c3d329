"""Committed adapters stored as row-wise int8: small, restored within half a quantization step, loadable by peft."""

import json

import pytest
import torch
from safetensors.torch import save_file

from models.adapter_io import is_compact, load_weights, materialized, save_rowwise_int8


def _weights(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(16, 896, generator=g) * 0.02,
        "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(896, 16, generator=g) * 1e-3,
        "bias_like": torch.randn(7, generator=g),
    }


def test_rowwise_int8_round_trips_within_half_a_step(tmp_path):
    w = _weights()
    path = tmp_path / "adapter_model.safetensors"
    save_rowwise_int8(w, path)
    back = load_weights(path)
    assert set(back) == set(w)
    for k, v in w.items():
        if v.ndim == 2:
            step = v.abs().amax(dim=1, keepdim=True) / 127
            assert torch.all((back[k] - v).abs() <= step * 0.5 + 1e-3 * step + 1e-8)
        else:
            assert torch.allclose(back[k], v, atol=1e-2)
    fp16_bytes = sum(v.numel() * 2 for v in w.values())
    assert path.stat().st_size < 0.6 * fp16_bytes


def test_materialized_gives_float_weights_passes_float_adapters_through_and_leaves_nothing(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "f").mkdir()
    for d in ("q", "f"):
        (tmp_path / d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    save_rowwise_int8(_weights(), tmp_path / "q" / "adapter_model.safetensors")
    save_file(_weights(), str(tmp_path / "f" / "adapter_model.safetensors"), metadata={"format": "pt"})
    assert is_compact(tmp_path / "q") and not is_compact(tmp_path / "f")
    with materialized(tmp_path / "f") as same:
        assert same == tmp_path / "f"
    assert (tmp_path / "f" / "adapter_model.safetensors").exists()  # the adapter itself is never removed
    with materialized(tmp_path / "q") as out:
        assert out != tmp_path / "q" and not is_compact(out)
        assert (out / "adapter_config.json").read_text() == (tmp_path / "q" / "adapter_config.json").read_text()
    assert not out.exists()  # the float copy is gone with the block


def test_unknown_storage_is_refused(tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path), metadata={"format": "pt", "querywise_quant": "int3-magic"})
    with pytest.raises(ValueError, match="unknown adapter storage 'int3-magic'"):
        load_weights(path)
