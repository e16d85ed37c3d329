"""Patching a LoRA into an export (`models.patch`): onnxruntime's MatMulNBits over the patched codes computes
x·(W + s·B·A)ᵀ within half a quantization step, blocks the delta leaves alone keep their bytes, a real export
patched with a real peft adapter gives the adapted torch model's logits, and what cannot be patched is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tests_support import MODEL_DIR

from models.patch import PatchError, lora_deltas, patch_export, patch_model, requantize_8bit

ROOT = Path(__file__).resolve().parents[2]
MERGED = ROOT / "build" / "merged" / "smollm2-135m"  # the weights MODEL_DIR (SmolLM2 fp32) was exported from


def linear_graph(w: np.ndarray, name: str = "/model/layers.0/mlp/down_proj/MatMul") -> onnx.ModelProto:
    """x [b, K] → MatMul by wᵀ ([K, N]), the node named as the exporter names a module's."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", w.shape[1]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", w.shape[0]])
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name=name)
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(np.ascontiguousarray(w.T), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def quantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """As `models.export.quantize` does it: symmetric 8-bit MatMulNBits, blocks of 32, accuracy level 4."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(model, bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    return q.model.model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def test_the_patched_int8_matmul_computes_the_adapted_weights():
    rng = np.random.default_rng(0)
    n, k = 48, 80  # K not a multiple of the block: the last block is padded
    w = rng.normal(0, 0.05, (n, k)).astype(np.float32)
    model = quantized(linear_graph(w))
    assert [nd.op_type for nd in model.graph.node] == ["MatMulNBits"]
    before = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    delta = np.zeros((n, k), np.float32)
    delta[:8] = rng.normal(0, 0.002, (8, k))  # small: within the blocks' range
    delta[10, 3] = 1.0  # past its block's range: that block gets a new scale
    counts = patch_model(model, {"model.layers.0.mlp.down_proj": delta})
    # the block at row 10 must be rescaled; so may blocks of rows 0-7 whose largest weight sits on code -128 (where
    # onnxruntime's signed scales put it) and the delta pushes further out
    assert counts["modules"] == 1 and 1 <= counts["blocks_rescaled"] <= 8 * 3 + 1, counts
    x = rng.normal(0, 1, (5, k)).astype(np.float32)
    want = x @ (w + delta).T
    direct = run(quantized(linear_graph(w + delta)), x)  # the adapted weights quantized from scratch
    got = run(model, x)
    assert np.abs(got - want).max() <= 2 * np.abs(direct - want).max()  # as exact, within rounding
    assert np.abs(got - want)[:, 10].max() <= 2 * np.abs(direct - want)[:, 10].max()  # the rescaled block too
    after = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    codes = next(name for name in after if after[name].dtype == np.uint8)
    assert np.array_equal(after[codes][20:], before[codes][20:])  # rows the delta is zero in: same bytes
    assert not np.array_equal(after[codes][:8], before[codes][:8])


def test_requantize_adds_the_delta_in_steps_of_the_block_scale():
    rng = np.random.default_rng(1)
    codes = rng.integers(1, 256, (4, 3, 32), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.01, (4, 3)).astype(np.float32)
    scales[3, 2] = 0.0  # an all-zero block (zero scale) that the delta then fills
    codes[3, 2] = 128
    delta = rng.normal(0, 0.003, (4, 96)).astype(np.float32)
    new_codes, new_scales, rescaled = requantize_8bit(codes, scales, delta)
    old = (codes.astype(np.float32) - 128) * scales[..., None]
    new = (new_codes.astype(np.float32) - 128) * new_scales[..., None]
    err = np.abs(new - old - delta.reshape(4, 3, 32))
    assert (err <= new_scales[..., None] / 2 + 1e-7).all()
    assert rescaled >= 1 and new_scales[3, 2] > 0
    kept = new_scales == scales
    assert kept.sum() == 12 - rescaled


@pytest.mark.slow
def test_a_real_export_patched_with_a_peft_lora_gives_the_adapted_models_logits(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MERGED, torch_dtype=torch.float32).eval()
    n_layers = model.config.num_hidden_layers
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], layers_to_transform=[n_layers - 1])
    peft_model = get_peft_model(model, cfg)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (no change); a trained adapter's is not
            torch.nn.init.normal_(p, std=0.2)
    peft_model.save_pretrained(tmp_path / "adapter")
    deltas = lora_deltas(tmp_path / "adapter")
    assert set(deltas) == {
        f"model.layers.{n_layers - 1}.self_attn.q_proj",
        f"model.layers.{n_layers - 1}.mlp.down_proj",
    }

    ids = [[1, 504, 3226, 314, 2330, 28, 1062, 253, 4745, 30]]
    with torch.no_grad():
        want = peft_model(torch.tensor(ids)).logits[0, -1].numpy()
        with peft_model.disable_adapter():
            plain = peft_model(torch.tensor(ids)).logits[0, -1].numpy()

    onnx_model = onnx.load(str(MODEL_DIR / "model.onnx"))
    assert patch_model(onnx_model, deltas)["modules"] == 2
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.array(ids, np.int64), "attention_mask": np.ones((1, len(ids[0])), np.int64),
             "position_ids": np.arange(len(ids[0]), dtype=np.int64)[None]}  # fmt: skip
    for inp in sess.get_inputs():
        if inp.name.startswith("past_key_values"):
            feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), np.float32)
    got = sess.run(["logits"], feeds)[0][0, -1]
    assert np.abs(want - plain).max() > 0.5  # the adapter matters,
    assert np.abs(got - want).max() < 2e-2, np.abs(got - want).max()  # and the patched export computes it


def test_what_cannot_be_patched_is_refused(tmp_path):
    # an export with an adapter merged in (as SmolLM2's): a new adapter was trained over other weights than it holds
    merged = tmp_path / "merged"
    merged.mkdir()
    onnx.save(linear_graph(np.ones((4, 8), np.float32)), str(merged / "model.onnx"))
    (merged / "querywise.json").write_text(json.dumps({"model_id": "m+a", "adapter": "querywise-sql"}))
    with pytest.raises(PatchError, match="already holds the adapter"):
        patch_export(merged, tmp_path / "none", tmp_path / "out")
    with pytest.raises(PatchError, match="no export at"):
        patch_export(tmp_path / "nowhere", tmp_path / "none", tmp_path / "out")
    with pytest.raises(PatchError, match="no LoRA adapter"):
        lora_deltas(tmp_path / "none")
    model = linear_graph(np.ones((4, 8), np.float32))
    with pytest.raises(PatchError, match="no MatMul in the export"):
        patch_model(model, {"model.layers.3.mlp.up_proj": np.ones((4, 8), np.float32)})
    with pytest.raises(PatchError, match="adapter delta"):
        patch_model(model, {"model.layers.0.mlp.down_proj": np.ones((8, 4), np.float32)})
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(PatchError):
        lora_deltas(tmp_path / "ia3")
