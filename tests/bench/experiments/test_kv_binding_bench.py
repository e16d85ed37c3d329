"""The KV-binding benchmark stays alive: both decode paths on the real model, short and long Spider prompts."""

import pytest
from tests_support import MODEL_DIR

from bench.experiments import kv_binding

pytestmark = pytest.mark.slow


def test_kv_binding_bench_compares_the_paths_on_the_same_prompts() -> None:
    report = kv_binding.run(MODEL_DIR, steps=2, repeats=1, batches=[1, 2], threads=0, bcast=False)
    rows = report["results"]
    assert {(r["context"], r["batch"], r["path"]) for r in rows} == {
        (c, b, p) for c in ("short", "long") for b in (1, 2) for p in ("feed", "iobind")
    }
    short = [r["prompt_tokens"] for r in rows if r["context"] == "short"]
    long = [r["prompt_tokens"] for r in rows if r["context"] == "long"]
    assert max(short) < 200 < 500 < min(long)
    for r in rows:
        assert r["identical_to_feed"], r  # the same tokens on every path
        assert r["steps_timed"] == 2 and r["step_ms"] >= r["ort_ms"] > 0 and r["tok_s"] > 0
        assert r["peak_rss_mb"] > 100
    assert all(r["speedup_vs_feed"] == 1.0 for r in rows if r["path"] == "feed")
    md = kv_binding.markdown(report)
    assert "| long | " in md and "iobind" in md
