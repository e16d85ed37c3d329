"""Filter values the data lacks: why an answer found nothing.

A question that names a value the data does not hold ("customers in Atlantis", "orders with status 'shipped'" where
the data says 'Shipped') gets SQL that runs and finds nothing: no rows, or one row of 0 or NULL from an aggregate
(`COUNT(*)` of nothing is 0, not "no rows"). A 0 like that must not read as a success. `unmatched_values` lists each
`column = 'text'` (or `IN ('a', 'b')`) comparison of the query whose value no row of that column holds, with the
spellings the column does hold that differ only in case or contain it, so the answer can say which value matched
nothing and what was probably meant.

Every probe is itself a small read query through the guard (with the key's allow-list) and the read-only executor.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from app.db.schema import Schema
from app.sql.executor import ExecutionError, Executor
from app.sql.guard import GuardError, guard_sql, sqlglot_dialect

MAX_FILTERS = 3  # text comparisons checked per answer: each costs a probe or two on the user's database
MAX_SUGGESTIONS = 3


@dataclass(frozen=True)
class Filter:
    """A `column = 'value'` comparison of a query; `table` None when the column is not qualified."""

    table: str | None
    column: str
    value: str


@dataclass
class Unmatched:
    """A filter value that no row of its column holds, and the column's values that look like it."""

    table: str
    column: str
    value: str
    suggestions: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        said = f"no row of {self.table} has {self.column} = '{self.value}'"
        if self.suggestions:
            said += " (it holds " + ", ".join(f"'{s}'" for s in self.suggestions) + ")"
        return said


def found_nothing(rows: Sequence[Sequence]) -> bool:
    """No rows, or one row whose every value is 0 or NULL: what an aggregate over no matching rows returns."""
    if not rows:
        return True
    return len(rows) == 1 and all(v is None or (isinstance(v, (int, float)) and v == 0) for v in rows[0])


def literal_filters(sql: str, dialect: str) -> list[Filter]:
    """The `column = 'text'` and `column IN ('a', …)` comparisons of `sql` (either side order), tables resolved
    through the query's aliases."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (SqlglotError, RecursionError, ValueError):
        return []
    aliases = {t.alias_or_name.lower(): t.name for t in tree.find_all(exp.Table)}
    out: list[Filter] = []

    def add(col: exp.Column, lit: exp.Expression) -> None:
        if isinstance(lit, exp.Literal) and lit.is_string and lit.this:
            qualifier = col.table.lower() if col.table else None
            out.append(Filter(aliases.get(qualifier, col.table) if qualifier else None, col.name, lit.this))

    for node in tree.find_all(exp.EQ, exp.In):
        if isinstance(node, exp.EQ):
            left, right = node.this, node.expression
            if isinstance(left, exp.Column):
                add(left, right)
            elif isinstance(right, exp.Column):
                add(right, left)
        elif isinstance(node.this, exp.Column) and not node.args.get("query"):
            for item in node.expressions:
                add(node.this, item)
    unique = list(dict.fromkeys(out))
    return unique[:MAX_FILTERS]


class _Prober:
    """Runs the small probe queries: guarded with the key's allow-list, read-only, bounded like any answer."""

    def __init__(self, executor: Executor, allowed_tables: Collection[str] | None):
        self.executor, self.allowed = executor, allowed_tables

    def rows(self, query: exp.Select) -> list[list] | None:
        dialect = sqlglot_dialect(self.executor.dialect)
        try:
            guarded = guard_sql(
                query.sql(dialect=dialect),
                dialect=dialect,
                source_dialect=dialect,
                row_limit=MAX_SUGGESTIONS,
                allowed_tables=self.allowed,
            )
            return self.executor.run(guarded).rows
        except (GuardError, ExecutionError):
            return None  # no verdict: the value is not reported as missing


def _holds(prober: _Prober, table: str, column: str, value: str) -> bool | None:
    col = exp.column(column, table=table, quoted=True)
    q = exp.select("1").from_(exp.to_table(table, quoted=True).as_(table, quoted=True))
    rows = prober.rows(q.where(exp.EQ(this=col, expression=exp.Literal.string(value))).limit(1))
    return None if rows is None else bool(rows)


def _look_alikes(prober: _Prober, table: str, column: str, value: str) -> list[str]:
    col = exp.column(column, table=table, quoted=True)
    text = exp.Cast(this=col, to=exp.DataType.build("text"))
    pattern = "%" + value.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
    cond = exp.Like(this=exp.Lower(this=text), expression=exp.Literal.string(pattern))
    q = exp.select(col).distinct().from_(exp.to_table(table, quoted=True).as_(table, quoted=True))
    rows = prober.rows(q.where(cond).limit(MAX_SUGGESTIONS))
    return [str(r[0]) for r in rows or [] if r and r[0] is not None]


def unmatched_values(
    sql: str, schema: Schema, executor: Executor, allowed_tables: Collection[str] | None = None
) -> list[Unmatched]:
    """The text filters of `sql` whose value is in no row of the column compared (in any table of the query that
    has such a column, when it is not qualified). Filters that cannot be checked are left out, never guessed."""
    dialect = sqlglot_dialect(executor.dialect)
    filters = literal_filters(sql, dialect)
    if not filters:
        return []
    try:
        tree_tables = {t.name.lower() for t in sqlglot.parse_one(sql, read=dialect).find_all(exp.Table)}
    except (SqlglotError, RecursionError, ValueError):
        return []
    by_name = {t.name.lower(): t for t in schema.tables}
    prober, out = _Prober(executor, allowed_tables), []
    for f in filters:
        names = [f.table.lower()] if f.table else sorted(tree_tables)
        tables = [
            by_name[n]
            for n in names
            if n in by_name and any(c.name.lower() == f.column.lower() for c in by_name[n].columns)
        ]
        if not tables:
            continue
        verdicts = []
        for t in tables:
            column = next(c.name for c in t.columns if c.name.lower() == f.column.lower())
            verdicts.append((t.name, column, _holds(prober, t.name, column, f.value)))
        if any(v is None or v for _, _, v in verdicts):
            continue  # held somewhere, or could not be checked
        table, column, _ = verdicts[0]
        out.append(Unmatched(table, column, f.value, _look_alikes(prober, table, column, f.value)))
    return out
