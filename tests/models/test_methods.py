"""The tuning methods behind one lifecycle (`models.methods`): each trains on the tiny preset, saves and loads back
to the same outputs, merges into a plain model computing what it computed, publishes, and exports to ONNX.

Tolerances (logits of SmolLM2, values around ±20): a load is exact; a merge moves float rounding only (LoRA's
update folded into the weight, BitNet's straight-through sums replaced by their values), within 1e-3 (measured:
≤ 4.4e-5); a published form rounds the stored weights (LoRA row-wise int8, full float16), within 0.05 (measured:
0.016-0.029), except BitNet's, which stores the ternary weights themselves: only γ may move in its last bit, enough
to flip an activation rounding now and then (measured: 0.003; within 0.01).
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests_support import two_layer_base

from models import train
from models.base import load_tokenizer
from models.bases import SMOLLM2
from models.data import write_sample
from models.methods import METHODS, MethodError, get_method, is_saved, method_of
from models.methods.bitnet import BitLinear, int8_per_token, latent_for, pack, ternary, unpack
from models.methods.prune import read_plan
from models.methods.qlora import QuantLinear, dequantize_nf4, nf4_codebook, quantize_nf4

PRESETS = {m: Path(f"models/configs/tiny_{m}.py") for m in METHODS} | {"lora": Path("models/configs/tiny.py")}
IDS = torch.tensor([[1, 504, 3365, 418, 1730, 30, 2, 9, 35, 3500, 11, 17, 400, 28, 7, 4412]])


# ---------------------------------------------------------------------------------------------- no model needed


def test_ternary_weights_are_absmean_scaled_and_pack_into_two_bits():
    w = torch.randn(8, 64) * 0.05
    t, gamma = ternary(w)
    assert set(t.unique().tolist()) <= {-1.0, 0.0, 1.0} and torch.isclose(gamma, w.abs().mean())
    assert torch.equal(t, (w / gamma).round().clamp(-1, 1))
    packed = pack(t)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 16)  # 4 weights a byte
    assert torch.equal(unpack(packed), t)
    with pytest.raises(ValueError, match="divisible by 4"):
        pack(torch.zeros(2, 6))


def test_published_ternary_weights_load_as_latent_weights_that_round_to_them():
    t, gamma = ternary(torch.randn(16, 32))
    t2, gamma2 = ternary(latent_for(t, gamma))
    assert torch.equal(t2, t) and torch.isclose(gamma2, gamma, rtol=1e-6)


def test_bitlinear_computes_with_ternary_weights_and_int8_activations_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    layer = BitLinear(64, 8)
    x = torch.randn(3, 5, 64, requires_grad=True)
    q = int8_per_token(x)
    assert torch.allclose((q * 127 / x.abs().amax(-1, keepdim=True)).round(), q * 127 / x.abs().amax(-1, keepdim=True))
    t, gamma = ternary(layer.weight)
    y = layer(x)
    assert torch.allclose(y, torch.nn.functional.linear(q, t * gamma, layer.bias), atol=1e-6)
    y.sum().backward()
    # the straight-through gradient is the float layer's: d(sum y)/dW = sum over tokens of the (rounded) inputs
    assert torch.allclose(layer.weight.grad, q.detach().reshape(-1, 64).sum(0).expand(8, -1), atol=1e-4)
    assert torch.allclose(x.grad, (t * gamma).sum(0).expand_as(x), atol=1e-6)


def test_nf4_is_the_papers_codebook_and_round_trips_within_half_a_step():
    book = nf4_codebook()
    assert book.shape == (16,) and book[0] == -1 and book[-1] == 1 and 0 in book.tolist()
    assert abs(book[1] - -0.6961928) < 1e-6 and abs(book[-2] - 0.7229568) < 1e-6  # QLoRA appendix E
    w = torch.randn(96, 64)
    codes, absmax = quantize_nf4(w, 64)
    assert codes.dtype == torch.uint8 and codes.numel() == w.numel() // 2 and absmax.numel() == w.numel() // 64
    back = dequantize_nf4(codes, absmax, w.shape)
    half_gap = (book[1:] - book[:-1]).max() / 2
    assert ((back - w).abs().reshape(-1, 64) <= half_gap * absmax[:, None] + 1e-6).all()
    with pytest.raises(ValueError, match="do not tile"):
        quantize_nf4(torch.zeros(3, 7), 64)


@pytest.mark.parametrize("bits", [4, 8])
def test_a_quantized_linear_trains_under_bf16_autocast_as_its_dequantized_weight_does(bits):
    """QLoRA with `autocast = "bf16"` (the Qwen presets): the gradient of a bf16 matmul met the fp32 dequantized
    weight and the backward pass stopped ("expected m1 and m2 to have the same dtype")."""
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(128, 64)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(64, 128, generator=g) * 0.05)
    quant = QuantLinear(linear, 64, bits)
    plain = torch.nn.Linear(128, 64)
    with torch.no_grad():
        plain.weight.copy_(quant.dequantized())
        plain.bias.copy_(linear.bias)
    x = torch.randn(3, 128, generator=g)
    grads = []
    for module in (quant, plain):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(xi)
        y.float().square().sum().backward()
        assert xi.grad.dtype == torch.float32
        grads.append((y.float(), xi.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-2) and torch.allclose(grads[0][1], grads[1][1], atol=2e-2)


def test_a_saved_directory_names_its_method(tmp_path):
    with pytest.raises(MethodError, match="unknown method 'dora'"):
        get_method("dora")
    assert not is_saved(tmp_path)
    with pytest.raises(MethodError, match="no trained weights"):
        method_of(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    assert method_of(tmp_path).name == "lora"  # peft's adapters, committed before there were methods
    (tmp_path / "adapter_method.json").write_text(json.dumps({"method": "bitnet"}))
    assert method_of(tmp_path).name == "bitnet"


# ---------------------------------------------------------------------------------------------- the real model

_DEFAULTS = {k: copy.deepcopy(getattr(train, k)) for k in train.CONFIG_KEYS}


def _cfg(method: str, **extra) -> dict:
    """The method's tiny preset as models.train reads it, without touching the module's defaults."""
    from models.presets import read_preset

    return copy.deepcopy(_DEFAULTS) | read_preset(PRESETS[method]) | {"base_dir": str(SMOLLM2.model_dir)} | extra


def _trained(method: str, model, cfg: dict):
    """`model` prepared by the method, its trained tensors moved off their start (LoRA's B is zero at first)."""
    model = get_method(method).prepare(model, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * (0.1 * p.abs().mean() + 0.05))
    return model.eval()


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("data"), load_tokenizer(SMOLLM2.model_dir), {"train": 16, "val": 8})


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_loss_falls_on_the_tiny_preset_and_the_run_publishes(method, tmp_path, data_dir):
    from models.publish import publish

    for k, v in _DEFAULTS.items():
        setattr(train, k, copy.deepcopy(v))
    out = tmp_path / "run"
    train.main([str(PRESETS[method]), f"--out_dir={out}", f"--data_dir={data_dir}"])
    log = json.loads((out / "log.json").read_text())
    losses = [h["val_loss"] for h in log["history"]]
    assert log["config"]["method"] == method and len(losses) == 2 and losses[-1] < losses[0]
    assert method_of(out / "best").name == method and log["tokens_per_s"] > 0 and log["peak_rss_mb"] > 0
    if method == "lora":
        assert (out / "best" / "adapter_model.safetensors").exists()
    if method == "prune":  # 4 of SmolLM2's 30 layers removed; the cache stops under the 2 trained ones
        assert log["split_layer"] == 24 and len(read_plan(out / "best").layers) == 26
    dest = publish(out, tmp_path / "published")
    assert method_of(dest).name == method and (dest / "train_log.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_saved_weights_load_merge_and_publish_to_the_same_outputs(method, tmp_path, data_dir):
    from models.base import load_model

    m, cfg = get_method(method), _cfg(method, data_dir=str(data_dir))  # prune calibrates on the run's train rows
    model = _trained(method, load_model(SMOLLM2.model_dir), cfg)
    before = _logits(model)
    assert (before - _logits(load_model(SMOLLM2.model_dir))).abs().max() > 0.1  # the change is not a no-op
    m.save(model, tmp_path / "saved", cfg)
    loaded = m.load(load_model(SMOLLM2.model_dir), tmp_path / "saved")
    assert torch.equal(_logits(loaded), before)
    merged = m.merge(loaded)
    assert not any(p.requires_grad for p in merged.parameters())
    assert not any("lora_" in k or k.endswith((".codes", ".absmax")) for k in merged.state_dict())
    assert (_logits(merged) - before).abs().max() < 1e-3
    m.publish(tmp_path / "saved", tmp_path / "published", SMOLLM2.name)
    published = _logits(m.load(load_model(SMOLLM2.model_dir), tmp_path / "published"))
    assert (published - before).abs().max() < (0.01 if method == "bitnet" else 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_merged_model_exports_to_onnx_and_generates(method, tmp_path, monkeypatch, data_dir):
    """Whatever the method, `models.export` merges the saved weights (here a 2-layer SmolLM2's, all trained), the fp32
    graph computes the merged torch model's logits, and the served int8 model generates through OnnxGenerator."""
    import onnxruntime as ort

    from app.nl2sql.engine import OnnxGenerator
    from models import export

    # the 2-layer base has no layer to spare: prune removes MLP channels only (tiny_prune's 4 layers are refused)
    extra = {"prune_layers": 0} if method == "prune" else {}
    m, cfg = get_method(method), _cfg(method, data_dir=str(data_dir), **extra)
    m.save(_trained(method, two_layer_base()[0], cfg), tmp_path / "saved", cfg)
    expected = _logits(m.merge(m.load(two_layer_base()[0], tmp_path / "saved")))[0, -1].numpy()
    monkeypatch.setattr(export, "load_base", lambda spec: two_layer_base())
    qdir = export.build(SMOLLM2, tmp_path / "saved", out_dir=tmp_path / "onnx", force=True, keep=True)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = IDS.numpy()
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in session.get_inputs()
            if i.name.startswith("past")}  # fmt: skip
    logits = session.run(["logits"], feed | past)[0][0, -1]
    assert np.abs(logits - expected).max() < 1e-2
    [gen] = OnnxGenerator(qdir).generate(["SELECT"], max_new_tokens=4)
    assert gen.new_tokens > 0 and json.loads((qdir / "querywise.json").read_text())["adapter"] == "saved"
