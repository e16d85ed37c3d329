"""Schema linking: a 200-table database is cut to the tables a question needs, within the token budget.

No model here: tokens are counted by a word/punctuation regex, close enough to BPE counts for the rules under test.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.core.config import Settings
from app.db.catalog import SchemaCatalog
from app.db.schema import Column, ForeignKey, Schema, Table, introspect
from app.main import build_service
from app.nl2sql.linking import link_schema, question_words
from app.nl2sql.prompt import format_schema, format_table
from app.nl2sql.prompter import Prompter
from models.data import SPIDER_DIR, schema_at, sqlite_path

BUDGET = 300


def count_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


CORE = """
CREATE TABLE regions (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT,
    region_id INTEGER REFERENCES regions(id));
CREATE TABLE departments (id INTEGER PRIMARY KEY, name TEXT, budget REAL);
CREATE TABLE employees (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, hired_on DATE,
    department_id INTEGER REFERENCES departments(id), manager_id INTEGER REFERENCES employees(id));
CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE suppliers (id INTEGER PRIMARY KEY, company_name TEXT, country TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, unit_price REAL,
    category_id INTEGER REFERENCES categories(id), supplier_id INTEGER REFERENCES suppliers(id));
CREATE TABLE orders (id INTEGER PRIMARY KEY, order_date DATE, status TEXT,
    customer_id INTEGER REFERENCES customers(id), employee_id INTEGER REFERENCES employees(id));
CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id),
    product_id INTEGER REFERENCES products(id), quantity INTEGER, unit_price REAL);
CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
    order_id INTEGER REFERENCES orders(id), issued_on DATE, amount REAL, paid BOOLEAN);
CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY, invoice_id INTEGER REFERENCES invoices(id),
    product_id INTEGER REFERENCES products(id), quantity INTEGER, line_total REAL);
CREATE TABLE payments (id INTEGER PRIMARY KEY, invoice_id INTEGER REFERENCES invoices(id), paid_on DATE,
    amount REAL, method TEXT);
CREATE TABLE shipments (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id), shipped_on DATE,
    carrier TEXT);
