"""Execution match: row comparison as Spider scores it, ORDER BY detection, and read-only, time-limited execution."""

import sqlite3
from pathlib import Path

import pytest

from models.exec_match import TooManyRows, execute_sqlite, order_matters, results_match, rows_answer


def test_order_counts_only_when_asked() -> None:
    gold = [(1, "a"), (2, "b")]
    assert results_match(gold, [(2, "b"), (1, "a")], order_matters=False)
    assert not results_match(gold, [(2, "b"), (1, "a")], order_matters=True)
    assert results_match(gold, [(1, "a"), (2, "b")], order_matters=True)


def test_duplicates_count() -> None:
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)
    assert results_match([(1,), (2,), (1,)], [(1,), (1,), (2,)], order_matters=False)


def test_different_lengths_and_widths() -> None:
    assert not results_match([(1,), (2,)], [(1,)], order_matters=False)
    assert not results_match([(1,)], [(1, 2)], order_matters=False)
    assert not results_match([], [(1,)], order_matters=False)
    assert results_match([], [], order_matters=True)


def test_nulls() -> None:
    assert results_match([(None, 1)], [(None, 1)], order_matters=False)
    assert not results_match([(None,)], [(0,)], order_matters=False)
    assert not results_match([(None,)], [("",)], order_matters=False)


def test_floats_within_tolerance_and_ints_by_value() -> None:
    assert results_match([(0.3,)], [(0.1 + 0.2,)], order_matters=True)
    assert results_match([(2,)], [(2.0,)], order_matters=True)
    assert results_match([(1, 0.3), (2, 0.7)], [(2, 0.7000000001), (1, 0.30000000000000004)], order_matters=False)
    assert not results_match([(0.3,)], [(0.31,)], order_matters=False)
    assert results_match([(0.3,)], [(0.31,)], order_matters=False, float_tol=0.1)
    # ints are exact: a tolerance would make distinct large ids equal
    assert not results_match([(10**12,)], [(10**12 + 1,)], order_matters=False)
    assert not results_match([("2",)], [(2,)], order_matters=False)


def test_column_permutation() -> None:
    gold = [(1, "a", 2.5), (2, "b", 3.5), (3, "c", None)]
    pred = [(c, n, x) for n, c, x in gold]
    assert results_match(gold, pred, order_matters=True)
    assert results_match(gold, list(reversed(pred)), order_matters=False)
    # one permutation must fit every row: here column 0/1 swap only in the second row
    assert not results_match([(1, 2), (3, 4)], [(1, 2), (4, 3)], order_matters=False)


def test_the_lenient_reading_takes_fewer_or_more_columns_in_any_order() -> None:
    gold = [("Ann", "Sales", 120000.0), ("Bo", "IT", 95000.0)]  # name, department, salary, sorted by salary
    assert rows_answer(gold, [("Bo",), ("Ann",)])  # the names the question asked for, unsorted
    assert rows_answer(gold, [(95000, "IT", "Bo", 7), (120000.0, "Sales", "Ann", 3)])  # more columns, reordered
    assert not results_match(gold, [("Bo",), ("Ann",)], order_matters=True)  # strict EX says wrong
    assert not rows_answer(gold, [("Ann",)])  # a row short
    assert not rows_answer(gold, [("Ann",), ("Cy",)])  # another row
    assert not rows_answer(gold, [("Ann", "IT"), ("Bo", "Sales")])  # each value in a column, wrongly paired
    assert not rows_answer(gold, [])
    assert rows_answer([], [])
    assert rows_answer([(3,)], [(3.0000000001,)])  # numbers within the tolerance
    assert not rows_answer([(1, 2, 3, 4, 5, 6, 7, 8, 9)], [(1,)])  # too wide to search


def test_no_permutation_search_past_six_columns() -> None:
    gold = [tuple(range(7))]
    assert results_match(gold, [tuple(range(7))], order_matters=False)
    assert not results_match(gold, [tuple(reversed(range(7)))], order_matters=False)
    assert results_match([tuple(range(6))], [tuple(reversed(range(6)))], order_matters=False)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT name FROM singer ORDER BY age DESC", True),
        ("SELECT name FROM singer", False),
        ("SELECT name FROM (SELECT name FROM singer ORDER BY age LIMIT 3)", False),
        ("SELECT name FROM singer WHERE id IN (SELECT id FROM t ORDER BY x LIMIT 1)", False),
        ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
        ("SELECT name FROM singer WHERE note = 'order by'", False),
        ("SELECT count(*) , name FROM t ORDER BY x LIMIT 1;", True),
        # unparseable: the regex fallback still skips strings and parentheses
        ("SELEC name FROM singer ORDER BY age", True),
        ("SELEC name FROM (SELECT name FROM singer ORDER BY age)", False),
    ],
)
def test_order_matters(sql: str, expected: bool) -> None:
    assert order_matters(sql) is expected


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE t (id INTEGER, name TEXT, score REAL, data BLOB);"
        "INSERT INTO t VALUES (1, 'a', 1.5, X'68C3A9'), (2, 'b', NULL, X'FF');"
    )
    conn.commit()
    conn.close()
    return path


def test_execute_returns_tuples_with_text_for_bytes(db: Path) -> None:
    rows = execute_sqlite(db, "SELECT id, name, score, data FROM t ORDER BY id")
    assert rows == [(1, "a", 1.5, "hé"), (2, "b", None, "\ufffd")]


def test_execute_is_read_only(db: Path) -> None:
    with pytest.raises(sqlite3.Error):
        execute_sqlite(db, "INSERT INTO t VALUES (3, 'c', 0, NULL)")
    assert execute_sqlite(str(db), "SELECT count(*) FROM t") == [(2,)]


def test_execute_times_out(db: Path) -> None:
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with pytest.raises(TimeoutError):
        execute_sqlite(db, endless, timeout_s=0.2)


def test_execute_refuses_too_many_rows(db: Path) -> None:
    with pytest.raises(TooManyRows):
        execute_sqlite(db, "SELECT * FROM t", max_rows=1)
    assert len(execute_sqlite(db, "SELECT * FROM t", max_rows=2)) == 2


def test_execute_errors_stay_sqlite_errors(db: Path) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        execute_sqlite(db, "SELECT * FROM missing")
