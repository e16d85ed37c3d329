"""The read-only executor against a real SQLite file and a real PostgreSQL server (started by conftest)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
import sqlalchemy as sa
from tests_support import wait_until

from app.core.cancel import CancelToken
from app.sql.executor import NOT_ALLOWED, ExecutionError, Executor, QueryResult, categorize, json_value
from app.sql.guard import GuardedSQL, GuardError, guard_sql


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound, so no one else takes it, but never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def raw(sql: str, limit: int = 200) -> GuardedSQL:
    """SQL that never went through the guard: the executor must hold on its own."""
    return GuardedSQL(sql=sql, tables=frozenset(), limit=limit)


def digest(directory: Path) -> dict[str, str]:
    """Every file in the directory with its hash: a write would change one or leave a journal behind."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, joined DATE);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), amount REAL,
                             note BLOB);
        INSERT INTO customers VALUES (1, 'Ann', 'Oslo', '2024-01-02'), (2, 'Bob', 'Rome', NULL),
                                     (3, 'Cy%', 'Oslo', '2023-05-06');
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
        INSERT INTO orders SELECT i, 1 + i % 3, i * 1.5, CASE WHEN i = 1 THEN x'cafe' END FROM n;
        """
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def sqlite_url(sqlite_db: Path) -> str:
    return f"sqlite:///{sqlite_db}"


def test_rows_and_columns(sqlite_url: str) -> None:
    ex = Executor(sqlite_url)
    result = ex.run(guard_sql("SELECT id, name, city FROM customers ORDER BY id"))
    assert isinstance(result, QueryResult)
    assert result.columns == ["id", "name", "city"]
    assert result.rows == [[1, "Ann", "Oslo"], [2, "Bob", "Rome"], [3, "Cy%", "Oslo"]]
    assert (result.row_count, result.truncated) == (3, False)
    assert result.execute_ms >= 0
    assert ex.dialect == "sqlite"


def test_percent_and_colon_in_sql(sqlite_url: str) -> None:
    # Driver placeholders (`%s`, `:name`) must not be read into the SQL text.
    result = Executor(sqlite_url).run(
        guard_sql("SELECT name, '10:30' FROM customers WHERE name LIKE '%\\%%' ESCAPE '\\'")
    )
    assert result.rows == [["Cy%", "10:30"]]


def test_truncated_when_guard_capped(sqlite_url: str) -> None:
    result = Executor(sqlite_url, row_limit=50).run(guard_sql("SELECT id FROM orders ORDER BY id", row_limit=50))
    assert (result.row_count, result.truncated) == (50, True)
    assert result.rows[-1] == [50]


def test_not_truncated_under_users_own_limit(sqlite_url: str) -> None:
    result = Executor(sqlite_url, row_limit=50).run(guard_sql("SELECT id FROM orders LIMIT 10", row_limit=50))
    assert (result.row_count, result.truncated) == (10, False)


def test_not_truncated_when_fewer_rows_than_cap(sqlite_url: str) -> None:
    result = Executor(sqlite_url, row_limit=50).run(guard_sql("SELECT id FROM orders WHERE id <= 7", row_limit=50))
    assert (result.row_count, result.truncated) == (7, False)


def test_executor_caps_rows_without_a_limit(sqlite_url: str) -> None:
    result = Executor(sqlite_url, row_limit=20).run(raw("SELECT id FROM orders", limit=10_000))
    assert (result.row_count, result.truncated) == (20, True)


def test_json_friendly_values(sqlite_url: str) -> None:
    sql = "SELECT o.note, o.amount, c.joined, 9e999 AS inf FROM orders AS o, customers AS c WHERE o.id = 1 AND c.id = 1"
    result = Executor(sqlite_url).run(guard_sql(sql))
    assert result.rows == [["cafe", 1.5, "2024-01-02", None]]  # SQLite's 9e999 is infinity: not JSON
    json.dumps(result.rows, allow_nan=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12.50"), 12.5),
        (Decimal("NaN"), None),
        (float("inf"), None),
        (date(2024, 1, 2), "2024-01-02"),
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        (timedelta(days=1, hours=2), "1 day, 2:00:00"),
        (b"\x01\xff", "01ff"),
        (memoryview(b"\x00" * 1000), "<1000 bytes>"),
        (UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ([Decimal("1.5"), date(2024, 1, 2)], [1.5, "2024-01-02"]),
        ({"a": Decimal("2")}, {"a": 2.0}),
        (True, True),
        (None, None),
    ],
)
def test_json_value(value: object, expected: object) -> None:
    assert json_value(value) == expected


WRITES = [
    pytest.param("INSERT INTO customers VALUES (9, 'Eve', 'Nice', NULL)", id="insert"),
    pytest.param("UPDATE customers SET name = 'x'", id="update"),
    pytest.param("DELETE FROM orders", id="delete"),
    pytest.param("DROP TABLE orders", id="drop"),
    pytest.param("CREATE TABLE evil (a)", id="create"),
    pytest.param("CREATE TEMP TABLE evil (a)", id="create-temp"),
    pytest.param("PRAGMA writable_schema = 1", id="pragma"),
    pytest.param("PRAGMA query_only = OFF", id="pragma-query-only-off"),
    pytest.param("VACUUM", id="vacuum"),
    pytest.param("ATTACH DATABASE ':memory:' AS evil", id="attach"),
    pytest.param("SELECT load_extension('/tmp/evil.so')", id="load-extension"),
    pytest.param("SELECT * FROM sqlite_master", id="catalog"),
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_refused_without_the_guard(sqlite_db: Path, sqlite_url: str, sql: str) -> None:
    before = digest(sqlite_db.parent)
    ex = Executor(sqlite_url)
    with pytest.raises(ExecutionError) as info:
        ex.run(raw(sql))
    assert info.value.category == "execution_error"
    assert "refused" in info.value.message
    ex.dispose()
    assert digest(sqlite_db.parent) == before
    assert ex.run(guard_sql("SELECT COUNT(*) FROM customers")).rows == [[3]]  # still usable


def test_connection_itself_is_read_only(sqlite_db: Path, sqlite_url: str) -> None:
    """Below the authorizer: the engine's connections are `mode=ro` with `query_only`."""
    before = digest(sqlite_db.parent)
    ex = Executor(sqlite_url)
    with ex.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
        with pytest.raises(sa.exc.OperationalError, match="readonly|query_only"):
            conn.exec_driver_sql("INSERT INTO customers VALUES (9, 'Eve', 'Nice', NULL)")
    with ex.engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
        conn.exec_driver_sql("PRAGMA query_only = OFF")
        conn.exec_driver_sql("DELETE FROM orders")
    ex.dispose()
    assert digest(sqlite_db.parent) == before


