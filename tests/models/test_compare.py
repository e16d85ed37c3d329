"""models.methods.compare without training: where each start's runs and report go, what --start served needs, when a
finished run is reused, and what the report says (the reference row, a failed method, EX not measured)."""

import json
import os
from pathlib import Path

import pytest

from app.core.config import ROOT
from models.methods import compare
from models.presets import read_preset

CPU = {"model": "Test CPU", "cores": 2, "flags": {"avx2": True, "avx512_vnni": False}}


def _run(method: str, best_val: float, s_per_step: float, ex: float | None) -> dict:
    r = {
        "method": method,
        "overrides": compare.METHODS[method],
        "trainable_params": 1000,
        "steps": 40,
        "s_per_step": s_per_step,
        "peak_rss_mb": 2000.0,
        "best_val": best_val,
        "published_mb": 0.7,
        "onnx_int8_mb": 234.0,
        "model_dir": "x",
    }
    if ex is not None:
        groups = {"easy": {"ex": ex, "n": 10}}
        r["eval"] = {"n": 10, "ex": ex, "valid_sql": 90.0, "mean_gen_ms_per_question": 300, "groups": groups}
    return r


def _report(start: str, runs: list[dict], **extra) -> dict:
    return (
        {"date": "2026-12-05", "cpu": CPU, "load_before": "1.0", "load_after": "1.5", "runs": runs}
        | {
            "start": start,
            "steps": 40,
            "batch_tokens": 2048,
            "eval_limit": 10,
        }
        | extra
    )


def test_the_two_starts_keep_their_runs_and_reports_apart():
    assert compare.work_dir("base") != compare.work_dir("served")
    assert (compare.report_name("base"), compare.report_name("served")) == ("smol", "smol-served")


def test_each_preset_keeps_its_runs_and_report_apart():
    name = compare.preset_name(Path("models/configs/compare_qwen.py"))
    assert name == "qwen" and compare.preset_name(compare.PRESET) == "smol"
    assert compare.work_dir("served", name) != compare.work_dir("served")
    assert compare.report_name("served", name) == "qwen-served"
    for preset, start in ((compare.PRESET, "base"), (ROOT / "models/configs/compare_qwen.py", "served")):
        # the preset's own out_dir is where the compare puts its lora run (the README's commands read from there)
        out_dir = ROOT / read_preset(preset)["out_dir"]
        assert out_dir == compare.work_dir(start, compare.preset_name(preset)) / "runs" / "lora"


def test_a_qwen_report_names_its_base_preset_and_layers(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "REPORT_DIR", tmp_path)
    described = {"title": "Qwen2.5-Coder-0.5B", "preset": "models/configs/compare_qwen.py", "train_layers": 2}
    described |= {"n_layers": 24, "limit_train": 120, "autocast": "bf16", "name": "qwen"}
    runs = [_run("lora", 0.5, 2.0, 40.0), _run("qlora", 0.5, 5.0, 38.0)]
    path = compare.write_report(_report("served", runs, **described))
    text = path.read_text()
    assert path == tmp_path / "qwen-served.md" and "SmolLM2" not in text
    assert "(Qwen2.5-Coder-0.5B from the served model, as served)" in text
    assert "--start served --preset models/configs/compare_qwen.py" in text
    assert "the top 2 of 24 layers" in text and "on 120 Spider train rows" in text and "matmuls in bf16" in text
    assert "| 2.50× |" in text  # qlora's s/step against lora's


def test_a_missing_preset_is_a_message_and_a_non_zero_exit(monkeypatch):
    monkeypatch.setattr("sys.argv", ["compare", "--preset", "models/configs/nope.py"])
    with pytest.raises(SystemExit, match="no preset at models/configs/nope.py"):
        compare.main()


def test_served_start_needs_the_merged_model_and_points_base_model_dir_at_it(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "BUILD_DIR", tmp_path)
    monkeypatch.delenv("BASE_MODEL_DIR", raising=False)
    with pytest.raises(SystemExit, match="models.export --base smollm2-135m --keep"):
        compare.use_start("served", "smollm2-135m")
    (tmp_path / "merged" / "smollm2-135m").mkdir(parents=True)
    (tmp_path / "merged" / "smollm2-135m" / "config.json").write_text("{}")
    compare.use_start("served", "smollm2-135m")
    assert os.environ["BASE_MODEL_DIR"] == str(tmp_path / "merged" / "smollm2-135m")
    compare.use_start("base", "smollm2-135m")
    assert "BASE_MODEL_DIR" not in os.environ


def test_a_finished_run_is_reused_only_with_todays_keys_and_its_export(tmp_path):
    run = tmp_path / "runs" / "full"
    run.mkdir(parents=True)
    result = _run("full", 0.9, 2.0, None) | {"model_dir": str(tmp_path / "onnx")}
    (run / compare.RESULT_FILE).write_text(json.dumps(result))
    assert compare.finished("full", tmp_path) is None  # its export is gone
    (tmp_path / "onnx").mkdir()
    assert compare.finished("full", tmp_path) == result
    (run / compare.RESULT_FILE).write_text(json.dumps(result | {"overrides": ["--method=full", "--lr=1"]}))
    assert compare.finished("full", tmp_path) is None  # other keys than today's
    assert compare.finished("lora", tmp_path) is None


def test_the_served_report_puts_the_served_model_first_and_names_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "REPORT_DIR", tmp_path)
    reference = {"n": 10, "ex": 30.0, "valid_sql": 95.0, "mean_gen_ms_per_question": 280, "onnx_int8_mb": 234.0}
    reference["groups"] = {"easy": {"ex": 30.0, "n": 10}}
    runs = [_run("lora", 0.5, 2.0, 40.0), _run("full", 0.6, 3.0, 20.0), {"method": "bitnet", "error": "exit 1: boom"}]
    path = compare.write_report(_report("served", runs, reference=reference))
    assert path == tmp_path / "smol-served.md" and (tmp_path / "smol-served.json").exists()
    text = path.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| *served, not trained further*") and "| 30.0 (10) |" in table[1]
    assert table[2].startswith("| lora") and "| 40.0 (10) |" in table[2]
    assert "| 1.50× |" in table[3]  # full's s/step against lora's
    assert "**bitnet failed**: exit 1: boom" in text and "from the served model" in text
    assert "- served, not trained further: easy 30.0% (10)" in text


def test_the_base_report_says_why_ex_was_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "REPORT_DIR", tmp_path)
    runs = [_run("lora", 0.9, 2.0, 0.0), _run("qlora", 0.9, 2.5, None)]
    text = compare.write_report(_report("base", runs)).read_text()
    assert "from its base weights" in text and "served, not trained further" not in text
    assert "EX not measured for qlora" in text and "answered none right at this budget" in text


@pytest.mark.parametrize(
    ("before", "after", "says"),
    [
        ("0.75", "1.66", "Nothing else kept the 2 cores busy (load at most 2 before and after)"),
        ("9.56", "9.56", "Other jobs ran meanwhile"),
        ("0.50", "3.10", "Other jobs ran meanwhile"),
    ],
)
def test_the_report_says_what_its_speeds_are_worth_by_the_load_around_them(tmp_path, monkeypatch, before, after, says):
    monkeypatch.setattr(compare, "REPORT_DIR", tmp_path)
    report = _report("base", [_run("lora", 0.5, 2.0, None)]) | {"load_before": before, "load_after": after}
    text = compare.write_report(report).read_text()
    assert says in text and f"load average {before} before, {after} after" in text
