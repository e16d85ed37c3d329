"""bench.experiments.batch_flips on three questions: each decoded alone and in one batch, compared, reported as JSON
and markdown."""

import json

import pytest
from tests_support import MODEL_DIR

from bench.experiments import batch_flips

pytestmark = pytest.mark.slow


def test_batch_flips_report(tmp_path):
    assert batch_flips.main(["--model-dir", str(MODEL_DIR), "--limit", "3", "--batch", "3", "--new-tokens", "24",
                             "--out", str(tmp_path)]) == 0  # fmt: skip
    [js] = tmp_path.glob("batch-flips-*.json")
    r = json.loads(js.read_text())
    assert r["questions"] == 3 and 0 <= r["result_changed"] <= r["changed"] <= 3
    assert 0 <= r["ex_alone"] <= 100 and r["cpu_flags"]
    md = js.with_suffix(".md").read_text()
    assert "answers that changed when decoded in a batch of 3" in md


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert batch_flips.main(["--model-dir", str(tmp_path)]) == 2
    assert "no model at" in capsys.readouterr().err
