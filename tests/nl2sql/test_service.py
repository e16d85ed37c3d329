"""QueryService end to end without a model: question → prompt → (fake) generator through the batching queue → guard →
read-only execution on a real SQLite database → logged outcome. Runs in seconds, so `make test-fast` covers the
service; the real model's answers are tested in tests/api (slow).

The fake (tests/fakes.py) answers each question with SQL the test wrote for it, as the model would; what the service
does with that SQL, and what it showed the model, is what is asserted. Expected rows come from the database itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes import FakeGenerator

from app.core.config import ROOT, Settings
from app.knowledge.store import KnowledgeStore, database_key
from app.main import build_service
from app.nl2sql.generator import Sampling
from app.nl2sql.intent import WRITE_MESSAGE
from app.nl2sql.outcome import EMPTY_MESSAGES
from app.nl2sql.service import QueryService
from app.querylog.store import QueryLog

CANCELLED = "SELECT count(*) FROM orders WHERE status = 'cancelled'"


def scalar(db: Path, sql: str):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.fixture
async def make_service(demo_db, tmp_path):
    """`make(answers, **settings)`: a started QueryService on the demo database, built as the app builds it, its
    generator a FakeGenerator that answers by `answers`, its query log in tmp_path. Execution-guided candidates are
    off unless the test turns them on (a failed greedy answer would otherwise ask the fake four more times); every
    other setting is the default (continuous batching included: a generator that cannot step gets whole batches)."""
    built: list[QueryService] = []

    async def make(answers, **overrides) -> tuple[QueryService, FakeGenerator]:
        kw = {"exec_guided_candidates": 0} | overrides
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{demo_db}",
            querylog_url=f"sqlite:///{tmp_path / f'querylog-{len(built)}.sqlite'}",
            model_dir=tmp_path / "no-model",  # never read: the service gets its generator
            **kw,
        )
        fake = FakeGenerator(answers)
        service = build_service(settings, generator=fake)
        service.batcher.start()
        built.append(service)
        return service, fake

    yield make
    for service in built:
        await service.batcher.stop()
        service.answers.querylog.close()
        service.executor.dispose()


def log_rows(service: QueryService) -> list[dict]:
    """What the service wrote to its query log, oldest first, read from the log database itself."""
    querylog = QueryLog(service.settings.querylog_url)
    try:
        return list(reversed(querylog.recent(100)))
    finally:
        querylog.close()


async def test_a_question_is_answered_with_the_rows_of_the_generated_sql(make_service, demo_db):
    service, fake = await make_service({"cancelled": CANCELLED})
    out = await service.ask("How many orders were cancelled?")

    assert (out.status, out.category) == ("ok", "ok"), out
    assert out.rows == [[scalar(demo_db, CANCELLED)]] and out.row_count == 1
    assert out.generated_sql == CANCELLED and "LIMIT" in out.sql  # the guard capped the rows
    assert out.question == "How many orders were cancelled?" and out.model_id == "fake-sql-writer"
    assert out.answer_id and out.batch_size == 1 and out.candidates is None and out.message is None
    # the model was asked once, greedily, with the whole demo schema and the question, constrained to its names
    (row,) = fake.received
    assert row.question == "How many orders were cancelled?"
    assert row.sampling.temperature == 0 and row.sampling.names is not None and "orders" in row.sampling.names.tables
    for table in ("customers", "orders", "order_items", "products", "payments"):
        assert f"\n{table}(" in row.prompt, table


async def test_a_table_name_written_bare_is_quoted_before_it_runs(tmp_path):
    """The models know Northwind's "Order Details" but write it without its quotes: the service quotes the schema's
    names that need quoting (here the generated SQL would be a syntax error)."""
    db = tmp_path / "trade.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            'CREATE TABLE "Order Details" (OrderID int, Quantity int); INSERT INTO "Order Details" VALUES (1, 5), (2, 7);'
        )
    bare = "SELECT SUM(Quantity) FROM Order Details"
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{db}",
        querylog_url=f"sqlite:///{tmp_path / 'querylog.sqlite'}",
        model_dir=tmp_path / "no-model",
        exec_guided_candidates=0,
    )
    service = build_service(settings, generator=FakeGenerator({"quantity": bare}))
    service.batcher.start()
    try:
        out = await service.ask("Total quantity ordered")
    finally:
        await service.batcher.stop()
        service.answers.querylog.close()
        service.executor.dispose()
    assert (out.status, out.rows) == ("ok", [[12]]), out
    assert out.generated_sql == bare and '"Order Details"' in out.sql


async def test_a_query_that_finds_no_rows_is_empty_with_a_message_not_a_success(make_service, demo_db):
    impossible = "SELECT order_id FROM orders WHERE shipped_date < order_date"
    assert scalar(demo_db, "SELECT count(*) FROM orders WHERE shipped_date < order_date") == 0
    service, _ = await make_service({"before they were ordered": impossible})
    out = await service.ask("Which orders shipped before they were ordered?")
    assert (out.status, out.category) == ("empty", "empty_result"), out
    assert out.rows == [] and out.columns == ["order_id"] and out.message == EMPTY_MESSAGES["empty_result"]


async def test_a_question_asking_to_delete_is_answered_in_words_and_never_reaches_the_model(make_service, demo_db):
    before = digest(demo_db)
    service, fake = await make_service({"cancelled": "DELETE FROM orders WHERE status = 'cancelled'"})
    out = await service.ask("Delete all cancelled orders")
    assert (out.status, out.category, out.message) == ("refused", "write_request", WRITE_MESSAGE)
    assert out.sql is None and out.rows == []
    assert fake.received == [] and digest(demo_db) == before


async def test_generated_dml_is_refused_by_the_guard_and_nothing_changes(make_service, demo_db):
    """A question that does not read as a write request, but the model writes a DELETE: the guard refuses it."""
    before, orders = digest(demo_db), scalar(demo_db, "SELECT count(*) FROM orders")
    delete = (
        "WITH gone AS (SELECT order_id FROM orders WHERE status = 'cancelled') "
        "DELETE FROM orders WHERE order_id IN (SELECT order_id FROM gone)"
    )
    service, _ = await make_service({"tidy": delete, "bare": "DELETE FROM orders WHERE status = 'cancelled'"})

    out = await service.ask("Tidy up the cancelled orders for me")
    assert (out.status, out.category) == ("refused", "refused"), out
    assert "read-only" in out.message and out.rows == [] and out.execute_ms is None
    # a bare DELETE is not even read as SQL: the extractor takes only queries (SELECT/WITH)
    bare = await service.ask("What about a bare statement?")
    assert (bare.status, bare.category) == ("error", "no_sql"), bare
    assert bare.generated_sql.startswith("DELETE") and bare.execute_ms is None

    assert scalar(demo_db, "SELECT count(*) FROM orders") == orders and digest(demo_db) == before


async def test_an_unknown_column_is_an_error_of_its_category(make_service):
    service, _ = await make_service({"loyalty": "SELECT name, loyalty_tier FROM customers"})
    out = await service.ask("What is each customer's loyalty tier?")
    assert (out.status, out.category) == ("error", "unknown_column"), out
    assert "loyalty_tier" in out.message and out.rows == []


async def test_a_table_the_answer_uses_but_never_reads_is_joined_in_and_an_edit_runs_as_written(make_service, demo_db):
    """`app.nl2sql.repair`: the model's SQL runs with the table joined on its key (the SQL shown says so); the same
    SQL edited by a person, or with REPAIR_MISSING_TABLES=false, fails as written."""
    unread = "SELECT SUM(oi.quantity) FROM orders o WHERE o.status = 'cancelled'"
    service, _ = await make_service({"units": unread})
    out = await service.ask("How many units were on cancelled orders?")
    intended = "SELECT SUM(oi.quantity) FROM orders o JOIN order_items oi ON oi.order_id = o.order_id WHERE o.status = 'cancelled'"
    assert (out.status, out.rows) == ("ok", [[scalar(demo_db, intended)]]), out
    assert out.generated_sql == unread and "JOIN order_items AS oi ON oi.order_id = o.order_id" in out.sql
    edited = await service.run_sql(unread)
    assert (edited.status, edited.category) == ("error", "unknown_column"), edited

    plain, _ = await make_service({"units": unread}, repair_missing_tables=False)
    out = await plain.ask("How many units were on cancelled orders?")
    assert (out.status, out.category) == ("error", "unknown_column"), out


async def test_an_allow_list_limits_the_schema_shown_and_refuses_sql_on_hidden_tables(make_service, demo_db):
    allowed = ["customers", "regions"]
    service, fake = await make_service(
        {
            "per region": "SELECT regions.name, count(*) FROM customers "
            "JOIN regions ON customers.region_id = regions.region_id GROUP BY regions.name",
            "cancelled": CANCELLED,
        }
    )
    out = await service.ask("How many customers are there per region?", allowed_tables=allowed)
    assert out.status == "ok", out
    per_region = "SELECT count(DISTINCT region_id) FROM customers"
    assert len(out.rows) == scalar(demo_db, per_region) and sum(r[1] for r in out.rows) == scalar(
        demo_db, "SELECT count(*) FROM customers"
    )

    hidden = await service.ask("How many orders were cancelled?", allowed_tables=allowed)
    assert (hidden.status, hidden.category) == ("refused", "refused"), hidden
    assert "orders" in hidden.message and hidden.rows == []

    # the model saw the allowed tables only, and its decoding was constrained to their names
    for row in fake.received:
        assert "customers(" in row.prompt and "regions(" in row.prompt
        for table in ("orders", "order_items", "products", "payments", "employees", "suppliers"):
            assert f"{table}(" not in row.prompt, table
        assert row.sampling.names.tables == frozenset(allowed)


async def test_run_sql_goes_through_the_same_guard_and_never_asks_the_model(make_service, demo_db):
    service, fake = await make_service({})
    customers = "SELECT count(*) FROM customers"
    out = await service.run_sql(customers)
    assert out.status == "ok" and out.rows == [[scalar(demo_db, customers)]], out
    assert out.question is None and out.model_id is None and out.answer_id is None

    refused = await service.run_sql("UPDATE customers SET city = 'Nowhere'")
    assert (refused.status, refused.category) == ("refused", "refused"), refused
    hidden = await service.run_sql("SELECT count(*) FROM orders", allowed_tables=["customers"])
    assert (hidden.status, hidden.category) == ("refused", "refused"), hidden
    assert scalar(demo_db, "SELECT count(*) FROM customers WHERE city = 'Nowhere'") == 0
    assert fake.received == []


def by_seed(answers: list[str]) -> Callable[[Sampling], str]:
    """Greedy writes answers[0]; a sampled candidate writes one of the others, chosen by its seed (the service derives
    consecutive seeds from the prompt, so n candidates write each of n answers once, in some order)."""

    def answer(sampling: Sampling) -> str:
        if sampling.temperature == 0:
            return answers[0]
        return answers[1 + sampling.seed % (len(answers) - 1)]

    return answer


async def test_a_failed_greedy_answer_is_rescued_by_a_sampled_candidate_that_returns_rows(make_service, demo_db):
    good = "SELECT count(*) FROM orders WHERE status = 'returned'"
    answers = [
        "SELECT count(*) FROM order WHERE status = 'returned'",  # greedy: a syntax error (ORDER is a keyword)
        "SELECT count(*) FROM orders WHERE state = 'returned'",  # unknown column
        "SELECT order_id FROM orders WHERE shipped_date < order_date",  # runs, no rows
        good,
        "SELECT count(*) FROM returns",  # unknown table
    ]
    service, fake = await make_service(
        {"returned": by_seed(answers)}, exec_guided_candidates=4, exec_guided_temperature=0.9
    )
    out = await service.ask("How many orders were returned?")

    assert (out.status, out.category) == ("ok", "ok"), out
    assert out.generated_sql == good and out.rows == [[scalar(demo_db, good)]]
    assert out.candidates == 4 and out.question == "How many orders were returned?"
    greedy, *sampled = fake.received
    assert greedy.sampling.temperature == 0
    assert len(sampled) == 4 and {r.sampling.temperature for r in sampled} == {0.9}
    assert len({r.sampling.seed for r in sampled}) == 4  # four different draws
    assert all(r.prompt == greedy.prompt for r in sampled)  # the same question, only decoded differently


async def test_an_answer_that_runs_with_rows_draws_no_candidates(make_service, demo_db):
    service, fake = await make_service({"cancelled": CANCELLED}, exec_guided_candidates=4)
    out = await service.ask("How many orders were cancelled?")
    assert out.status == "ok" and out.candidates is None, out
    assert len(fake.received) == 1


UNKEYED = (
    "SELECT c.name, SUM(p.amount) FROM customers AS c JOIN payments AS p ON c.customer_id = p.order_id GROUP BY c.name"
)
KEYED = (
    "SELECT c.name, SUM(p.amount) FROM customers AS c JOIN orders AS o ON o.customer_id = c.customer_id "
    "JOIN payments AS p ON p.order_id = o.order_id GROUP BY c.name"
)


async def test_an_answer_joined_on_unlinked_columns_draws_candidates_and_one_joined_on_keys_wins(make_service, demo_db):
    empty = "SELECT c.name FROM customers AS c WHERE c.name = 'nobody'"
    service, fake = await make_service(
        {"paid": by_seed([UNKEYED, UNKEYED.replace("SUM", "sum"), empty, KEYED])}, exec_guided_candidates=3
    )
    out = await service.ask("How much has each customer paid?")
    assert (out.status, out.category, out.message) == ("ok", "ok", None), out
    assert out.generated_sql == KEYED and out.candidates == 3
    with sqlite3.connect(demo_db) as conn:
        expected = [list(r) for r in conn.execute(KEYED)]
    assert out.rows and out.rows == expected[: len(out.rows)]  # the first rows, as the row limit caps them


async def test_an_answer_that_keeps_an_unkeyed_join_says_so_and_is_no_success_on_the_dashboard(make_service):
    service, fake = await make_service({"paid": UNKEYED}, exec_guided_candidates=2)
    out = await service.ask("How much has each customer paid?")
    assert out.status == "ok" and out.rows and len(fake.received) == 3, out  # rows kept, candidates tried
    assert out.category == "unkeyed_join" and "customers.customer_id = payments.order_id" in out.message
    assert [r["category"] for r in log_rows(service)] == ["unkeyed_join"]
    querylog = QueryLog(service.settings.querylog_url)
    try:
        board = querylog.dashboard()
    finally:
        querylog.close()
    assert board["success_rate"] == 0 and dict(board["top_errors"]) == {"unkeyed_join": 1}
    # without candidates the answer is flagged all the same, and so is SQL a user runs (an edited answer)
    alone, _ = await make_service({"paid": UNKEYED}, exec_guided_candidates=0)
    assert (await alone.ask("How much has each customer paid?")).category == "unkeyed_join"
    assert (await alone.run_sql(UNKEYED)).category == "unkeyed_join"
    assert (await alone.run_sql(KEYED)).category == "ok"


async def test_without_candidates_a_failed_greedy_answer_stands(make_service):
    service, fake = await make_service({"returned": "SELECT count(*) FROM returns"}, exec_guided_candidates=0)
    out = await service.ask("How many orders were returned?")
    assert (out.status, out.category, out.candidates) == ("error", "unknown_table", None), out
    assert len(fake.received) == 1


async def test_voting_answers_the_result_most_candidates_share(make_service, demo_db):
    returned = "SELECT count(*) FROM orders WHERE status = 'returned'"
    cancelled_sqls = [CANCELLED, "SELECT COUNT(order_id) FROM orders WHERE status = 'cancelled'"]
    answers = [returned, *cancelled_sqls, "SELECT count(*) FROM orders WHERE status = 'shipped'"]
    assert len({scalar(demo_db, sql) for sql in answers}) == 3  # three different results, two SQLs share one
    service, fake = await make_service({"orders": by_seed(answers)}, exec_guided_candidates=3, exec_guided_vote=True)
    out = await service.ask("How many orders were cancelled or returned, whichever?")
    assert out.status == "ok" and out.rows == [[scalar(demo_db, CANCELLED)]], out
    assert out.generated_sql in cancelled_sqls and out.candidates == 3
    assert sorted(r.sampling.temperature for r in fake.received) == [0, 0.7, 0.7, 0.7]


async def test_questions_asked_together_decode_in_one_batch(make_service, demo_db):
    """The fake cannot decode step by step, so the service batches whole batches: three questions at once, one
    call to the generator."""
    service, fake = await make_service(
        {
            "cancelled": CANCELLED,
            "customers": "SELECT count(*) FROM customers",
            "products": "SELECT count(*) FROM products",
        },
        batch_max_size=3,
        batch_max_wait_ms=1000,  # the batch closes as soon as the third arrives; the bound only covers a slow start
    )
    outs = await asyncio.gather(
        service.ask("How many orders were cancelled?"),
        service.ask("How many customers are there?"),
        service.ask("How many products are there?"),
    )
    assert [o.rows for o in outs] == [
        [[scalar(demo_db, CANCELLED)]],
        [[scalar(demo_db, "SELECT count(*) FROM customers")]],
        [[scalar(demo_db, "SELECT count(*) FROM products")]],
    ]
    assert fake.batch_sizes == [3] and {o.batch_size for o in outs} == {3}


async def test_the_glossary_goes_under_the_schema_when_it_has_a_budget(make_service):
    glossary = ROOT / "app" / "db" / "demo_glossary.yaml"
    revenue = "SELECT SUM(quantity * unit_price * (1 - discount)) FROM order_items"
    service, fake = await make_service({"revenue": revenue}, glossary_file=glossary, glossary_token_budget=300)
    out = await service.ask("What is our total revenue?")
    assert out.status == "ok" and "revenue" in out.glossary_terms, out
    assert "order_items.quantity * order_items.unit_price * (1 - order_items.discount)" in fake.prompts[0]

    off, fake_off = await make_service({"revenue": revenue}, glossary_file=glossary, glossary_token_budget=0)
    out = await off.ask("What is our total revenue?")
    assert out.glossary_terms == [] and "order_items.discount)" not in fake_off.prompts[0]


async def test_categorical_values_are_in_the_schema_the_model_reads_when_asked(make_service):
    failed = "SELECT count(*) FROM payments WHERE status = 'failed'"
    service, fake = await make_service({"failed": failed}, schema_enum_values=8)
    out = await service.ask("How many payments failed?")
    assert out.status == "ok", out
    payments = next(line for line in fake.prompts[0].splitlines() if line.startswith("payments("))
    assert "status in (" in payments and "'failed'" in payments and "'pending'" in payments, payments
    plain, fake_plain = await make_service({"failed": failed}, schema_enum_values=0)
    await plain.ask("How many payments failed?")
    assert "'failed'" not in fake_plain.prompts[0] and " in (" not in fake_plain.prompts[0]


async def test_verified_examples_become_earlier_turns_only_for_keys_that_may_read_their_tables(make_service):
    service, fake = await make_service({"cancelled": CANCELLED})
    example_sql = "SELECT count(*) FROM orders WHERE status = 'returned'"
    # stored before the first question, as the feedback route stores it (the service reads it on first use)
    engine = sa.create_engine(service.settings.querylog_url)
    KnowledgeStore(engine).add_example(
        database_key(service.settings.database_url),
        "How many orders were returned?",
        example_sql,
        ["orders"],
        "test",
        None,
    )
    engine.dispose()
    out = await service.ask("How many orders were cancelled?")
    assert out.status == "ok" and out.verified_examples == 1, out
    assert "Question: How many orders were returned?" in fake.prompts[0] and example_sql in fake.prompts[0]
    assert fake.received[0].question == "How many orders were cancelled?"  # the example came before, as a turn

    await service.ask("How many orders were cancelled?", allowed_tables=["customers"])  # refused, but prompted
    assert "How many orders were returned?" not in fake.prompts[1]


async def test_every_answer_is_logged_once_with_what_it_was(make_service):
    service, _ = await make_service({"cancelled": CANCELLED, "loyalty": "SELECT name, loyalty_tier FROM customers"})
    answers = [
        await service.ask("How many orders were cancelled?"),
        await service.ask("Delete all cancelled orders"),
        await service.ask("What is each customer's loyalty tier?"),
        await service.run_sql("SELECT count(*) FROM products"),
    ]
    rows = log_rows(service)
    assert len(rows) == 4
    assert [(r["source"], r["status"], r["category"]) for r in rows] == [
        ("question", "ok", "ok"),
        ("question", "refused", "write_request"),
        ("question", "error", "unknown_column"),
        ("sql", "ok", "ok"),
    ]
    for row, out in zip(rows, answers, strict=True):
        assert (row["question"], row["sql"], row["answer_id"]) == (out.question, out.sql, out.answer_id)
        assert row["row_count"] == out.row_count
    assert rows[0]["model_sql"] == CANCELLED and rows[0]["model_id"] == "fake-sql-writer"
    assert rows[1]["model_sql"] is None and rows[3]["model_id"] is None
