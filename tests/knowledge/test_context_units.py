"""The parts of business context that need no model: BM25, glossary parsing/selection/visibility, the
conversation prompt (the exact packed training format), and example checks through the guard."""

from pathlib import Path

import pytest

from app.knowledge import glossary
from app.knowledge.bm25 import BM25
from app.knowledge.context import DEMO_GLOSSARY
from app.knowledge.examples import ExampleError, ExampleIndex, check, strip_cap
from app.nl2sql.fewshot import EXAMPLES
from app.nl2sql.prompt import build_conversation, build_followup, build_prompt, build_target

SCHEMA = "orders(order_id int PK, status)\norder_items(order_id int -> orders.order_id, quantity int)"


def test_bm25_ranks_shared_rare_words_first_and_ignores_unrelated_documents():
    docs = ["total revenue by region in 2025", "how many employees per department", "revenue per month"]
    index = BM25(docs)
    top = index.top("What was revenue for each region?", 3)
    assert [i for i, _ in top] == [0, 2]  # the employees question shares no word: left out
    assert index.top("zebra", 3) == []


def test_conversation_without_context_is_the_plain_prompt_character_for_character():
    q = "How many orders?"
    assert build_conversation(SCHEMA, q) == build_prompt(SCHEMA, q)
    assert build_conversation(SCHEMA, q, examples=EXAMPLES) == build_prompt(SCHEMA, q, EXAMPLES)


def test_conversation_is_the_packed_training_format():
    earlier = [("Orders per status", "SELECT status, COUNT(*) FROM orders GROUP BY status"), ("Units?", "SELECT 1;")]
    text = build_conversation(SCHEMA, "How many orders?", earlier, notes="-- open order = orders.status = 'x': y")
    expected = (
        build_prompt(SCHEMA + "\n-- open order = orders.status = 'x': y", "Orders per status")
        + build_target(earlier[0][1])
        + build_followup("Units?")
        + build_target("SELECT 1")
        + build_followup("How many orders?")
    )
    assert text == expected
    assert text.count("orders(order_id") == 1  # the schema only in the first user turn
    assert text.endswith("<|im_start|>user\nQuestion: How many orders?<|im_end|>\n<|im_start|>assistant\n")


def test_the_demo_glossary_parses_and_round_trips_through_yaml():
    entries = glossary.parse_yaml(Path(DEMO_GLOSSARY).read_text())
    assert any(e.name == "revenue" and "discount" in e.sql for e in entries)
    assert glossary.parse_yaml(glossary.to_yaml(entries)) == entries


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"terms": [{"term": "x"}]}, "definition"),
        ({"terms": [{"term": "x", "definition": "y", "sql": "SUM(a); DROP TABLE t"}]}, "one SQL expression"),
        ({"terms": [{"term": "x", "definition": "y", "sql": "SELECT 1 FROM t"}]}, "one SQL expression"),
        ({"columns": [{"column": "status", "description": "y"}]}, "table.column"),
        ({"terms": [{"term": "x" * 81, "definition": "y"}]}, "at most 80"),
        ({"terms": [{"term": "a", "definition": "b"}, {"term": "A", "definition": "c"}]}, "twice"),
        ({"other": []}, "mapping"),
        ({"terms": [{"term": "x", "definition": "y", "extra": 1}]}, "optionally"),
    ],
)
def test_bad_glossaries_are_refused_with_a_reason(doc, message):
    with pytest.raises(glossary.GlossaryError, match=message):
        glossary.parse(doc)


def test_glossary_selection_keeps_all_while_short_and_the_relevant_ones_past_the_budget():
    entries = glossary.parse_yaml(Path(DEMO_GLOSSARY).read_text())
    count = lambda s: len(s.split())  # noqa: E731
    assert glossary.select(entries, "anything", 10_000, count) == entries
    chosen = glossary.select(entries, "total revenue in 2024", 60, count)
    assert "revenue" in [e.name for e in chosen] and "employees.manager_id" not in [e.name for e in chosen]
    assert count(glossary.format_entries(chosen)) <= 60


def test_a_restricted_key_sees_only_entries_about_its_tables():
    entries = glossary.parse(
        {
            "terms": [
                {"term": "revenue", "definition": "d", "sql": "SUM(order_items.quantity)"},
                {"term": "fiscal year", "definition": "starts in January"},
                {"term": "payroll", "definition": "total of employees salary"},
            ],
            "columns": [{"column": "orders.status", "description": "open or closed"}],
        }
    )
    names = ["orders", "order_items", "employees"]
    seen = glossary.visible(entries, {"orders", "order_items"}, names)
    assert [e.name for e in seen] == ["revenue", "fiscal year", "orders.status"]
    assert glossary.visible(entries, None, names) == entries


def test_examples_pass_the_guard_lose_the_guard_cap_and_are_ranked_most_similar_last():
    ok = check("How many orders?", "SELECT COUNT(*) FROM orders LIMIT 200;", **_limits(None))
    assert ok.sql == "SELECT COUNT(*) FROM orders" and ok.tables == {"orders"}
    assert strip_cap("SELECT a FROM t LIMIT 5", 200) == "SELECT a FROM t LIMIT 5"
    with pytest.raises(ExampleError, match="not saved"):
        check("q", "DELETE FROM orders", **_limits(None))
    with pytest.raises(ExampleError, match="not saved"):
        check("q", "SELECT * FROM employees", **_limits({"orders"}))
    with pytest.raises(ExampleError, match="too long"):
        check("q" * 501, "SELECT 1", **_limits(None))
    index = ExampleIndex(["revenue by region", "orders per status", "revenue by region in 2025", "salaries"])
    assert index.nearest("revenue by region for 2025", 2) == [0, 2]  # most similar last
    assert index.nearest("revenue by region for 2025", 2, keep=lambda i: i != 2) == [0]


def _limits(allowed):
    return {"dialect": "sqlite", "row_limit": 200, "allowed": allowed, "max_question": 500}


def test_the_number_of_examples_per_database_is_bounded(tmp_path, monkeypatch):
    import sqlalchemy as sa

    from app.knowledge import store as store_module

    monkeypatch.setattr(store_module, "MAX_EXAMPLES", 2)
    store = store_module.KnowledgeStore(sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}"))
    for i in range(2):
        store.add_example("db", f"question {i}", "SELECT 1", [], "approved", None)
    store.add_example("db", "Question 1?", "SELECT 2", [], "corrected", None)  # the same question: replaced
    assert [(e["question"], e["sql"]) for e in store.examples("db")] == [("question 0", "SELECT 1"), ("Question 1?", "SELECT 2")]  # fmt: skip
    with pytest.raises(store_module.ExamplesFull, match="delete some"):
        store.add_example("db", "question 2", "SELECT 1", [], "approved", None)
    store.add_example("other", "question 2", "SELECT 1", [], "approved", None)  # per database