def test_uri_with_mode_rw_is_still_read_only(sqlite_db: Path) -> None:
    before = digest(sqlite_db.parent)
    ex = Executor(f"sqlite:///file:{sqlite_db}?mode=rw&uri=true")
    with pytest.raises(ExecutionError):
        ex.run(raw("DELETE FROM orders"))
    assert ex.run(guard_sql("SELECT COUNT(*) FROM orders")).rows == [[500]]
    ex.dispose()
    assert digest(sqlite_db.parent) == before


def test_path_with_uri_special_characters(tmp_path: Path) -> None:
    path = tmp_path / "my db #1?%.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("INSERT INTO t VALUES (42)")
    conn.commit()
    conn.close()
    url = sa.URL.create("sqlite", database=str(path)).render_as_string()  # `?` must be escaped in a URL
    assert Executor(url).run(guard_sql("SELECT a FROM t")).rows == [[42]]


def test_timeout_stops_runaway_query(sqlite_url: str) -> None:
    ex = Executor(sqlite_url, timeout_s=0.5)
    start = time.perf_counter()
    with pytest.raises(ExecutionError) as info:
        ex.run(raw("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c"))
    # The query never ends by itself: a "timeout" means the deadline stopped it, and not before it was due.
    assert info.value.category == "timeout"
    assert "0.5 s" in info.value.message
    assert time.perf_counter() - start >= 0.5
    # The deadline belongs to that query only.
    assert ex.run(guard_sql("SELECT COUNT(*) FROM orders")).rows == [[500]]


