"""Every value of a short categorical column in the schema the model reads (`enum_values`), written as the SQL that
tests it: `status in ('completed', 'failed')`; names, long texts and many-valued columns get none. SQLite and
PostgreSQL (the same query reads both)."""

import pytest
import sqlalchemy as sa

from app.db.schema import ENUM_MAX_CHARS, Column, Table, introspect
from app.nl2sql.prompt import format_table


def _load(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE tickets (id INTEGER PRIMARY KEY, owner TEXT, state TEXT, note TEXT)"))
        rows = [
            {"id": i, "owner": f"person {i}", "state": ["open", "closed", "on hold"][i % 3], "note": "x" * 40}
            for i in range(30)
        ]
        conn.execute(sa.text("INSERT INTO tickets VALUES (:id, :owner, :state, :note)"), rows)


def _check(engine: sa.Engine) -> None:
    cols = {c.name: c for c in introspect(engine, enum_values=5).table("tickets").columns}
    assert cols["state"].values == ("closed", "on hold", "open")  # most frequent first, then by value (10 each)
    assert cols["owner"].values == ()  # 30 distinct names: not a category
    assert cols["note"].values == ()  # one value, but longer than ENUM_MAX_CHARS: not worth the prompt's tokens
    assert cols["id"].values == ()  # keys are never listed
    assert all(c.values == () for c in introspect(engine).table("tickets").columns)  # off by default
    # more distinct values than asked for: none listed (a partial list would read as the complete one)
    assert {c.name: c.values for c in introspect(engine, enum_values=2).table("tickets").columns}["state"] == ()


def test_categorical_columns_list_their_values_on_sqlite(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.sqlite'}")
    _load(engine)
    _check(engine)
    engine.dispose()


def test_a_short_tables_names_are_not_categories(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT)"))
        conn.execute(sa.text("INSERT INTO singer VALUES (1, 'Ann', 'France'), (2, 'Bo', 'France'), (3, 'Cy', 'Italy')"))
    cols = {c.name: c.values for c in introspect(engine, enum_values=5).table("singer").columns}
    assert cols["name"] == ()  # each name once: listing them would only lengthen the prompt
    assert cols["country"] == ()  # 3 rows of 2 values: not repeated twice on average
    engine.dispose()


def test_values_are_written_as_quoted_sql_literals():
    table = Table("t", (Column("id", "int", True), Column("kind", "text", values=("a'b", "plain")), Column("n", "num")))
    assert format_table(table) == "t(id int PK, kind in ('a''b', 'plain'), n num)"
    assert ENUM_MAX_CHARS >= 20  # room for 'United Kingdom', 'Customer Service'


def test_the_demo_databases_categories(demo_db):
    engine = sa.create_engine(f"sqlite:///file:{demo_db}?mode=ro&uri=true")
    schema = introspect(engine, enum_values=8)
    engine.dispose()
    payments = {c.name: c.values for c in schema.table("payments").columns}
    assert set(payments["status"]) == {"completed", "refunded", "failed", "pending"}
    assert payments["method"] and payments["amount"] == ()  # numbers are not listed


@pytest.mark.slow
@pytest.mark.postgres
def test_categorical_columns_list_their_values_on_postgres(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS tickets"))
    _load(engine)
    try:
        _check(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE tickets"))
        engine.dispose()
