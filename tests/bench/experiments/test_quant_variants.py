"""The quantization comparison stays alive: the fp32 reference measured through the real child processes (2 prompts,
one extra speed pass, no EX), compared and written as a report; the lm_head untying on a small real ONNX graph; a
recipe the installed onnxruntime cannot build is reported as skipped with its reason."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.experiments import quant_variants as qv

pytestmark = pytest.mark.slow  # loads the real model in two child processes (~15-30 s)


@pytest.fixture(scope="module")
def result() -> dict:
    return qv.compare_all(["fp32"], n_prompts=2, new_tokens=6, batch=2, max_new=24, ex_limit=0, speed_rounds=1)


@pytest.fixture(scope="module")
def fp32_row(result: dict) -> dict:
    [row] = result["variants"]
    return row


def test_fp32_reference_is_measured_and_batch_invariant(fp32_row: dict) -> None:
    r = fp32_row
    assert "error" not in r and "skipped" not in r, r
    assert r["n_prompts"] == 2 and r["batch"] == 2 and r["new_tokens"] == 6
    for key in qv.SPEED_KEYS:  # the first pass and one speed round, the median of the two reported
        samples = r["speed_samples"][key]
        assert len(samples) == 2 and all(x > 0 for x in samples)
        assert r[key] == pytest.approx(sum(samples) / 2, abs=0.11)
    assert r["peak_rss_mb"] >= r["rss_after_load_mb"] > 100  # the weights are in memory
    assert r["size_mb"] == pytest.approx((qv.FP32_DIR / "model.onnx").stat().st_size / 1e6, rel=0.01)
    assert r["median_prompt_tokens"] > 20
    # fp32 decoding is batch-invariant: the same greedy SQL alone, next to another prompt and after a cached prefix
    assert r["invariant"] == 2 and r["batched_sql"] == r["alone_sql"]
    assert r["prefix_invariant"] == 2 and r["prefixed_sql"] == r["alone_sql"]
    # logits: a cached prefix gives bitwise the same prefill, so does a batch without padding; a left-padded batch
    # moves them by fp32 rounding at most
    assert r["prefix_logit_drift"] == 0.0 and r["same_length_logit_drift"] == 0.0
    assert r["batch_logit_drift"] is not None and 0.0 <= r["batch_logit_drift"] < 1e-3
    assert all(sql.upper().startswith("SELECT") for sql in r["alone_sql"])
    assert "ex" not in r


def test_comparison_and_report(result: dict, fp32_row: dict, tmp_path: Path) -> None:
    assert result["config"]["speed_rounds"] == 1 and result["wall_s"] > 0
    skipped = {"name": "dyn-default", "label": "x", "method": "dynamic", "note": "", "skipped": "not requested"}
    rows = [dict(fp32_row), skipped]
    qv.compare(rows)
    ref = rows[0]
    assert ref["agree_fp32"] == 2
    assert ref["vs_fp32"] == {
        "size": 1.0,
        "peak_rss": 1.0,
        "prefill": 1.0,
        "decode": 1.0,
        "batch": 1.0,
        "ex_points": None,
    }
    assert "vs_fp32" not in rows[1]
    json_path, md_path = qv.write_report(result | {"variants": rows}, tmp_path, "test")
    saved = json.loads(json_path.read_text())
    assert [r["name"] for r in saved["variants"]] == ["fp32", "dyn-default"]
    md = md_path.read_text()
    # ratios 1.00×; alone = batched, = after a cached prefix (logits bitwise), = fp32
    assert re.search(r"\| fp32 \| 1\.00× \|.* \| 2/2 \| 2/2 \| [0-9.e-]+ / 0 / 0 \| 2/2 \|", md), md
    assert "not measured: not requested" in md and "noisy" in md
    assert "Answers identical alone and in batches (2/2): none; alone and after a cached prefix: none." in md
    assert result["verdict"] and result["verdict"][0].startswith("Answers identical alone and in batches")


def _tied_head_model(vocab: int = 96, hidden: int = 64) -> tuple[onnx.ModelProto, np.ndarray]:
    """Embedding Gather and an lm_head MatMul over the Transpose of the same weight, as the optimum export ties them."""
    w = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb.weight", "ids"], ["h"], name="/model/embed_tokens/Gather"),
        helper.make_node("Transpose", ["emb.weight"], ["emb.weight_transposed"], name="Transpose_1"),
        helper.make_node("MatMul", ["h", "emb.weight_transposed"], ["logits"], name="/lm_head/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, vocab])],
        [numpy_helper.from_array(w, "emb.weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w


def test_untied_head_is_quantized_and_computes_the_same_logits(tmp_path: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model, w = _tied_head_model()
    ids = np.array([[1, 5, 42]], dtype=np.int64)
    expected = w[ids[0]] @ w.T

    def quantized_ops(m: onnx.ModelProto) -> tuple[list[str], np.ndarray]:
        q = MatMulNBitsQuantizer(m, bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
        q.process()
        path = tmp_path / "m.onnx"
        q.model.save_model_to_file(str(path), use_external_data_format=False)
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
        return [n.op_type for n in onnx.load(str(path)).graph.node], out[0]

    tied_ops, _ = quantized_ops(model)
    assert "MatMul" in tied_ops and "MatMulNBits" not in tied_ops  # tied: the head stays fp32

    model, _ = _tied_head_model()
    qv.untie_head(model)
    ops, logits = quantized_ops(model)
    assert "MatMulNBits" in ops and "Transpose" not in ops and "MatMul" not in ops
    assert np.abs(logits - expected).max() < 0.02 * np.abs(expected).max()  # int8 weights: close, not exact


def test_a_recipe_that_cannot_be_built_is_skipped_with_its_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qv, "VARIANTS_DIR", tmp_path)
    bad = dataclasses.replace(qv.BY_NAME["nbits8-b32-acc4"], name="nbits3", bits=3)
    row = qv.run_variant(bad, n_prompts=1, new_tokens=1, batch=1, max_new=1, ex_limit=0)
    assert row["name"] == "nbits3" and row["skipped"].startswith("cannot build: AssertionError")
    assert "2, 4 or 8 bits" in row["skipped"]


def test_a_variant_is_rebuilt_when_the_fp32_export_or_its_recipe_changes(monkeypatch) -> None:
    v = qv.BY_NAME["nbits8-b32-acc4"]
    stamp = qv.variant_stamp(v)
    assert stamp != qv.variant_stamp(dataclasses.replace(v, block_size=128))
    assert stamp == qv.variant_stamp(dataclasses.replace(v, note="reworded"))  # words do not rebuild
    built = qv.build_stamp(v)
    upgraded = qv.read_manifest(qv.FP32_DIR) | {"attention": "another graph"}  # same stamp, same answers
    monkeypatch.setattr(qv, "read_manifest", lambda d: upgraded if d == qv.FP32_DIR else {})
    assert qv.variant_stamp(v) == stamp and qv.build_stamp(v) != built  # rebuilt, its EX kept
    monkeypatch.setattr(qv, "fp32_stamp", lambda v=None: "another-export")
    assert qv.variant_stamp(v) != stamp
    assert qv.build(qv.BY_NAME["fp32"]) == qv.FP32_DIR  # the reference is used in place


def test_mixed_precision_keeps_the_edge_layers_matmuls_fp32() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name=f"/model/layers.{i}/mlp/up_proj/MatMul") for i in range(6)
    ]
    nodes.append(helper.make_node("MatMul", ["h", "e"], ["logits"], name="/lm_head/MatMul"))
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert sorted(qv.edge_layer_matmuls(model, 2)) == sorted(
        f"/model/layers.{i}/mlp/up_proj/MatMul" for i in (0, 1, 4, 5)
    )
    assert qv.edge_layer_matmuls(model, 0) == []


def test_the_pruned_rows_are_skipped_with_the_reason_when_there_is_no_pruned_export(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(qv, "PRUNED_DIR", tmp_path / "pruned" / "fp32")
    for name in ("pruned-fp32", "pruned-nbits8-b32-acc4"):
        row = qv.run_variant(qv.BY_NAME[name], 2, 6, 2, 24, 0)
        assert (
            row["skipped"].startswith("cannot build: FileNotFoundError: no export at")
            and str(tmp_path) in row["skipped"]
        )
