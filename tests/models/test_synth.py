"""Synthetic demo pairs: deterministic, distinct, sharing no structure with the evaluation suite, all answerable."""

from __future__ import annotations

import json
import sqlite3

import pytest

from app.db import demo
from app.nl2sql.prompt import normalize_sql
from models import synth
from models.scenarios import load_suite


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return synth.generate_pairs(seed=0)


def test_shape_and_size(pairs):
    assert 1500 <= len(pairs) <= 3000
    assert all(set(p) == {"db_id", "question", "query"} and p["db_id"] == "demo" for p in pairs)
    assert len({synth.normalize_question(p["question"]) for p in pairs}) == len(pairs)
    assert len(synth.TEMPLATES) >= 40


def test_deterministic(pairs):
    assert synth.generate_pairs(seed=0) == pairs
    assert synth.generate_pairs(n=100, seed=0) == pairs[:100]
    assert synth.generate_pairs(seed=1) != pairs


def test_no_overlap_with_suite(pairs):
    suite = load_suite()
    questions = {synth.normalize_question(c.question) for c in suite}
    queries = {normalize_sql(c.sql).lower() for c in suite}
    assert not [p for p in pairs if synth.normalize_question(p["question"]) in questions]
    assert not [p for p in pairs if normalize_sql(p["query"]).lower() in queries]


def test_no_shared_skeleton_or_shape_with_suite(pairs):
    suite = load_suite()
    skeletons = {synth.sql_skeleton(c.sql) for c in suite}
    shapes = {synth.question_shape(c.question, c.sql) for c in suite}
    assert not [p for p in pairs if synth.sql_skeleton(p["query"]) in skeletons]
    assert not [p for p in pairs if synth.question_shape(p["question"], p["query"]) in shapes]


def test_every_template_contributes(pairs):
    # one skeleton per template: a template whose structure the suite uses yields nothing and should go
    assert len({synth.sql_skeleton(p["query"]) for p in pairs}) == len(synth.TEMPLATES)


def test_normalize_question():
    assert synth.normalize_question("  How many ORDERS,  in 2025?! ") == "how many orders in 2025"


def test_sql_skeleton_masks_values_not_structure():
    top5 = """SELECT c.name, SUM(oi.quantity) AS Units FROM Customers c JOIN orders o ON o.customer_id = c.customer_id
              WHERE c.segment = 'wholesale' AND strftime('%Y', o.order_date) = '2024' LIMIT 5;"""
    top3 = top5.replace("'wholesale'", "'retail'").replace("'2024'", "'2025'").replace("LIMIT 5", "LIMIT 3")
    assert synth.sql_skeleton(top5) == synth.sql_skeleton(top3)
    assert synth.sql_skeleton(top5) == (
        "select c.name, sum(oi.quantity) as units from customers as c join orders as o on o.customer_id = "
        "c.customer_id where c.segment = ? and strftime(?, o.order_date) = ? limit ?"
    )
    assert synth.sql_skeleton(top5) != synth.sql_skeleton(top5.replace("SUM", "AVG"))
    assert synth.sql_skeleton("SELECT name FROM t WHERE x = 'O''Brien' AND y > -2.5") == (
        "select name from t where x = ? and y > ?"
    )
    # not SQL sqlglot can parse: literals masked by regex
    assert (
        synth.sql_skeleton("SELEC  Name FROM t WHERE x = 'O''Brien' AND y = 3;")
        == "selec name from t where x = ? and y = ?"
    )


def test_question_shape_masks_values():
    sql = "SELECT COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id WHERE c.name = 'Acme Corp.'"
    assert synth.question_shape("Top 5 customers by revenue in 2024") == "top # customers by revenue in #"
    assert synth.question_shape("top 3 customers by revenue, in 2025?") == "top # customers by revenue in #"
    assert synth.question_shape("How many orders did Acme Corp. place in Nov 2025?", sql) == (
        "how many orders did # place in # #"
    )
    assert synth.question_shape("What's the revenue in Q3 2024, the fourth quarter and September?") == (
        "what s the revenue in # # the # quarter and #"
    )
    assert (
        synth.question_shape('Customers over $150,000, 150k or "gold" on 2025-11-28')
        == "customers over # # or # on # # #"
    )
    assert synth.question_shape("Who covers the West Coast?", "SELECT 1 WHERE r = 'West Coast'") == "who covers the #"


def test_every_query_runs_on_the_demo_db(pairs, tmp_path_factory):
    path = demo.build_sqlite(tmp_path_factory.mktemp("synth") / "demo.sqlite")
    failed = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        for query in sorted({p["query"] for p in pairs}):
            try:
                row = conn.execute(query).fetchone()
            except sqlite3.Error as e:
                failed.append((query, str(e)))
                continue
            if row is None or all(v is None for v in row):
                failed.append((query, "empty"))
    assert failed == []


def test_cli_writes_spider_json(tmp_path, capsys):
    out = tmp_path / "data" / "synth_demo.json"
    assert synth.main(["--out", str(out), "--n", "25"]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 25 and all(r["db_id"] == "demo" and r["question"] and r["query"] for r in rows)
    assert "25 pairs" in capsys.readouterr().out


def test_cli_rejects_bad_n(tmp_path):
    with pytest.raises(SystemExit) as exc:
        synth.main(["--out", str(tmp_path / "x.json"), "--n", "0"])
    assert exc.value.code == 2
