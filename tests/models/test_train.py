"""The training script on a tiny preset: loss falls, the best adapter is saved, a run resumes, and the split
(cached lower layers + trained top layers) computes the same loss as the whole model."""

import copy
import json
import random
from pathlib import Path

import pytest
import torch

from models import train
from models.base import load_tokenizer
from models.bases import QWEN_CODER_05B, SMOLLM2
from models.data import SPIDER_DIR, encode, spider_splits, write_jsonl, write_sample

pytestmark = pytest.mark.slow
TINY = Path("models/configs/tiny.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("data"), load_tokenizer(SMOLLM2.model_dir), {"train": 16, "val": 8})


def _run(out: Path, data: Path, *extra: str) -> dict:
    return train.main([str(TINY), f"--out_dir={out}", f"--data_dir={data}", *extra])


def test_configure_leaves_the_module_defaults_alone():
    """One process configures many runs (a sweep's worker): a run's preset never leaks into the next."""
    before = {k: copy.deepcopy(getattr(train, k)) for k in train.CONFIG_KEYS}
    cfg = train.configure([str(TINY), "--lr=0.5", "--train_files=['x.jsonl']"])
    assert cfg["lr"] == 0.5 and cfg["train_files"] == ["x.jsonl"]
    assert {k: getattr(train, k) for k in train.CONFIG_KEYS} == before == train.DEFAULTS


def test_the_cache_of_other_weights_than_the_registry_base_gets_its_own_name():
    """A run that starts from a merged adapter (base_dir elsewhere) must never read the registry base's cached lower
    layers: their outputs differ. The registry base's own runs keep the old, untagged name."""
    from models.bases import BUILD_DIR

    own = {"base": "smollm2-135m", "base_dir": str(BUILD_DIR / "base" / "smollm2-135m")}
    assert train.base_tag(own) == "" == train.base_tag(own | {"base": ""})
    merged = train.base_tag(own | {"base_dir": str(BUILD_DIR / "merged" / "smollm2-135m")})
    other = train.base_tag(own | {"base_dir": "/opt/official/Qwen2.5-Coder-0.5B-Instruct"})
    assert merged.startswith("_b") and other.startswith("_b") and merged != other


def test_a_shared_cache_below_more_layers_trains_the_same(tmp_path, data_dir):
    """`cache_below_top`: the cache holds the layers under the top 4, the two frozen layers above it run each step;
    the losses are those of a run that caches everything under its 2 trained layers (same weights, same batches).
    `cache_max_len`: a run of a shorter max_len reads the same cache (no new file) and trains on its rows only."""
    plain = _run(tmp_path / "plain", data_dir)
    shared = _run(tmp_path / "shared", data_dir, "--cache_below_top=4")
    assert [h["val_loss"] for h in shared["history"]] == pytest.approx(
        [h["val_loss"] for h in plain["history"]], abs=1e-4
    )
    assert shared["split_layer"] == plain["split_layer"] == 28
    caches = {p.name for p in (data_dir / "cache").iterdir()}
    assert any(name.startswith("train_26_512_") for name in caches)
    lengths = sorted(len(json.loads(line)["ids"]) for line in (data_dir / "train.jsonl").open())
    short = _run(
        tmp_path / "short", data_dir, "--cache_max_len=512", f"--max_len={lengths[len(lengths) // 2]}",
        "--max_steps=2", "--eval_interval=2",
    )  # fmt: skip
    assert short["step"] == 2 and {p.name for p in (data_dir / "cache").iterdir()} == caches


def test_batches_leave_out_rows_marked_too_long():
    batches = train.make_batches([10, None, 12, None, 30], 64, random.Random(0))
    assert sorted(i for b in batches for i in b) == [0, 2, 4]


def test_resume_continues_from_last_checkpoint(tmp_path, data_dir):
    out = tmp_path / "run"
    first = _run(out, data_dir, "--max_steps=4")
    assert first["step"] == 4
    second = _run(out, data_dir, "--max_steps=8")
    assert second["step"] == 8
    assert [h["step"] for h in second["history"]] == [4, 8]


def test_checkpoint_round_trips_through_peft(tmp_path, data_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _run(tmp_path / "run", data_dir)
    base = AutoModelForCausalLM.from_pretrained(SMOLLM2.model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tmp_path / "run" / "best")
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # trained, not the zero init


def _small_split_model():
    """SmolLM2 with LoRA on its top 4 layers, in eval mode: (model, index of the first trained layer)."""
    cfg = {k: getattr(train, k) for k in train.CONFIG_KEYS} | {
        "train_layers": 4,
        "lora_r": 4,
        "base_dir": str(SMOLLM2.model_dir),
    }
    model, split = train.build_model(cfg)
    model.eval()
    return model, split


def test_split_backbone_matches_whole_model_loss(data_dir):
    """Cached lower layers + top layers must compute exactly what the whole model computes."""
    model, split = _small_split_model()
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").open()][:3]
    ids, tmask = train.collate(rows, load_tokenizer(SMOLLM2.model_dir).pad_token_id)
    bb = train.Backbone(model, split)
    with torch.no_grad():
        split_loss = bb.loss(bb.lower(ids), ids, tmask)
        logits = model(input_ids=ids).logits
        sel = tmask[:, 1:]
        whole = torch.nn.functional.cross_entropy(logits[:, :-1][sel], ids[:, 1:][sel])
    assert split == 26
    assert torch.allclose(split_loss, whole, atol=1e-4)


def test_qwen_trains_on_packed_sequences_in_bf16_and_publishes_a_compact_adapter(tmp_path):
    """The served base's path end to end on a tiny budget: packed rows, bf16 autocast over cached lower layers, the
    best adapter published as row-wise int8, restored and loaded by peft on the base."""
    from peft import PeftModel

    from models.adapter_io import is_compact, materialized
    from models.base import load_model
    from models.data import pack
    from models.publish import publish

    tok = load_tokenizer(QWEN_CODER_05B.model_dir)
    splits = spider_splits()
    db_root = SPIDER_DIR / "database"
    data = tmp_path / "data"
    first_db = splits["train"][0].db_id
    train_pairs = [p for p in splits["train"] if p.db_id == first_db][:12]
    write_jsonl(data / "packed.jsonl", pack(tok, train_pairs, db_root, max_len=512))
    write_jsonl(data / "val.jsonl", [encode(tok, p, db_root) for p in splits["val"][:4]])
    out = tmp_path / "run"
    train.main(
        [str(TINY), "--base=qwen2.5-coder-0.5b", f"--out_dir={out}", f"--data_dir={data}", "--train_files=['packed.jsonl']",
         "--autocast=bf16", "--max_len=512", "--max_steps=4", "--eval_interval=2", "--lr=3e-3"]
    )  # fmt: skip
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["base_dir"] == str(QWEN_CODER_05B.model_dir) and log["split_layer"] == 22
    assert all(h["val_loss"] == h["val_loss"] and h["val_loss"] < 5 for h in log["history"])  # finite, sane
    dest = publish(out, tmp_path / "adapter")
    assert is_compact(dest)
    base = load_model(QWEN_CODER_05B.model_dir)  # converted by `make train`; read from the GGUF where it is not
    with materialized(dest) as src:
        model = PeftModel.from_pretrained(base, src)
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())


def test_init_adapter_starts_from_the_committed_weights_and_refuses_another_shape(tmp_path, data_dir):
    """`init_adapter` (specialize): the run's LoRA starts as the committed adapter (row-wise int8, restored), with a
    fresh optimizer; an adapter of another shape (r, layers) stops the run with a message instead of half-loading."""
    from models.adapter_io import load_weights
    from models.specialize import lora_shape

    adapter = Path("models/adapters") / SMOLLM2.adapter
    shape = lora_shape(adapter, SMOLLM2.model_dir)
    cfg = {k: getattr(train, k) for k in train.CONFIG_KEYS} | shape | {"base_dir": str(SMOLLM2.model_dir)}
    model, _ = train.build_model(cfg)
    train.load_init_adapter(model, adapter)
    state = model.state_dict()
    committed = load_weights(adapter / "adapter_model.safetensors")
    for name, w in committed.items():
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight"
        )
        assert torch.equal(state[key], w), name
    other, _ = train.build_model(cfg | {"lora_r": 4})
    with pytest.raises(SystemExit, match="does not fit this run's LoRA shape"):
        train.load_init_adapter(other, adapter)
    log = _run(tmp_path / "run", data_dir, f"--init_adapter={adapter}", *(f"--{k}={v!r}" for k, v in shape.items()),
               "--max_steps=2", "--eval_interval=2")  # fmt: skip
    assert log["step"] == 2 and log["config"]["init_adapter"] == str(adapter)


