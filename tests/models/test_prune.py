"""Structured pruning (`models.methods.prune`): the plan removes what computes least and never layer 0 or the trained
top layers, the same plan every time; a pruned model computes what its base computes without the removed parts, is
saved, loaded and published by its plan; bad settings are refused. On SmolLM2 (slow): the tiny preset's plan,
published, exports to a smaller ONNX model, and the engine writes the torch model's greedy tokens (the preset's
training run is test_methods' `[prune]` case).
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from models.methods import MethodError, get_method, method_of
from models.methods.prune import PLAN, make_plan, read_plan

LAYERS, WIDTH = 6, 64
IDS = torch.tensor([[5, 17, 3, 99, 42, 8, 61, 23, 77, 4]])
SMALL = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": WIDTH, "num_hidden_layers": LAYERS,
         "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}  # fmt: skip


def _small(arch: str = "llama"):
    """A small random model of the bases' architectures (same weights on every call)."""
    torch.manual_seed(0)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()
    return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()


def _idle(model, layer: int | None = None, channels: slice | None = None):
    """`model` with one decoder layer made the identity (attention and MLP write nothing to the residual stream)
    and/or some MLP channels of every layer silenced (zero down_proj columns): parts that compute nothing."""
    with torch.no_grad():
        if layer is not None:
            model.model.layers[layer].self_attn.o_proj.weight.zero_()
            model.model.layers[layer].mlp.down_proj.weight.zero_()
        if channels is not None:
            for block in model.model.layers:
                block.mlp.down_proj.weight[:, channels] = 0
    return model


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    g = torch.Generator().manual_seed(1)
    rows = [{"ids": torch.randint(0, 128, (int(n),), generator=g).tolist()} for n in torch.randint(8, 24, (40,))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _cfg(data_dir: Path, prune_layers: int = 2, prune_mlp: float = 0.25, train_layers: int = 2) -> dict:
    return {"data_dir": str(data_dir), "prune_layers": prune_layers, "prune_mlp": prune_mlp,
            "train_layers": train_layers}  # fmt: skip


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


# ---------------------------------------------------------------------------------------------- small models


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_removing_what_computes_nothing_leaves_the_outputs_and_greedy_decoding_unchanged(arch, data_dir):
    """Layer 3 is an identity and channels 16-31 are silent: the plan removes exactly them, and the smaller model
    (renumbered layers, sliced MLPs, its config) computes the same logits and decodes the same tokens with its KV
    cache."""
    whole = _idle(_small(arch), layer=3, channels=slice(16, 32))
    pruned = get_method("prune").prepare(_idle(_small(arch), layer=3, channels=slice(16, 32)), _cfg(data_dir, 1))
    assert pruned.prune_plan.layers == [0, 1, 2, 4, 5]
    assert all(row.tolist() == [*range(16), *range(32, 64)] for row in pruned.prune_plan.channels)
    config = pruned.config
    assert (config.num_hidden_layers, config.intermediate_size, len(pruned.model.layers)) == (5, 48, 5)
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == list(range(5))
    if arch == "qwen2":
        assert len(config.layer_types) == 5
    assert (_logits(pruned) - _logits(whole)).abs().max() < 1e-5
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(pruned.generate(IDS, **greedy), whole.generate(IDS, **greedy))
    trained = [n for n, p in pruned.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith(("model.layers.3.", "model.layers.4.")) for n in trained)


def test_the_plan_is_deterministic_and_keeps_layer_0_and_the_trained_top_layers(data_dir):
    """Whatever their influence: the top layers are made identities here, layer 0 nearly one."""
    base = _idle(_small(), layer=LAYERS - 1)
    _idle(base, layer=LAYERS - 2)
    with torch.no_grad():
        base.model.layers[0].mlp.down_proj.weight.mul_(1e-3)
        base.model.layers[0].self_attn.o_proj.weight.mul_(1e-3)
    cfg = _cfg(data_dir, prune_layers=3, train_layers=2)
    plans = [make_plan(base, cfg) for _ in range(2)]
    assert plans[0].same_as(plans[1])
    assert plans[0].layers == [0, LAYERS - 2, LAYERS - 1]  # 1..3 removed: all there was to remove
    with pytest.raises(MethodError, match="0 to 3 can be removed"):
        make_plan(base, cfg | {"prune_layers": 4})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"prune_layers": LAYERS}, r"prune_layers=6: this base has 6 decoder layers.* 0 to 3 can be removed"),
        ({"prune_layers": -1}, "prune_layers=-1"),
        ({"prune_layers": 1.5}, "prune_layers=1.5"),
        ({"prune_mlp": 1.0}, r"prune_mlp=1.0: .* must be in \[0, 1\)"),
        ({"prune_mlp": -0.1}, "prune_mlp=-0.1"),
    ],
)
def test_bad_settings_are_refused_with_what_the_base_allows(setting, message, data_dir):
    with pytest.raises(MethodError, match=message):
        get_method("prune").prepare(_small(), _cfg(data_dir) | setting)