@pytest.mark.parametrize(
    ("sql", "category", "words"),
    [
        pytest.param("SELECT * FROM nope", "unknown_table", "no such table: nope", id="unknown-table"),
        pytest.param("SELECT nope FROM customers", "unknown_column", "no such column: nope", id="unknown-column"),
        pytest.param("SELEC 1", "syntax_error", "syntax error", id="syntax"),
        pytest.param("SELECT abs(1, 2)", "execution_error", "abs", id="wrong-arguments"),
    ],
)
def test_error_categories(sqlite_url: str, sql: str, category: str, words: str) -> None:
    with pytest.raises(ExecutionError) as info:
        Executor(sqlite_url).run(raw(sql))
    assert info.value.category == category
    assert words in info.value.message
    assert "Traceback" not in info.value.message and "sqlite:" not in info.value.message


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"])
def test_in_memory_database_refused(url: str) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Executor(url)


def test_missing_file_refused(tmp_path: Path) -> None:
    with pytest.raises(ExecutionError) as info:
        Executor(f"sqlite:///{tmp_path / 'missing.sqlite'}")
    assert info.value.category == "db_unavailable"
    assert not (tmp_path / "missing.sqlite").exists()


def test_unsupported_backend() -> None:
    with pytest.raises(ValueError, match="Unsupported"):
        Executor("mysql://user:secret@localhost/db")


def test_ping(sqlite_db: Path, sqlite_url: str) -> None:
    assert Executor(sqlite_url).ping() is True
    ex = Executor(sqlite_url)
    sqlite_db.unlink()
    assert ex.ping() is False
    with pytest.raises(ExecutionError) as info:
        ex.run(guard_sql("SELECT 1"))
    assert info.value.category == "db_unavailable"


def test_categorize_raw_and_guard_errors() -> None:
    assert categorize(sqlite3.OperationalError("no such table: x")) == "unknown_table"
    assert categorize(sqlite3.OperationalError("interrupted")) == "timeout"
    assert categorize(sqlite3.OperationalError("unable to open database file")) == "db_unavailable"
    assert categorize(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")) == "timeout"
    assert categorize(psycopg.errors.UndefinedColumn("x")) == "unknown_column"
    assert categorize(psycopg.OperationalError("connection refused")) == "db_unavailable"
    assert categorize(ExecutionError("unknown_table", "x")) == "unknown_table"
    assert categorize(GuardError("refused", "x")) == "refused"
    assert categorize(ValueError("x")) == "execution_error"


# ---------------------------------------------------------------- PostgreSQL

PG_DB = "querywise_executor_test"
PG_SETUP = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, city text, joined date, balance numeric(10, 2),
                        seen timestamptz, tag uuid, avatar bytea);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id), amount numeric(10, 2),
                     created_at date);
INSERT INTO customers VALUES
  (1, 'Ann', 'Oslo', '2024-01-02', 12.50, '2024-01-02 03:04:05+00', '00000000-0000-0000-0000-000000000001', '\\xcafe'),
  (2, 'Bob', 'Rome', NULL, NULL, NULL, NULL, NULL),
  (3, 'Cy%', 'Oslo', '2023-05-06', 0, NULL, NULL, NULL);
