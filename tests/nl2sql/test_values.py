"""Filter values the data lacks (app.nl2sql.values): a 0 or an empty answer caused by a value no row holds is
`empty` with a sentence that names the value and its look-alikes; a real 0 stays `ok`. SQLite and PostgreSQL."""

import pytest
import sqlalchemy as sa

from app.db import demo
from app.db.schema import introspect
from app.nl2sql.values import found_nothing, literal_filters, unmatched_values
from app.sql.executor import Executor


def test_filters_are_read_with_their_tables_through_aliases():
    sql = (
        "SELECT COUNT(*) FROM customers AS c JOIN orders AS o ON o.customer_id = c.customer_id "
        "WHERE c.city = 'Paris' AND 'shipped' = o.status AND o.status IN ('a', 'b') AND c.customer_id = 3"
    )
    got = {(f.table, f.column, f.value) for f in literal_filters(sql, "sqlite")}
    every = {("customers", "city", "Paris"), ("orders", "status", "shipped")}
    every |= {("orders", "status", "a"), ("orders", "status", "b")}
    assert len(got) == 3 and got <= every  # at most three are checked: each costs a query
    assert literal_filters("SELECT 1 FROM t WHERE x IN (SELECT y FROM u)", "sqlite") == []
    assert literal_filters("not sql at all (", "sqlite") == []


def test_found_nothing_means_no_rows_or_one_row_of_zeros_and_nulls():
    assert found_nothing([]) and found_nothing([[0]]) and found_nothing([[0, None, 0.0]])
    assert not found_nothing([[1]]) and not found_nothing([[0], [0]]) and not found_nothing([["0"]])


def _check(url: str) -> None:
    executor = Executor(url)
    engine = sa.create_engine(url)
    schema = introspect(engine)
    engine.dispose()
    try:
        [miss] = unmatched_values("SELECT COUNT(*) FROM customers WHERE city = 'paris'", schema, executor)
        assert (miss.table, miss.column, miss.value) == ("customers", "city", "paris")
        assert miss.suggestions == ["Paris"] and "'Paris'" in miss.sentence()
        # the value exists: a 0 for this combination is a real answer
        assert unmatched_values("SELECT COUNT(*) FROM orders WHERE status = 'cancelled'", schema, executor) == []
        # unqualified column in a join: missing only if no table of the query that has the column holds it
        sql = "SELECT COUNT(*) FROM orders JOIN customers USING (customer_id) WHERE city = 'Atlantis'"
        assert [m.value for m in unmatched_values(sql, schema, executor)] == ["Atlantis"]
        # a key that may not read the table gets no verdict (and no look at its values)
        assert unmatched_values("SELECT COUNT(*) FROM customers WHERE city = 'x'", schema, executor, ["orders"]) == []
    finally:
        executor.dispose()


def test_unmatched_values_on_sqlite(demo_db):
    _check(f"sqlite:///{demo_db}")


@pytest.mark.slow
@pytest.mark.postgres
def test_unmatched_values_on_postgres(postgres_url, postgres_readonly_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT USAGE ON SCHEMA public TO qw_reader")
        )
        conn.execute(sa.text("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO qw_reader"))
    demo.load(engine)
    engine.dispose()
    _check(postgres_readonly_url)


@pytest.mark.slow
async def test_a_zero_for_a_value_not_in_the_data_is_not_a_success(client):
    r = (await client.post("/sql", json={"sql": "SELECT COUNT(*) FROM customers WHERE city = 'Atlantis'"})).json()
    assert r["status"] == "empty" and r["category"] == "unmatched_value"
    assert "city = 'Atlantis'" in r["message"] and r["rows"] == [[0]]
    r = (await client.post("/sql", json={"sql": "SELECT name FROM customers WHERE country = 'narnia'"})).json()
    assert r["status"] == "empty" and r["category"] == "unmatched_value" and "'narnia'" in r["message"]
    # a value the data holds: the 0 is the answer
    sql = "SELECT COUNT(*) FROM orders WHERE status = 'cancelled' AND order_id < 0"
    r = (await client.post("/sql", json={"sql": sql})).json()
    assert r["status"] == "ok" and r["rows"] == [[0]]
