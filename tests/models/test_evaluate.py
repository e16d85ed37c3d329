"""Evaluation end to end on 10 Spider dev questions through the serving engine: streamed JSONL, resume, summary,
markdown, side-by-side comparison, and clear CLI errors."""

import json

import pytest

from models import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture
def out_root(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "out_root", tmp_path)
    return tmp_path


def test_ten_dev_questions_end_to_end_and_resume(out_root):
    assert evaluate.main(["--run", "t10", "--limit", "10", "--batch-size", "5"]) == 0
    lines = [json.loads(x) for x in (out_root / "t10.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and len({r["id"] for r in lines}) == 10
    for r in lines:
        assert r["category"] in {
            "ok",
            "wrong_result",
            "empty_result",
            "syntax_error",
            "unknown_table",
            "unknown_column",
            "timeout",
            "refused",
            "no_sql",
            "execution_error",
        }
        assert r["ok"] == (r["category"] == "ok")
    summary = json.loads((out_root / "t10.json").read_text())
    assert summary["n"] == 10 and 0 <= summary["ex"] <= 100
    assert sum(summary["categories"].values()) == 10
    assert set(summary["groups"]) <= {"easy", "medium", "hard", "extra"}
    assert "| group | n | EX % |" in (out_root / "t10.md").read_text()

    # a second run resumes: nothing is generated twice
    assert evaluate.main(["--run", "t10", "--limit", "10"]) == 0
    assert len((out_root / "t10.jsonl").read_text().splitlines()) == 10


def test_voting_draws_candidates_for_every_question_and_records_each(out_root):
    args = ["--run", "v3", "--limit", "3", "--constrained", "--candidates", "2", "--vote"]
    assert evaluate.main(args) == 0
    rows = [json.loads(x) for x in (out_root / "v3.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        v = r["votes"]
        assert len(v["statuses"]) == len(v["keys"]) == len(v["right"]) == len(v["sql"]) == 3  # greedy + 2 candidates
        assert v["sql"][v["chosen"]] == r["pred"]
        assert r["ok"] == v["right"][v["chosen"]]  # the chosen answer is the one judged
        assert r["rescued"] == (v["chosen"] > 0)
    assert json.loads((out_root / "v3.json").read_text())["vote"] is True
    rules = evaluate.choice_rules(out_root / "v3.jsonl")
    assert rules["n"] == 3 and rules["greedy"] <= rules["oracle"] and rules["vote"] <= rules["oracle"]
    assert evaluate.main(["choices", str(out_root / "v3.jsonl")]) == 0
    assert evaluate.main(["choices", str(out_root / "missing.jsonl")]) == 2
    assert evaluate.main(["--run", "bad", "--vote"]) == 2  # voting needs candidates


def test_the_torch_engine_takes_candidates_and_constrained_decoding(out_root, monkeypatch):
    """`--engine torch` decodes every way the serving engine does (it once took no sampling: a TypeError)."""
    from app.core.config import get_settings
    from models.bases import SMOLLM2

    args = ["--run", "torch2", "--engine", "torch", "--adapter", str(SMOLLM2.adapter_dir), "--limit", "2"]
    try:
        with monkeypatch.context() as m:
            m.setenv("BASE_MODEL", SMOLLM2.name)  # the adapter is SmolLM2's
            get_settings.cache_clear()
            assert evaluate.main([*args, "--constrained", "--candidates", "2", "--max-new-tokens", "64"]) == 0
    finally:
        get_settings.cache_clear()
    summary = json.loads((out_root / "torch2.json").read_text())
    assert summary["n"] == 2 and summary["engine"] == "torch" and summary["constrained"] and summary["candidates"] == 2
    assert summary["model_id"] == "torch-fp32:querywise-sql"


def test_compare_two_runs_side_by_side(out_root, capsys):
    for name, ex in (("a", 30.0), ("b", 40.0)):
        (out_root / f"{name}.json").write_text(
            json.dumps(
                {
                    "run": name,
                    "ex": ex,
                    "valid_sql": 90.0,
                    "n": 10,
                    "mean_gen_ms_per_question": 100.0,
                    "groups": {"easy": {"n": 5, "ex": ex}},
                    "categories": {"ok": 3},
                }
            )
        )
    assert evaluate.main(["compare", str(out_root / "a.json"), str(out_root / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "| EX % | 30.0 | 40.0 |" in out and "EX easy" in out


def test_cli_errors_are_clear(out_root, tmp_path, capsys):
    assert evaluate.main(["compare", str(tmp_path / "missing.json")]) == 2
    assert evaluate.main(["--run", "x", "--questions", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_judge_categorizes_failures(tmp_path):
    import sqlite3

    db = tmp_path / "t.sqlite"
    with sqlite3.connect(db) as c:
        c.executescript("CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');")
    item = {"id": 0, "db_id": "t", "db_path": str(db), "question": "q", "gold": "SELECT a FROM t", "group": "easy"}
    assert evaluate.judge(item, "SELECT a FROM t")["category"] == "ok"
    assert evaluate.judge(item, "SELECT b FROM t")["category"] == "wrong_result"
    assert evaluate.judge(item, "SELECT a FROM t WHERE a > 5")["category"] == "empty_result"
    assert evaluate.judge(item, "SELECT a FROM nope")["category"] == "unknown_table"
    assert evaluate.judge(item, "SELECT zz FROM t")["category"] == "unknown_column"
    assert evaluate.judge(item, "DELETE FROM t")["category"] in ("refused", "no_sql")
    assert evaluate.judge(item, "I don't know")["category"] == "no_sql"
    assert evaluate.judge(item, "SELECT FROM WHERE")["category"] == "syntax_error"
