"""Presets are read as data, never run: every committed preset sets only keys of its script, `include` starts one
preset from another (next to it, wherever the command runs from), overrides are literal-evaluated, and anything
else (code, an unknown key, an include loop) is refused with the file and line."""

import os
from pathlib import Path

import pytest

from models import pipeline, specialize, sweep, train
from models.presets import PresetError, config_keys, configure, override, read_preset

CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.name)
def test_every_preset_sets_only_keys_of_its_script(path):
    scripts = {
        "specialize": specialize.CONFIG_KEYS,
        "sweep": sweep.CONFIG_KEYS + train.CONFIG_KEYS,  # a sweep preset may fix any training key for every trial
        "pipeline": pipeline.CONFIG_KEYS,
    }
    keys = next((k for prefix, k in scripts.items() if path.name.startswith(prefix)), train.CONFIG_KEYS)
    values = read_preset(path)
    assert values and set(values) <= set(keys)


def test_an_include_applies_where_it_stands_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the old exec read "models/configs/…" from the working directory
    long = read_preset(CONFIGS / "lora_top12_long.py")
    assert long == read_preset(CONFIGS / "lora_top12.py") | {
        "out_dir": "models/runs/lora_top12_long",
        "resume_from": "models/runs/lora_top12/last",
        "epochs": 1.25,
        "eval_interval": 50,
        "patience": 4,
    }
    assert read_preset(CONFIGS / "specialize_tiny.py")["examples_k"] == 3  # from specialize.py
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('exec(open("other.py").read())', "only `key = value` assignments"),
        ("import os", "only `key = value` assignments"),
        ("lr = 2 * 1e-3", "not a literal"),
        ('include = "loop.py"', "includes itself"),
        ('include = "missing.py"', "cannot read preset"),
    ],
)
def test_anything_but_literal_assignments_is_refused(tmp_path, text, message):
    path = tmp_path / "loop.py"
    path.write_text(f"lr = 1e-3\n{text}\n")
    with pytest.raises(PresetError, match=message):
        read_preset(path)


def test_configure_applies_presets_and_overrides_in_order_and_refuses_unknown_keys(tmp_path):
    namespace = {"lr": 1e-3, "train_files": ["train.jsonl"], "out_dir": ""}
    keys = config_keys(namespace)
    preset = tmp_path / "p.py"
    preset.write_text('lr = 3e-4\nout_dir = "runs/p"\n')
    cfg = configure([str(preset), "--lr=5e-4", "--train_files=['a.jsonl', 'b.jsonl']"], namespace, keys)
    assert cfg == {"lr": 5e-4, "train_files": ["a.jsonl", "b.jsonl"], "out_dir": "runs/p"} == namespace
    assert override("--out_dir=runs/x") == {"out_dir": "runs/x"}  # not a literal: the text itself
    with pytest.raises(PresetError, match="unknown config key: lrr"):
        configure(["--lrr=1"], namespace, keys)
    preset.write_text("learning_rate = 1\n")
    with pytest.raises(PresetError, match=f"unknown config key: learning_rate \\(in {preset}\\)"):
        configure([str(preset)], namespace, keys)