INSERT INTO orders SELECT i, 1 + i % 3, i * 1.5, DATE '2024-01-01' + i FROM generate_series(1, 500) AS i;
CREATE SEQUENCE ticket;
CREATE FUNCTION sneaky_write() RETURNS int LANGUAGE sql AS $$ INSERT INTO customers VALUES (99, 'X') RETURNING 1 $$;
"""


@dataclass(frozen=True)
class PgUrls:
    admin: str  # superuser: only the READ ONLY transaction stands between it and a write
    reader: str  # qw_reader: SELECT grants only, as deployed


@pytest.fixture(scope="module")
def pg(postgres_url: str, postgres_readonly_url: str) -> PgUrls:
    """A database of its own, so other tests sharing the server can use the public schema freely."""
    with psycopg.connect(
        sa.make_url(postgres_url).set(drivername="postgresql").render_as_string(), autocommit=True
    ) as c:
        c.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
        c.execute(f"CREATE DATABASE {PG_DB}")
    urls = PgUrls(
        *(sa.make_url(u).set(database=PG_DB).render_as_string(False) for u in (postgres_url, postgres_readonly_url))
    )
    engine = sa.create_engine(urls.admin)
    with engine.begin() as conn:
        conn.execution_options(no_parameters=True).exec_driver_sql(PG_SETUP)
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {sa.make_url(urls.reader).username}")
    engine.dispose()
    return urls


def _pg_count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar()
    engine.dispose()
    return n


@pytest.mark.postgres
def test_pg_rows_and_json_values(pg: PgUrls) -> None:
    ex = Executor(pg.reader)
    assert ex.dialect == "postgresql"
    result = ex.run(guard_sql("SELECT id, name, joined, balance, seen, tag, avatar FROM customers ORDER BY id",
                              dialect=ex.dialect))  # fmt: skip
    assert result.columns == ["id", "name", "joined", "balance", "seen", "tag", "avatar"]
    assert result.rows[0] == [1, "Ann", "2024-01-02", 12.5, "2024-01-02T03:04:05+00:00",
                              "00000000-0000-0000-0000-000000000001", "cafe"]  # fmt: skip
    assert result.rows[1] == [2, "Bob", None, None, None, None, None]
    assert (result.row_count, result.truncated) == (3, False)
    json.dumps(result.rows, allow_nan=False)


@pytest.mark.postgres
def test_pg_transpiled_sqlite_runs(pg: PgUrls) -> None:
    ex = Executor(pg.reader)
    sql = (
        "SELECT c.name, group_concat(strftime('%Y', o.created_at), ',') AS years, ifnull(c.city, '?') AS city "
        "FROM main.customers AS c JOIN orders AS o ON o.customer_id = c.id WHERE c.name LIKE '%\\%%' ESCAPE '\\' "
        "GROUP BY c.name, c.city"
    )
    result = ex.run(guard_sql(sql, dialect="postgresql"))
    assert result.columns == ["name", "years", "city"]
    assert result.rows[0][0] == "Cy%" and result.rows[0][2] == "Oslo"


@pytest.mark.postgres
def test_pg_truncation(pg: PgUrls) -> None:
    ex = Executor(pg.reader, row_limit=20)
    capped = ex.run(guard_sql("SELECT id FROM orders ORDER BY id", dialect="postgresql", row_limit=20))
    assert (capped.row_count, capped.truncated) == (20, True)
    # A query with no LIMIT at all (guard bypassed): the server-side cursor hands over only row_limit + 1 rows.
    unbounded = ex.run(raw("SELECT i FROM generate_series(1, 10000000) AS i", limit=10_000_000))
    assert (unbounded.row_count, unbounded.truncated) == (20, True)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("INSERT INTO customers VALUES (9, 'Eve')", id="insert"),
        pytest.param("DELETE FROM orders", id="delete"),
        pytest.param("SELECT sneaky_write()", id="function-that-writes"),
        pytest.param("SELECT nextval('ticket')", id="nextval"),
        pytest.param("CREATE TABLE evil (a int)", id="create"),
    ],
)
def test_pg_read_only_transaction_blocks_writes(pg: PgUrls, sql: str) -> None:
    """As the superuser, so only the READ ONLY transaction stands in the way."""
    before = (_pg_count(pg.admin, "customers"), _pg_count(pg.admin, "orders"))
    ex = Executor(pg.admin)
    with pytest.raises(ExecutionError) as info:
        ex.run(raw(sql))
    assert info.value.category in ("execution_error", "syntax_error")
    assert (_pg_count(pg.admin, "customers"), _pg_count(pg.admin, "orders")) == before
    ex.dispose()


@pytest.mark.postgres
def test_pg_function_write_names_read_only(pg: PgUrls) -> None:
    with pytest.raises(ExecutionError) as info:
        Executor(pg.admin).run(raw("SELECT sneaky_write()"))
    assert "read-only transaction" in info.value.message


@pytest.mark.postgres
def test_pg_statement_timeout(pg: PgUrls) -> None:
    ex = Executor(pg.admin, timeout_s=1.0)
    with pytest.raises(ExecutionError) as info:
        ex.run(raw("SELECT pg_sleep(5)"))
    assert info.value.category == "timeout"  # a finished sleep would have returned a row
    assert ex.run(guard_sql("SELECT COUNT(*) FROM orders", dialect="postgresql")).rows == [[500]]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "category"),
    [
        pytest.param("SELECT * FROM nope", "unknown_table", id="unknown-table"),
        pytest.param("SELECT * FROM nope.customers", "unknown_table", id="unknown-schema"),
        pytest.param("SELECT nope FROM customers", "unknown_column", id="unknown-column"),
        pytest.param("SELEC 1", "syntax_error", id="syntax"),
        pytest.param("SELECT 1 / 0", "execution_error", id="division-by-zero"),
    ],
)
def test_pg_error_categories(pg: PgUrls, sql: str, category: str) -> None:
    with pytest.raises(ExecutionError) as info:
        Executor(pg.reader).run(raw(sql))
    assert info.value.category == category
    assert "LINE" not in info.value.message and "qw_reader" not in info.value.message


@pytest.mark.postgres
def test_pg_ping(pg: PgUrls, postgres_server: dict) -> None:
    assert Executor(pg.admin).ping() is True
    with closed_port() as port:
        url = f"postgresql://{postgres_server['user']}:s3cret@127.0.0.1:{port}/{postgres_server['database']}"
        ex = Executor(url, timeout_s=1.0)
        assert ex.ping() is False
        with pytest.raises(ExecutionError) as info:
            ex.run(guard_sql("SELECT 1", dialect=ex.dialect))
    assert info.value.category == "db_unavailable"
    assert "s3cret" not in info.value.message and str(port) not in info.value.message
    assert "s3cret" not in repr(ex)


def test_sqlite_enforces_the_allow_list_again_on_every_table_read(sqlite_url):
    """A query the guard passed for a key limited to `customers`, but that reads `orders` by some form the guard did
    not see as a table read, is refused by the SQLite authorizer; the error does not name the table."""
    from app.sql.guard import GuardedSQL

    ex = Executor(sqlite_url)
    sneaky = GuardedSQL(
        sql="SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders) LIMIT 5",
        tables=frozenset({"customers"}),
        limit=5,
        allowed=frozenset({"customers"}),
    )
    with pytest.raises(ExecutionError) as info:
        ex.run(sneaky)
    assert "orders" not in info.value.message
    ok = guard_sql("SELECT name FROM customers LIMIT 5", allowed_tables=["customers"])
    assert ok.allowed == frozenset({"customers"}) and ex.run(ok).row_count > 0
    both = guard_sql(
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id", allowed_tables=["customers", "Orders"]
    )
    assert ex.run(both).row_count > 0


# ---------------------------------------------------------------- table-valued functions, cancellation, probes


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT value FROM json_each('[1, 2, 3]') ORDER BY value", id="json-each"),
        pytest.param("SELECT key FROM json_tree('{\"a\": {\"b\": 1}}') WHERE key = 'b'", id="json-tree"),
        pytest.param("SELECT e.value FROM json_each('[1]') e, json_tree('[2]') t", id="both"),
    ],
)
@pytest.mark.parametrize("allowed", [None, ["customers"]], ids=["any-table", "allow-list"])
def test_json_table_functions_run(sqlite_url: str, sql: str, allowed: list[str] | None) -> None:
    """json_each/json_tree register themselves in the schema on first use (an authorized catalog update): allowed,
    on a fresh connection every time, for any key."""
    ex = Executor(sqlite_url)
    assert ex.run(guard_sql(sql, allowed_tables=allowed)).row_count >= 1
    joined = "SELECT c.name, j.value FROM customers c, json_each('[10, 20]') j WHERE c.id = 1"
    assert ex.run(guard_sql(joined, allowed_tables=allowed)).row_count == 2
    ex.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param(
            "UPDATE sqlite_master SET type = 'table', name = 'x', tbl_name = 'x', rootpage = 0, sql = 'x' "
            "WHERE rowid = (SELECT key FROM json_each('[1]'))",
            id="catalog-update-shaped-like-vtab-init",
        ),
        pytest.param(
            "SELECT m.rowid, m.name FROM json_each('[1]') j, sqlite_master m", id="catalog-rowid-beside-json-each"
        ),
        pytest.param("INSERT INTO customers SELECT value, 'x', NULL, NULL FROM json_each('[7]')", id="insert-json"),
    ],
)
def test_catalog_writes_still_refused_next_to_json_each(sqlite_db: Path, sqlite_url: str, sql: str) -> None:
    before = digest(sqlite_db.parent)
    ex = Executor(sqlite_url)
    with pytest.raises(ExecutionError) as info:
        ex.run(raw(sql))
    assert info.value.category == "execution_error"
    ex.dispose()
    assert digest(sqlite_db.parent) == before


def _run_in_thread(ex: Executor, guarded: GuardedSQL, cancel) -> tuple[threading.Thread, list]:
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(ex.run(guarded, cancel))
        except ExecutionError as e:
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


FOREVER = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c"


def test_sqlite_query_stops_when_cancelled(sqlite_url: str) -> None:
    """A query for a client that went away stops when its token is cancelled: with a 10-minute deadline and a
    query that never ends, only the cancellation can stop it."""
    ex = Executor(sqlite_url, timeout_s=600)
    token = CancelToken()
    thread, outcome = _run_in_thread(ex, raw(FOREVER), token)
    wait_until(lambda: ex.engine.pool.checkedout() == 1, "the query took a connection")
    token.cancel()
    thread.join(timeout=60)
    assert not thread.is_alive() and isinstance(outcome[0], ExecutionError), outcome
    assert outcome[0].category == "cancelled"
    assert ex.run(guard_sql("SELECT COUNT(*) FROM orders")).rows == [[500]]  # the connection is fine
    with pytest.raises(ExecutionError) as info:
        ex.run(guard_sql("SELECT 1"), token)  # already cancelled: nothing runs
    assert info.value.category == "cancelled"


@pytest.mark.postgres
def test_pg_query_is_cancelled_on_the_server(pg: PgUrls) -> None:
    ex = Executor(pg.reader, timeout_s=600)
    token = CancelToken()
    thread, outcome = _run_in_thread(ex, raw("SELECT pg_sleep(600)"), token)
    admin = sa.make_url(pg.admin).set(drivername="postgresql").render_as_string(False)

    def running() -> list:
        with psycopg.connect(admin, autocommit=True) as conn:
            return conn.execute(
                # The rows are fetched from a cursor: the statement that sleeps is a FETCH of the reader's.
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND usename = %s",
                (sa.make_url(pg.reader).username,),
            ).fetchall()

    wait_until(lambda: bool(running()), "the query runs on the server")
    token.cancel()
    thread.join(timeout=60)
    assert not thread.is_alive() and isinstance(outcome[0], ExecutionError), outcome
    assert outcome[0].category == "cancelled"
    assert running() == []
    assert ex.run(raw("SELECT 1")).rows == [[1]]
    ex.dispose()


def test_ping_does_not_wait_for_the_query_pool(sqlite_url: str) -> None:
    """Every pooled connection held by slow queries: the readiness probe has connections of its own (else it
    would wait the pool's 30 s timeout and report a busy server as down)."""
    ex = Executor(sqlite_url)
    pool = ex.engine.pool
    held = [ex.engine.connect() for _ in range(pool.size() + pool._max_overflow)]
    try:
        with pytest.raises(sa.exc.TimeoutError):  # the shared pool really is exhausted
            ex.engine.pool._timeout = 0.1
            ex.engine.connect()
        assert ex.ping() is True
    finally:
        for conn in held:
            conn.close()
    ex.dispose()


def _refusal(ex: Executor, sql: str) -> tuple[str, str]:
    limited = GuardedSQL(sql=sql, tables=frozenset({"customers"}), limit=5, allowed=frozenset({"customers"}))
    with pytest.raises(ExecutionError) as info:
        ex.run(limited)
    return info.value.category, info.value.message


def test_restricted_key_errors_do_not_say_which_tables_exist(sqlite_url: str) -> None:
    """Past the guard, a key limited to `customers` gets one answer for a forbidden table and a missing one."""
    ex = Executor(sqlite_url)
    forbidden, missing = _refusal(ex, "SELECT * FROM orders"), _refusal(ex, "SELECT * FROM no_such_table")
    assert forbidden == missing == ("refused", NOT_ALLOWED)
    # An unrestricted key sees the whole schema anyway: it keeps the database's own words.
    with pytest.raises(ExecutionError) as info:
        ex.run(raw("SELECT * FROM no_such_table"))
    assert info.value.category == "unknown_table" and "no_such_table" in info.value.message


@pytest.mark.postgres
def test_pg_restricted_key_errors_do_not_say_which_tables_exist(pg: PgUrls) -> None:
    admin = sa.create_engine(pg.admin)
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS hidden_from_reader (a int)")  # no grant to the reader
    admin.dispose()
    ex = Executor(pg.reader)
    not_granted = _refusal(ex, "SELECT * FROM hidden_from_reader")
    missing = _refusal(ex, "SELECT * FROM no_such_table")
    assert not_granted == missing == ("refused", NOT_ALLOWED)
    ex.dispose()