"""
FILLER_KINDS = ("audit_log", "archive_table", "staging_batch", "etl_job_run", "cache_entry", "report_snapshot")
# Distractors: filler columns named like the business words, and keys into the core tables.
FILLER_EXTRAS = (
    "customer_ref TEXT",
    "amount REAL",
    "status TEXT",
    "name TEXT",
    "customer_id INTEGER REFERENCES customers(id)",
    "order_id INTEGER REFERENCES orders(id)",
    "employee_id INTEGER REFERENCES employees(id)",
)


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("linking") / "big.sqlite"
    ddl = [CORE]
    for k in range(200 - CORE.count("CREATE TABLE")):
        kind, extra = FILLER_KINDS[k % len(FILLER_KINDS)], FILLER_EXTRAS[k % len(FILLER_EXTRAS)]
        ddl.append(f"CREATE TABLE {kind}_{k} (id INTEGER PRIMARY KEY, created_at DATE, payload TEXT, {extra});")
    with sqlite3.connect(path) as conn:
        conn.executescript("\n".join(ddl))
    return path


@pytest.fixture(scope="module")
def big_schema(big_db) -> Schema:
    engine = sa.create_engine(f"sqlite:///{big_db}")
    try:
        return introspect(engine)
    finally:
        engine.dispose()


def names(schema: Schema) -> list[str]:
    return [t.name for t in schema.tables]


def assert_well_formed(linked: Schema, original: Schema, budget: int) -> None:
    assert linked.tables
    assert count_tokens(format_schema(linked)) <= budget
    order = names(original)
    assert names(linked) == sorted(names(linked), key=order.index)  # original order kept
    kept = {t.name.lower(): t for t in linked.tables}
    for table in linked.tables:
        for fk in table.foreign_keys:  # the prompt never names a table (or column) it does not show
            assert fk.ref_table.lower() in kept
            assert fk.ref_column.lower() in {c.name.lower() for c in kept[fk.ref_table.lower()].columns}


def test_synthetic_schema_is_large(big_schema):
    assert len(big_schema.tables) == 200
    assert count_tokens(format_schema(big_schema)) > 5 * BUDGET
    assert big_schema.table("order_items").foreign_keys


@pytest.mark.parametrize(
    ("question", "needed"),
    [
        ("total invoice amount per customer", {"invoices", "customers"}),
        ("products supplied by each supplier", {"products", "suppliers"}),
        ("order lines for order 5", {"order_items", "orders"}),
        ("How many employees work in each department?", {"employees", "departments"}),
        ("Which clients have unpaid bills?", {"customers", "invoices"}),  # synonyms
        ("quantity of each product on invoice lines", {"invoice_lines", "products"}),
        ("payments made by customer Smith", {"payments", "invoices", "customers"}),  # invoices via keys
        ("list the carriers of shipments for orders in March", {"shipments", "orders"}),
        ("name of the product category with the most products", {"products", "categories"}),
    ],
)
def test_keeps_the_tables_a_question_needs(big_schema, question, needed):
    linked = link_schema(big_schema, question, BUDGET, count_tokens)
    assert needed <= set(names(linked)), names(linked)
    assert len(linked.tables) < 40  # a cut, not the whole schema
    assert_well_formed(linked, big_schema, BUDGET)


def test_foreign_keys_follow_kept_tables(big_schema):
    linked = link_schema(big_schema, "order lines for order 5", BUDGET, count_tokens)
    items = linked.table("order_items")
    assert {(f.column, f.ref_table) for f in items.foreign_keys} >= {("order_id", "orders")}
    assert "order_id int -> orders.id" in format_schema(linked)


def test_dangling_foreign_keys_are_dropped(big_schema):
    # Room for `invoices` alone: its keys to customers and orders must go with the tables they point to.
    invoices = big_schema.table("invoices")
    budget = count_tokens(format_table(invoices))
    linked = link_schema(big_schema, "invoices issued last year", budget, count_tokens)
    assert names(linked) == ["invoices"]
    assert linked.table("invoices").foreign_keys == ()
    assert linked.table("invoices").columns == invoices.columns
    assert "->" not in format_schema(linked)
    assert_well_formed(linked, big_schema, budget)


def test_small_schema_is_returned_unchanged(big_schema):
    small = Schema("sqlite", tuple(big_schema.table(n) for n in ("customers", "orders", "regions")))
    assert link_schema(small, "orders per customer", BUDGET, count_tokens) is small
    empty = Schema("sqlite")
    assert link_schema(empty, "anything", 100, count_tokens) is empty


def test_linking_is_deterministic(big_schema):
    question = "total invoice amount per customer and region"
    first = link_schema(big_schema, question, BUDGET, count_tokens)
    assert all(link_schema(big_schema, question, BUDGET, count_tokens) == first for _ in range(3))


def test_never_empty_when_nothing_matches(big_schema):
    linked = link_schema(big_schema, "xyzzy plugh?", BUDGET, count_tokens)
    assert_well_formed(linked, big_schema, BUDGET)


def test_default_budget_fits(big_schema):
    budget = Settings().schema_token_budget
    linked = link_schema(big_schema, "total invoice amount per customer", budget, count_tokens)
    assert {"invoices", "customers"} <= set(names(linked))
    assert_well_formed(linked, big_schema, budget)


def wide_schema() -> Schema:
    readings = tuple(Column(f"sensor_reading_{k}", "num") for k in range(400))
    measurements = Table(
        "measurements",
        (Column("id", "int", primary_key=True), *readings[:200], Column("temperature", "num"), *readings[200:],
         Column("station_id", "int")),
        (ForeignKey("station_id", "stations", "id"),),
    )  # fmt: skip
    stations = Table(
        "stations", (Column("id", "int", primary_key=True), Column("name", "text"), Column("city", "text"))
    )
    return Schema("sqlite", (measurements, stations))


def test_a_table_too_wide_for_the_budget_keeps_keys_and_matching_columns():
    schema = wide_schema()
    linked = link_schema(schema, "average temperature per station", 120, count_tokens)
    assert_well_formed(linked, schema, 120)
    cols = [c.name for c in linked.table("measurements").columns]
    assert {"id", "temperature", "station_id"} <= set(cols)
    assert len(cols) < 50
    original = [c.name for c in schema.table("measurements").columns]
    assert cols == sorted(cols, key=original.index)  # declared order kept


def test_a_lone_table_too_wide_is_trimmed_to_fit():
    schema = Schema("sqlite", wide_schema().tables[:1])
    linked = link_schema(schema, "highest temperature", 60, count_tokens)
    assert_well_formed(linked, schema, 60)
    cols = [c.name for c in linked.table("measurements").columns]
    assert {"id", "temperature", "station_id"} <= set(cols)  # key, match, key; then declared columns as room allows
    assert len(cols) < 20
    assert linked.table("measurements").foreign_keys == ()  # stations is not there


def test_sample_values_point_to_their_table():
    tables = tuple(
        Table(f"site_{k}", (Column("id", "int", primary_key=True), Column("label", "text", samples=(f"Hall {k}",))))
        for k in range(20)
    )
    rooms = Table("rooms", (Column("id", "int", primary_key=True), Column("building", "text", samples=("Lamberton",))))
    schema = Schema("sqlite", (*tables, rooms))
    budget = count_tokens(format_table(rooms))
    assert names(link_schema(schema, "How many are in Lamberton?", budget, count_tokens)) == ["rooms"]


def test_question_words_are_split_singular_and_without_stopwords():
    assert question_words("How many OrderItems per categories, and the boxes of 2019?") == (
        "order",
        "item",
        "category",
        "box",
    )


def test_spider_schema_keeps_the_tables_of_a_known_question():
    path = sqlite_path(SPIDER_DIR / "database", "college_2")
    schema = schema_at(str(path))
    budget = count_tokens(format_schema(schema)) // 2
    cases = {
        "Find the title of courses that have two prerequisites?": {"course", "prereq"},
        "What is the name of the instructor who is in Statistics department and earns the lowest salary?": {
            "instructor",
            "department",
        },
        "How many rooms whose capacity is less than 50 does the Lamberton building have?": {"classroom"},
    }
    for question, needed in cases.items():
        linked = link_schema(schema, question, budget, count_tokens)
        assert needed <= {t.name for t in linked.tables}, (question, names(linked))
        assert_well_formed(linked, schema, budget)


def test_prompter_counts_schema_tokens_once_per_refresh(tmp_path: Path):
    path = tmp_path / "small.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(CORE)
    catalog = SchemaCatalog(sa.create_engine(f"sqlite:///{path}"))
    prompter = Prompter(catalog, knowledge=None, token_budget=10_000)
    calls: list[str] = []

    def counting(text: str) -> int:
        calls.append(text)
        return count_tokens(text)

    whole = prompter.schema_text()
    assert whole == format_schema(catalog.schema)
    assert prompter.schema_text_for("anything", counting) == whole  # fits: the whole text, untouched
    prompter.schema_text_for("anything else", counting)
    assert calls == [whole]  # counted once
    catalog.refresh()
    prompter.schema_text_for("anything", counting)
    assert len(calls) == 2  # a new schema is counted again


class StubGenerator:
    """What the service asks of the model before generating: its id, whether it is fine-tuned, and token counts."""

    model_id, fine_tuned, stepwise, model_dir = "stub", True, False, None

    def __init__(self) -> None:
        self.counted: list[str] = []

    def count_tokens(self, text: str) -> int:
        self.counted.append(text)
        return count_tokens(text)


def test_service_prompt_is_whole_when_it_fits_and_linked_when_not(big_db, tmp_path):
    def service(budget: int):
        settings = Settings(
            database_url=f"sqlite:///{big_db}",
            querylog_url=f"sqlite:///{tmp_path / 'querylog.sqlite'}",
            schema_token_budget=budget,
        )
        return build_service(settings, StubGenerator())

    roomy = service(8000)
    question = "total invoice amount per customer"
    whole = roomy.prompter.schema_text()
    assert f"\n{whole}\n\nQuestion: {question}" in roomy.prompt_for(question)

    tight = service(BUDGET)
    prompt = tight.prompt_for(question)
    schema_text = tight.prompter.schema_text_for(question, tight.generator.count_tokens)
    assert schema_text in prompt and "invoices(" in schema_text and "customers(" in schema_text
    assert "audit_log_" not in prompt
    assert count_tokens(schema_text) <= BUDGET
    full_counts = [t for t in tight.generator.counted if t == tight.prompter.schema_text()]
    assert len(full_counts) == 1  # the whole schema is counted once, not per question
