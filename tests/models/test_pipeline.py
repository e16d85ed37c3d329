"""`models.pipeline` end to end on the tiny presets: prepare → sweep → train → export → evaluate → publish → report,
then the same command again resumes (nothing re-run), `--redo` re-runs from a stage, and bad settings are refused
with a message. Everything it writes goes under tmp_path (work directory, data, reports)."""

import json
from pathlib import Path

import pytest
from tests_support import MODEL_DIR

from models import pipeline
from models.methods import is_saved

PRESET = "models/configs/pipeline_tiny.py"


def argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        PRESET,
        f"--work_dir={tmp_path / 'work'}",
        f"--report_dir={tmp_path / 'reports'}",
        f"--sweep_overrides={['--n_trials=2', '--workers=1', f'--work_dir={tmp_path}/sweeps', f'--report_dir={tmp_path}/reports/sweeps']}",
        f"--data_dir={tmp_path / 'data'}",
        *extra,
    ]


@pytest.mark.slow
def test_the_whole_workflow_on_the_tiny_preset_resumes_and_redoes(tmp_path):
    assert pipeline.main(argv(tmp_path, f"--baseline_model_dir={MODEL_DIR}")) == 0
    work = tmp_path / "work" / "tiny"
    state = json.loads((work / "state.json").read_text())
    assert list(state["stages"]) == list(pipeline.STAGES)
    out = {stage: v["out"] for stage, v in state["stages"].items()}
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())  # prepared, since the data directory was empty
    assert meta["limit"] == 64 and meta["splits"]["train"]["examples"] <= 64  # the preset's prepare_args
    assert out["sweep"]["trials"] == 2 and out["sweep"]["config"]["base"] == "smollm2-135m"
    assert out["train"]["step"] == 4 and out["train"]["config"]["max_steps"] == 4  # `final` over the best trial
    assert (Path(out["export"]["model_dir"]) / "model.onnx").exists()
    dev = json.loads(Path(out["evaluate"]["dev"]).read_text())
    assert dev["n"] == 2 and dev["ex"] is not None
    assert is_saved(Path(out["publish"]["adapter"]))
    md = (tmp_path / "reports" / "pipeline-tiny.md").read_text()
    assert "## Chosen configuration" in md and "EX" in md and "trainable parameters" in md
    assert (tmp_path / "reports" / "sweeps" / "sweep_tiny.md").exists()  # the sweep's own, linked from the pipeline's
    assert "(sweeps/sweep_tiny.md)" in md
    baseline = json.loads(Path(out["evaluate"]["baseline_dev"]).read_text())  # the starting model, same questions
    assert baseline["n"] == dev["n"] == 2 and baseline["model_id"] != dev["model_id"]
    assert f"Against the model the sweep started from (`{MODEL_DIR}`)" in md and "| Spider dev (2) |" in md

    # the same command again: every stage recorded, nothing runs
    before = (work / "state.json").read_text()
    assert pipeline.main(argv(tmp_path, f"--baseline_model_dir={MODEL_DIR}")) == 0
    assert (work / "state.json").read_text() == before

    # --redo=report: that stage only (it is the last), the others' records kept
    assert pipeline.main(argv(tmp_path, f"--baseline_model_dir={MODEL_DIR}", "--redo=report")) == 0
    again = json.loads((work / "state.json").read_text())["stages"]
    assert {s: v["out"] for s, v in again.items() if s != "report"} == {s: v for s, v in out.items() if s != "report"}


def test_bad_settings_are_refused_with_a_message(tmp_path, capsys):
    for extra, message in (
        (["--redo=deploy"], "unknown stage 'deploy'"),
        (["--sweep=nowhere.py"], "no sweep preset at nowhere.py"),
        (["--baseline_model_dir=nowhere"], "baseline_model_dir: no model.onnx in nowhere"),
        (["--bits=3"], "bits: 4 or 8"),
        (["--colour=red"], "unknown config key: colour"),
    ):
        assert pipeline.main(argv(tmp_path, *extra)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before anything was written
