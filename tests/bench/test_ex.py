"""bench.ex: one evaluation run on Spider dev questions spread evenly, written as models.evaluate writes it, and
found again as finished (the benchmark reuses it) only when it judged every question asked for."""

import json

import pytest

from bench import ex

pytestmark = pytest.mark.slow


def test_an_evaluation_run_is_written_and_found_again(generator, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ex, "OUT", tmp_path)
    path = ex.evaluate_run(generator, "bench-test-dev2", 2, {"engine": "ONNX Runtime", "model_id": "test"}, 2)
    summary = json.loads(path.read_text())
    assert summary["run"] == "bench-test-dev2" and summary["n"] == 2 and summary["engine"] == "ONNX Runtime"
    assert "spread evenly" in summary["note"] and 0 <= summary["ex"] <= 100
    assert len((tmp_path / "bench-test-dev2.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "bench-test-dev2.md").exists()
    assert ex.summary_path("bench-test-dev2", 2) == path
    assert ex.summary_path("bench-test-dev2", 3) is None  # a run of other questions is not this one
