"""The executor's size and time bounds that the adversarial suite (tests/security) showed were missing.

SQLite: a value may not outgrow SQLITE_MAX_VALUE_BYTES (read or built), SQLite's heap is capped, and an answer may not
carry more than MAX_RESULT_BYTES. PostgreSQL: the same answer budget, and fetching rows in batches never stretches the
statement timeout. The SQL here never went through the guard: the executor must hold on its own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.sql.executor import MAX_RESULT_BYTES, SQLITE_MAX_VALUE_BYTES, ExecutionError, Executor
from app.sql.guard import GuardedSQL


def raw(sql: str, limit: int = 200) -> GuardedSQL:
    return GuardedSQL(sql=sql, tables=frozenset(), limit=limit)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "limits.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) INSERT INTO t SELECT i, 'x' FROM n;
        """
    )
    conn.execute("INSERT INTO t VALUES (1000, ?)", ("y" * (SQLITE_MAX_VALUE_BYTES + 1),))
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def _fails_fast(ex: Executor, sql: str, words: str) -> None:
    """The cap, not the deadline, stops the query: the deadline would answer category "timeout" instead."""
    with pytest.raises(ExecutionError) as info:
        ex.run(raw(sql))
    assert info.value.category == "execution_error"
    assert words in info.value.message, info.value.message


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param(f"SELECT length(randomblob({SQLITE_MAX_VALUE_BYTES + 1}))", id="randomblob"),
        pytest.param("SELECT length(zeroblob(2000000000))", id="zeroblob"),
        # Without the cap: 1 GB after 30 doublings, 16 s past a 1 s deadline (one VM step per concatenation).
        pytest.param(
            "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) FROM r",
            id="doubling-cte",
        ),  # fmt: skip
        pytest.param("SELECT length(replace(hex(zeroblob(400000000)), '00', 'abc'))", id="replace-amplified"),
    ],
)
def test_sqlite_value_cap(sqlite_url: str, sql: str) -> None:
    _fails_fast(Executor(sqlite_url, timeout_s=1.0), sql, "too large for the service")


def test_sqlite_stored_value_over_cap_cannot_be_selected(sqlite_url: str) -> None:
    """The cost of the cap: a stored value above it is refused too, with a message that says why."""
    ex = Executor(sqlite_url)
    _fails_fast(ex, "SELECT doc FROM t WHERE id = 1000", f"at most {SQLITE_MAX_VALUE_BYTES // 1024} KB")
    assert ex.run(raw("SELECT count(*) FROM t WHERE id < 1000")).rows == [[100]]


def test_sqlite_result_budget(sqlite_url: str) -> None:
    ex = Executor(sqlite_url, row_limit=100)
    per_row = SQLITE_MAX_VALUE_BYTES - 1
    over = MAX_RESULT_BYTES // (2 * per_row) + 1  # rows of two values that together pass the budget
    _fails_fast(ex, f"SELECT zeroblob({per_row}), zeroblob({per_row}) FROM t LIMIT {over}", "result is too large")
    under = ex.run(raw(f"SELECT zeroblob({per_row}) FROM t LIMIT {MAX_RESULT_BYTES // per_row - 1}"))
    assert under.row_count == MAX_RESULT_BYTES // per_row - 1


def test_sqlite_heap_cap_stops_a_wide_row(sqlite_url: str) -> None:
    """2,000 columns of values under the cap each: ~500 MB in one row, stopped by the heap limit, not the OS."""
    columns = ", ".join(["x"] * 2000)
    sql = f"WITH v(x) AS (SELECT randomblob({SQLITE_MAX_VALUE_BYTES - 1})) SELECT {columns} FROM v"
    _fails_fast(Executor(sqlite_url, timeout_s=5.0), sql, "more memory than the service allows")


def test_sqlite_rows_still_fetched_in_full(sqlite_url: str) -> None:
    """Growing fetch batches (1, 4, 16, …) return exactly what one fetch did."""
    result = Executor(sqlite_url, row_limit=30).run(raw("SELECT id FROM t ORDER BY id"))
    assert [r[0] for r in result.rows] == list(range(1, 31))
    assert result.truncated


@pytest.mark.postgres
def test_pg_result_budget(postgres_url: str) -> None:
    ex = Executor(postgres_url, timeout_s=5.0)
    _fails_fast(ex, "SELECT repeat('x', 1000000) FROM generate_series(1, 40)", "result is too large")  # 40 MB
    assert ex.run(raw("SELECT repeat('x', 100000) FROM generate_series(1, 40)")).row_count == 40  # 4 MB
    ex.dispose()


@pytest.mark.postgres
def test_pg_batches_share_one_deadline(postgres_url: str) -> None:
    """Each FETCH is a statement of its own; each gets only the time left, so the batches cannot add up. Rows come
    in batches of 1, 4 and 16 (row_limit 20): the largest takes 1.76 s, under the 2 s timeout on its own, but all
    21 rows take 2.31 s. With a full timeout per FETCH every batch would finish and rows would come back."""
    ex = Executor(postgres_url, timeout_s=2.0, row_limit=20)
    with pytest.raises(ExecutionError) as info:
        ex.run(raw("SELECT pg_sleep(0.11), i FROM generate_series(1, 21) AS i"))
    assert info.value.category == "timeout"
    assert ex.run(raw("SELECT i FROM generate_series(1, 10) AS i")).row_count == 10
    ex.dispose()
