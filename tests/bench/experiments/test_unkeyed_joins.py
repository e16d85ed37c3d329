"""The unkeyed-joins report (`bench.experiments.unkeyed_joins`) counts answers from run records on a real database."""

import json

from bench.experiments import unkeyed_joins

UNKEYED = "SELECT c.name FROM customers AS c JOIN payments AS p ON c.customer_id = p.order_id"
KEYED = "SELECT c.name FROM customers AS c JOIN orders AS o ON o.customer_id = c.customer_id"


def test_answers_with_an_unkeyed_join_are_counted_with_whether_they_were_right(tmp_path, demo_db):
    records = [
        {"db_id": "demo", "pred": UNKEYED, "gold": KEYED, "ok": False},
        {"db_id": "demo", "pred": KEYED, "gold": KEYED, "ok": True},
        {"db_id": "demo", "pred": None, "gold": KEYED, "ok": False},  # no SQL at all
    ]
    run = tmp_path / "run.jsonl"
    run.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "report"
    assert unkeyed_joins.main([f"{run}={demo_db}", "--out", str(out)]) == 0
    counts = json.loads(out.with_suffix(".json").read_text())
    want = {"answers": 3, "unkeyed": 1, "unkeyed_right": 0, "rest_right": 1, "gold_unkeyed": 0}
    assert counts["run"] == want and counts["all"] == want
    assert "| run | 3 | 1 | 0 | 1 of 2 | 0 |" in out.with_suffix(".md").read_text()


def test_a_run_without_its_database_is_refused_with_a_message(tmp_path, capsys):
    assert unkeyed_joins.main([f"{tmp_path / 'missing.jsonl'}=nowhere"]) == 2
    assert "expected RECORDS.jsonl=DB_ROOT" in capsys.readouterr().err
