"""Joins on columns that no key links: a sign that an answer is wrong.

A small model that picks the right tables often joins them on the wrong columns (`customers.customer_id =
payments.order_id`): the query runs, returns rows, and looks like a success. Measured on the served 1.5B's answers
(Spider dev-972, the business suite, the Northwind and Chinook holdouts: 1,122 answers), 53 had such a join and 50
of them were wrong (strict EX), against 38% of the rest; no gold query of those sets has one
(`bench.experiments.unkeyed_joins`, reports/bench/unkeyed-joins.md). So execution-guided
decoding treats an answer with such a join as a weak one (it draws candidates and prefers one that joins on keys),
and an answer that keeps one says so.

A join equality `a.x = b.y` is keyed when a declared foreign key links the two columns (either way), when both
columns have the same name, or when one is its table's primary key and the other is named after that table
(`customer_id`, `CustomerId` or `customer` for `customers.id`). An ON whose only column equalities read one table
reference on both sides (`JOIN cars_data AS cd ON m.MakeId = m.MakeId`, true of every row: a cross join) is unkeyed
whatever the names; beside an equality across two references, such a one is a filter and left alone. (Execution-
guided candidates took that tautology for a keyed join in 2 of the first 80 of 300 Spider dev answers.) Only
schemas that declare foreign keys are judged: without any, nothing tells a key from a coincidence. Columns the check
cannot resolve (a subquery's, an outer query's, an ambiguous bare name) are left alone.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from app.db.schema import Schema


def _stem(name: str) -> str:
    return name.lower().replace("_", "")


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


class KeyLinks:
    """What one schema declares: its foreign key pairs, primary keys and columns (lower case). Built once per schema
    by its owner (the service's `Prompter`, the evaluation per database), not once per answer."""

    def __init__(self, schema: Schema):
        self.columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
        # the names as the schema writes them, for SQL written from these (`app.nl2sql.repair`)
        self._tables = {t.name.lower(): t.name for t in schema.tables}
        self._columns = {(t.name.lower(), c.name.lower()): c.name for t in schema.tables for c in t.columns}
        self.primary = {t.name.lower(): {c.name.lower() for c in t.columns if c.primary_key} for t in schema.tables}
        self.pairs: set[tuple[tuple[str, str], tuple[str, str]]] = set()
        for t in schema.tables:
            for f in t.foreign_keys:
                a, b = (t.name.lower(), f.column.lower()), (f.ref_table.lower(), f.ref_column.lower())
                self.pairs |= {(a, b), (b, a)}

    def linked(self, a: tuple[str, str], b: tuple[str, str]) -> bool:
        if a[1] == b[1] or (a, b) in self.pairs:
            return True
        return self.named_after(a, b) or self.named_after(b, a)

    def table_name(self, table: str) -> str:
        return self._tables[table]

    def column_name(self, table: str, column: str) -> str:
        return self._columns[(table, column)]

    def named_after(self, key: tuple[str, str], other: tuple[str, str]) -> bool:
        """`other` is named after `key`'s table (and key column): customer_id or customer for customers.id."""
        table, column = key
        if column not in self.primary.get(table, ()):
            return False
        tables = {_stem(table), _stem(_singular(table))}
        return _stem(other[1]) in tables | {t + _stem(column) for t in tables}


def _scope(select: exp.Select, links: KeyLinks) -> dict[str, str]:
    """The tables a SELECT reads in its own FROM and JOINs: alias (and name) -> schema table, lower case."""
    scope: dict[str, str] = {}
    sources = [select.args.get("from_") or select.args.get("from")] + list(select.args.get("joins") or [])
    for source in sources:
        table = source.this if source is not None else None
        if isinstance(table, exp.Table) and table.name.lower() in links.columns:
            scope[table.name.lower()] = table.name.lower()
            scope[table.alias_or_name.lower()] = table.name.lower()
    return scope


def _resolve(col: exp.Column, scope: dict[str, str], links: KeyLinks) -> tuple[str, str] | None:
    name = col.name.lower()
    if col.table:
        table = scope.get(col.table.lower())
        return (table, name) if table and name in links.columns[table] else None
    owners = {t for t in scope.values() if name in links.columns[t]}
    return (owners.pop(), name) if len(owners) == 1 else None


def unkeyed_joins(sql: str, links: KeyLinks, dialect: str = "sqlite") -> list[str]:
    """The `JOIN … ON a.x = b.y` equalities of `sql` that no key of `links`' schema links, as `table.column =
    table.column`; [] when there are none, when the schema declares no foreign keys, or when the SQL does not parse."""
    if not links.pairs:
        return []
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (SqlglotError, RecursionError, ValueError):
        return []
    found: list[str] = []
    for select in tree.find_all(exp.Select):
        scope = _scope(select, links)
        for join in select.args.get("joins") or []:
            on = join.args.get("on")
            across, within = [], []
            for eq in on.find_all(exp.EQ) if on is not None else ():
                if not (isinstance(eq.this, exp.Column) and isinstance(eq.expression, exp.Column)):
                    continue
                a, b = _resolve(eq.this, scope, links), _resolve(eq.expression, scope, links)
                if a and b:
                    same = bool(eq.this.table) and eq.this.table.lower() == eq.expression.table.lower()
                    (within if same else across).append((a, b))
            found += [f"{a[0]}.{a[1]} = {b[0]}.{b[1]}" for a, b in across if not links.linked(a, b)]
            if not across:  # `ON m.MakeId = m.MakeId`: one table reference on both sides joins nothing to it
                found += [f"{a[0]}.{a[1]} = {b[0]}.{b[1]}" for a, b in within]
    return found
