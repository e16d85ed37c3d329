"""bench.experiments.warm_start: three real server starts (warm-up off, on and waited for, on and asked at once) on
the test model, each answering the questions; the report says which start read the shared prompt first."""

import json
import os

import pytest

from bench.experiments import warm_start
from models.bases import BASES


@pytest.mark.slow
def test_three_starts_answer_and_only_the_warmed_ones_cache_the_prompt(tmp_path):
    base = os.environ.get("BASE_MODEL", "smollm2-135m")  # make test: the SmolLM2 test export (MODEL_DIR)
    assert warm_start.main(["--base", base, "--questions", "2", "--out-dir", str(tmp_path)]) == 0
    (report_path,) = tmp_path.glob("warm-start-*.json")
    report = json.loads(report_path.read_text())
    cases = report["cases"]
    assert list(cases) == list(warm_start.CASES)
    assert all(len(c["answers_s"]) == 2 and min(c["answers_s"]) > 0 and c["peak_rss_mb"] > 0 for c in cases.values())
    assert cases["off"]["warm_up_log"] == "" and cases["off"]["warm_up_when_asked"] == "off"
    assert cases["on, asked after the warm-up"]["warm_up_when_asked"] == "done"
    assert "prompt prefix cached" in cases["on, asked after the warm-up"]["warm_up_log"]
    md = (tmp_path / report_path.name.replace(".json", ".md")).read_text()
    assert md.count("\n| ") == 4 and "| off |" in md  # the header and one row per start


def test_a_base_without_an_export_is_named(monkeypatch, tmp_path, capsys):
    spec = BASES["smollm2-135m"]
    monkeypatch.setattr(type(spec), "onnx_dir", property(lambda self: tmp_path / self.name))
    assert warm_start.main(["--base", "smollm2-135m"]) == 2
    assert "not built: smollm2-135m" in capsys.readouterr().err