def test_shared_prefix_packing_trains_each_question_as_a_first_turn():
    """A shared-prefix packed sequence (schema once, one segment per question, masked apart) gives every answer
    token the loss it has in its own single-question prompt: the packed row is those prompts, computed once."""
    from models.data import pack

    tok = load_tokenizer(SMOLLM2.model_dir)
    db_root = SPIDER_DIR / "database"
    train_pairs = spider_splits()["train"]
    pairs = [p for p in train_pairs if p.db_id == train_pairs[0].db_id][:4]
    [row] = pack(tok, pairs, db_root, max_len=4096, shared_prefix=True)
    assert len(row["segments"]) == len(row["spans"]) == 4
    singles = [encode(tok, p, db_root) for p in pairs]
    prefix = row["segments"][0][0]
    for (s, e), (ts, te) in zip(row["segments"], row["spans"], strict=True):
        # each segment is one single prompt's tail and its SQL, in some order
        assert any(r["ids"] == row["ids"][:prefix] + row["ids"][s:e] and r["start"] == prefix + ts - s for r in singles)
        assert s < ts < te == e  # at least one prompt token before the answer
    model, split = _small_split_model()
    bb = train.Backbone(model, split)
    pad = tok.pad_token_id

    def summed(rows):
        ids, tmask = train.collate(rows, pad)
        layout = train.attention_layout(rows, ids.shape[1])
        with torch.no_grad():
            return float(bb.loss(bb.lower(ids, layout), ids, tmask, layout)) * int(tmask[:, 1:].sum())

    packed = summed([row])
    separate = sum(summed([r]) for r in singles)
    assert abs(packed - separate) < 1e-3 * separate
    # and the mask matters: the same row read causally (segments seeing each other) is another loss
    plain = {k: v for k, v in row.items() if k != "segments"}
    assert abs(summed([plain]) - separate) > 1e-2 * separate
