"""The training script on a tiny preset: loss falls, the best adapter is saved, a run resumes, and the split
(cached lower layers + trained top layers) computes the same loss as the whole model."""

import json
import random
from pathlib import Path

import pytest
import torch

from models import train
from models.base import load_tokenizer
from models.bases import get_base
from models.data import SPIDER_DIR, encode, spider_splits, write_jsonl

pytestmark = pytest.mark.slow
TINY = Path("models/configs/tiny.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    tok = load_tokenizer()
    splits = spider_splits()
    db_root = SPIDER_DIR / "database"
    rng = random.Random(0)
    for name, n in (("train", 16), ("val", 8)):
        pairs = [p for p in splits[name] if len(p.sql) < 80]
        write_jsonl(d / f"{name}.jsonl", [encode(tok, p, db_root) for p in rng.sample(pairs, n)])
    return d


def _run(out: Path, data: Path, *extra: str) -> dict:
    train.main([str(TINY), f"--out_dir={out}", f"--data_dir={data}", *extra])
    return json.loads((out / "log.json").read_text())


def test_tiny_preset_loss_falls_and_best_adapter_saved(tmp_path, data_dir):
    log = _run(tmp_path / "run", data_dir)
    losses = [h["val_loss"] for h in log["history"]]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert (tmp_path / "run" / "best" / "adapter_model.safetensors").exists()
    assert log["tokens_per_s"] > 0 and log["peak_rss_mb"] > 0


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
    base = AutoModelForCausalLM.from_pretrained(get_base().model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tmp_path / "run" / "best")
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # trained, not the zero init


def test_split_backbone_matches_whole_model_loss(data_dir):
    """Cached lower layers + top layers must compute exactly what the whole model computes."""
    cfg = {k: getattr(train, k) for k in train.CONFIG_KEYS} | {"train_layers": 4, "lora_r": 4}
    model, split = train.build_model(cfg)
    model.eval()
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").open()][:3]
    ids, tmask = train.collate(rows, load_tokenizer().pad_token_id)
    bb = train.Backbone(model, split)
    with torch.no_grad():
        split_loss = bb.loss(bb.lower(ids), ids, tmask)
        logits = model(input_ids=ids).logits
        sel = tmask[:, 1:]
        whole = torch.nn.functional.cross_entropy(logits[:, :-1][sel], ids[:, 1:][sel])
    assert split == 26
    assert torch.allclose(split_loss, whole, atol=1e-4)
