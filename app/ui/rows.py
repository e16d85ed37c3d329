"""More of an answer than the row cap shows: its total row count, the next page, the whole (capped) result as CSV.

Each is a new query built from the answer's SQL and sent through the guard again (the key's allow-list, the row cap,
read-only) and the read-only executor: nothing a user sends here runs without the checks a question gets. Paging
moves the outer query's LIMIT/OFFSET (its ORDER BY stays where it was); the count wraps the query without its LIMIT.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from app.sql.executor import Executor, QueryResult
from app.sql.guard import GuardError, guard_sql

# Spreadsheets run a cell that starts with one of these as a formula (CSV injection): such text gets a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class RowsError(ValueError):
    """The SQL cannot be paged, counted or exported; the message is for the user."""


def _unbounded(sql: str, dialect: str) -> tuple[exp.Query, int]:
    """The query without its outer LIMIT and OFFSET, and the OFFSET it had."""
    try:
        trees = sqlglot.parse(sql, read=dialect)
    except (SqlglotError, RecursionError, ValueError):
        raise RowsError("The SQL could not be read.") from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        raise RowsError("Only one read query can be paged.")
    tree = trees[0]
    offset = tree.args.get("offset")
    start = int(offset.expression.this) if offset and isinstance(offset.expression, exp.Literal) else 0
    tree.set("limit", None)
    tree.set("offset", None)
    return tree, start


def page_sql(sql: str, dialect: str, page: int, size: int) -> str:
    tree, start = _unbounded(sql, dialect)
    return tree.limit(size).offset(start + page * size).sql(dialect=dialect)


def count_sql(sql: str, dialect: str) -> tuple[str, int]:
    """The count of the query's rows without LIMIT and OFFSET, and the OFFSET to subtract from it (SQLite allows no
    OFFSET without a LIMIT)."""
    tree, start = _unbounded(sql, dialect)
    return exp.select(exp.Count(this=exp.Star()).as_("n")).from_(tree.subquery("q")).sql(dialect=dialect), start


def run_guarded(sql: str, executor: Executor, row_limit: int, allowed_tables: Collection[str] | None) -> QueryResult:
    """Guard (source = target dialect: the SQL came from an answer already guarded) and run; RowsError on refusal."""
    try:
        guarded = guard_sql(
            sql,
            dialect=executor.dialect,
            source_dialect=executor.dialect,
            row_limit=row_limit,
            allowed_tables=allowed_tables,
        )
    except GuardError as exc:
        raise RowsError(exc.message) from None
    return executor.run(guarded)


def _csv_value(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def to_csv(columns: list[str], rows: list[list]) -> str:
    """RFC 4180 CSV (quotes doubled, CRLF line ends); text that a spreadsheet would run as a formula starts with '."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([_csv_value(c) for c in columns])
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return buffer.getvalue()
