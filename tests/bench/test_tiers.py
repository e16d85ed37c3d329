"""bench.experiments.tiers: the side-by-side table says what was measured, and a base that is not built is named
instead of a traceback."""

import json

from bench.experiments import tiers
from models.bases import BASES


def test_the_table_has_one_row_per_base_with_latency_and_memory():
    report = json.loads(
        """{"when": "2026-12-05 16:46 UTC", "cpu": {"model": "EPYC", "cores": 2, "flags": {"avx2": true}},
        "bases": {"qwen2.5-coder-1.5b": {"model_id": "m", "size_mb": 2001,
          "targets": {"onnx-int8": {"levels": [{"p50_ms": 1865.2, "p95_ms": 10294}], "server_peak_rss_mb": 3169}},
          "spider_c1": {"p50_ms": 1341, "p95_ms": 3363}}}}"""
    )
    md = tiers.markdown(report)
    assert "EPYC · 2 cores · AVX2" in md
    assert "| qwen2.5-coder-1.5b | m | 2001 MB | 1865 / 10294 ms | 1341 / 3363 ms | 3169 MB |" in md


def test_a_base_without_an_export_is_named(monkeypatch, tmp_path, capsys):
    spec = BASES["smollm2-135m"]
    monkeypatch.setattr(type(spec), "onnx_dir", property(lambda self: tmp_path / self.name))
    assert tiers.main(["--bases", "smollm2-135m"]) == 2
    assert "not built: smollm2-135m" in capsys.readouterr().err
