"""Execution match as Spider scores it: run gold and predicted SQL read-only, then compare the rows.

The comparison follows `result_eq` of the test-suite evaluation (Zhong et al., 2020; github.com/taoyds/
test-suite-sql-eval, exec_eval.py): rows are a multiset (a list when the gold orders them), and the predicted columns
may come in another order if one permutation fits every row. Unlike it, floats match within a tolerance, and only
an ORDER BY of the outermost gold query makes order matter (one in a subquery does not order the result).
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sqlglot import exp

from models.hardness import parse_query

MAX_PERMUTED_COLUMNS = 6  # 6! = 720 candidate orders; wider results must keep the gold's column order


class TooManyRows(sqlite3.DatabaseError):
    """A result over `max_rows`: a sqlite3.Error, so callers count it as a failed execution like any other."""


def _values_equal(a: object, b: object, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, int) and isinstance(b, int):
            return a == b  # a tolerance would make distinct large ids equal
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return a == b


def _rows_equal(a: Sequence, b: Sequence, tol: float) -> bool:
    return len(a) == len(b) and all(_values_equal(x, y, tol) for x, y in zip(a, b, strict=True))


def _value_key(tol: float):
    """A total order over mixed values in which numbers equal within `tol` almost always sort alike."""
    digits = min(15, max(1, round(-math.log10(tol)) - 1)) if tol > 0 else 17

    def value_key(v: object) -> tuple:
        if v is None:
            return (0, 0.0, 0.0)
        if isinstance(v, int | float):
            # rounded first, so 0.30000000000000004 sorts with 0.3; the exact value breaks ties consistently
            rounded = 0.0 if abs(v) <= tol else float(f"{v:.{digits}g}")
            return (1, rounded, v)
        if isinstance(v, str):
            return (2, v, "")
        if isinstance(v, bytes):
            return (3, v, b"")
        return (4, repr(v), "")

    return value_key


def _same_rows(gold: list[tuple], pred: list[tuple], ordered: bool, tol: float, key) -> bool:
    """`gold` comes already sorted by `key` when order does not matter."""
    if not ordered:
        pred = sorted(pred, key=key)
    return all(_rows_equal(g, p, tol) for g, p in zip(gold, pred, strict=True))


def results_match(gold_rows: list[tuple], pred_rows: list[tuple], order_matters: bool, float_tol: float = 1e-6) -> bool:
    """Whether `pred_rows` is the same result as `gold_rows`: duplicates count, NULL equals NULL, 2 equals 2.0."""
    if not gold_rows and not pred_rows:
        return True
    if len(gold_rows) != len(pred_rows):
        return False
    n_cols = len(gold_rows[0])
    if any(len(r) != n_cols for r in pred_rows):
        return False
    # exact equality (Python's, where 2 == 2.0) settles most correct answers without sorting
    if gold_rows == pred_rows or (not order_matters and Counter(gold_rows) == Counter(pred_rows)):
        return True
    value_key = _value_key(float_tol)

    def key(row: tuple) -> tuple:
        return tuple(map(value_key, row))

    gold = gold_rows if order_matters else sorted(gold_rows, key=key)
    if _same_rows(gold, pred_rows, order_matters, float_tol, key):
        return True
    if n_cols < 2 or n_cols > MAX_PERMUTED_COLUMNS:
        return False

    # A gold column can only come from a predicted column holding the same multiset of values.
    def column(rows: list[tuple], i: int) -> list:
        return sorted((r[i] for r in rows), key=value_key)

    gold_cols = [column(gold_rows, i) for i in range(n_cols)]
    pred_cols = [column(pred_rows, j) for j in range(n_cols)]
    fits = [[_rows_equal(g, p, float_tol) for p in pred_cols] for g in gold_cols]
    identity = tuple(range(n_cols))
    for perm in itertools.permutations(range(n_cols)):
        if perm == identity or not all(fits[i][j] for i, j in enumerate(perm)):
            continue
        permuted = [tuple(row[j] for j in perm) for row in pred_rows]
        if _same_rows(gold, permuted, order_matters, float_tol, key):
            return True
    return False


def rows_answer(gold_rows: list[tuple], pred_rows: list[tuple], float_tol: float = 1e-6) -> bool:
    """A lenient reading of "the same answer", beside the strict `results_match`: the same number of rows, in any
    order, and the narrower result's columns found, row for row, among the wider one's (a prediction that adds a
    column, or leaves out one the gold shows as well, still matches).

    Why: business questions rarely fix the columns or the order ("Who is the highest paid employee?" is answered by
    a name; the suite's gold also shows title and salary, sorted). Strict EX counts those answers wrong; this counts
    them right, and also some a user would not accept (one that leaves out a column the question asked for), so the
    two bracket what a user would call right. Columns beyond MAX_PERMUTED_COLUMNS + 2 are not searched."""
    if not gold_rows or not pred_rows:
        return not gold_rows and not pred_rows
    if len(gold_rows) != len(pred_rows):
        return False
    small, big = (pred_rows, gold_rows) if len(pred_rows[0]) <= len(gold_rows[0]) else (gold_rows, pred_rows)
    ns, nb = len(small[0]), len(big[0])
    if ns == 0 or nb > MAX_PERMUTED_COLUMNS + 2 or any(len(r) != ns for r in small) or any(len(r) != nb for r in big):
        return False
    value_key = _value_key(float_tol)

    def rounded(rows: list[tuple], cols: tuple[int, ...]) -> Counter:
        return Counter(tuple(value_key(r[c])[:2] for c in cols) for r in rows)

    target = rounded(small, tuple(range(ns)))
    # a column of the narrower result can only be a column of the wider one holding the same values
    fits = [[rounded(small, (i,)) == rounded(big, (j,)) for j in range(nb)] for i in range(ns)]
    for cols in itertools.permutations(range(nb), ns):
        if all(fits[i][j] for i, j in enumerate(cols)) and rounded(big, cols) == target:
            return True
    return False


_STRING = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_PARENS = re.compile(r"\([^()]*\)")
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


def order_matters(gold_sql: str) -> bool:
    """True when the outermost query of `gold_sql` has ORDER BY, so the order of its rows is part of the answer."""
    query = parse_query(gold_sql)
    if query is not None:
        while isinstance(query, exp.Subquery):
            query = query.this
        return bool(query.args.get("order"))
    # unparseable: look for ORDER BY outside strings and parentheses (where subqueries live)
    text = _STRING.sub("''", gold_sql)
    while True:
        text, n = _PARENS.subn(" ", text)
        if not n:
            break
    return bool(_ORDER_BY.search(text))


def execute_sqlite(db_path: str | Path, sql: str, timeout_s: float = 5.0, max_rows: int = 100_000) -> list[tuple]:
    """All rows of `sql` on a read-only connection; TimeoutError past `timeout_s`, TooManyRows past `max_rows`."""
    # mode=ro refuses writes to the file; query_only also covers databases the query might ATTACH
    conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s)
    try:
        conn.text_factory = lambda b: b.decode("utf-8", errors="replace")  # Spider has some non-UTF-8 text
        conn.execute("PRAGMA query_only=ON")
        deadline = time.monotonic() + timeout_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            rows = conn.execute(sql).fetchmany(max_rows + 1)
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the query ran longer than {timeout_s:g} s") from exc
            raise
    finally:
        conn.close()
    if len(rows) > max_rows:
        raise TooManyRows(f"the query returned more than {max_rows} rows")
    return [tuple(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in r) for r in rows]