def test_calibration_needs_the_runs_training_rows(tmp_path):
    with pytest.raises(MethodError, match="no .*train.jsonl"):
        get_method("prune").prepare(_small(), _cfg(tmp_path / "absent"))


def test_cache_tag_tells_plans_apart_and_is_empty_when_nothing_is_removed():
    prune = get_method("prune")
    tags = {prune.cache_tag({"prune_layers": n, "prune_mlp": m}) for n in (0, 2, 4) for m in (0.0, 0.25, 0.5)}
    assert len(tags) == 9 and prune.cache_tag({"prune_layers": 0, "prune_mlp": 0.0}) == ""


def test_saved_and_published_forms_load_by_their_plan(tmp_path, data_dir):
    prune, cfg = get_method("prune"), _cfg(data_dir)
    model = prune.prepare(_small(), cfg)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    before = _logits(model)
    prune.save(model, tmp_path / "saved", cfg)
    assert method_of(tmp_path / "saved").name == "prune" and (tmp_path / "saved" / PLAN).exists()
    assert read_plan(tmp_path / "saved").same_as(model.prune_plan)
    loaded = prune.merge(prune.load(_small(), tmp_path / "saved"))
    assert torch.equal(_logits(loaded), before) and not any(p.requires_grad for p in loaded.parameters())
    prune.publish(tmp_path / "saved", tmp_path / "published", "small")
    settings = json.loads((tmp_path / "published" / "adapter_method.json").read_text())
    assert settings["storage"] == "float16" and settings["layers"] == model.prune_plan.layers
    assert (_logits(prune.load(_small(), tmp_path / "published")) - before).abs().max() < 1e-2
    with pytest.raises(MethodError, match="pruned otherwise"):  # another run's starting weights
        prune.init_from(prune.prepare(_small(), _cfg(data_dir, prune_layers=1)), tmp_path / "saved")
    with pytest.raises(MethodError, match="plan is for a base of 6 layers"):
        prune.load(LlamaForCausalLM(LlamaConfig(**SMALL | {"num_hidden_layers": 8})), tmp_path / "saved")


# ---------------------------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """SmolLM2 pruned by the tiny prune preset's plan (calibrated on the tiny tests' 16 training rows), its trained
    top layers moved off their start, saved and published. (That preset's training run, loss and plan included, is
    test_methods' `[prune]` case.)"""
    from models import train
    from models.base import load_model, load_tokenizer
    from models.bases import SMOLLM2
    from models.data import write_sample

    data = write_sample(tmp_path_factory.mktemp("data"), load_tokenizer(SMOLLM2.model_dir), {"train": 16, "val": 8})
    cfg = train.configure(["models/configs/tiny_prune.py", f"--data_dir={data}"])
    prune = get_method("prune")
    model = prune.prepare(load_model(SMOLLM2.model_dir), cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    out = tmp_path_factory.mktemp("run")
    prune.save(model.eval(), out / "saved", cfg)
    prune.publish(out / "saved", out / "published", SMOLLM2.name)
    return out / "published"


@pytest.mark.slow
def test_a_published_pruned_model_exports_smaller_and_the_engine_writes_the_torch_models_tokens(published, tmp_path):
    from app.nl2sql.engine import OnnxGenerator
    from models import export
    from models.base import load_model
    from models.bases import SMOLLM2
    from models.generators import TorchGenerator

    assert len(read_plan(published).layers) == 26  # 30 - 4 removed
    qdir = export.build(SMOLLM2, published, out_dir=tmp_path / "onnx", force=True, keep=True)
    fdir = tmp_path / "onnx" / "fp32"
    assert json.loads((fdir / "config.json").read_text())["num_hidden_layers"] == 26
    # an fp32 graph holds every weight in 4 bytes: the unpruned one at least 4 bytes a base parameter
    base_bytes = 4 * sum(p.numel() for p in load_model(SMOLLM2.model_dir).parameters())
    assert (fdir / "model.onnx").stat().st_size < 0.85 * base_bytes
    prompts = ["SELECT count(*) FROM", "-- the names of all singers\nSELECT", "SELECT name FROM singer WHERE"]
    ours = TorchGenerator(published, base=SMOLLM2).generate(prompts, 12)
    served = OnnxGenerator(fdir).generate(prompts, 12)
    assert [g.text for g in ours] == [g.text for g in served] and all(g.new_tokens for g in ours)
    [gen] = OnnxGenerator(qdir).generate(prompts[:1], 4)  # the int8 model the service would serve
    assert gen.new_tokens > 0
