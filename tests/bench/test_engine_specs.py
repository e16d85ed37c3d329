"""The engine benchmark's specs follow the benchmarked base: its converted weights, exports and committed adapter
(the torch engine once merged SmolLM2's adapter into Qwen: a shape error instead of a measurement)."""

import pytest

from bench import engines
from models.bases import QWEN_CODER_05B, SMOLLM2


@pytest.mark.parametrize("spec", [SMOLLM2, QWEN_CODER_05B], ids=lambda s: s.name)
def test_every_engine_reads_the_benchmarked_bases_own_files(spec, monkeypatch):
    monkeypatch.setattr(engines, "get_base", lambda name=None: spec)
    assert engines._adapter() in (spec.adapter_dir, None)
    specs = engines.specs()
    assert specs["torch-fp32"].path == str(spec.model_dir)
    assert specs["onnx-int8"].path == str(spec.onnx_dir / "int8")
    if (spec.adapter_dir / "adapter_model.safetensors").exists():
        assert engines._adapter() == spec.adapter_dir and specs["torch-fp32"].weights == "fine-tuned"
