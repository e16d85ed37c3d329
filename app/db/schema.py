"""Schema introspection: read tables, columns, keys (and optionally sample values) through SQLAlchemy.

The same code reads the demo database at serving time and every Spider database at training time, so the
model sees one schema format everywhere (see `app.nl2sql.prompt`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import sqlalchemy as sa


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # normalized: int, num, text, date, bool
    primary_key: bool = False
    samples: tuple[str, ...] = ()
    # every value of a short categorical text column (`status`: 'pending', 'completed', …), so that a question's
    # "failed payments" becomes `status = 'failed'` with the database's own spelling and case (`enum_values`)
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForeignKey:
    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    row_count: int | None = None


@dataclass(frozen=True)
class Schema:
    dialect: str
    tables: tuple[Table, ...] = field(default_factory=tuple)

    def table(self, name: str) -> Table | None:
        lowered = name.lower()
        return next((t for t in self.tables if t.name.lower() == lowered), None)

    def restricted(self, names: Iterable[str]) -> Schema:
        """Only the tables in `names` (case-insensitive), without foreign keys that point at the others."""
        keep = {n.lower() for n in names}
        tables = tuple(
            replace(t, foreign_keys=tuple(f for f in t.foreign_keys if f.ref_table.lower() in keep))
            for t in self.tables
            if t.name.lower() in keep
        )
        return replace(self, tables=tables)


def normalize_type(raw: object) -> str:
    """Map a database type to one of five short names: the model needs the kind, not the width."""
    text = str(raw).upper() if raw is not None else ""
    if any(k in text for k in ("BOOL",)):
        return "bool"
    if any(k in text for k in ("DATE", "TIME")):
        return "date"
    if "INT" in text:
        return "int"
    if any(k in text for k in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL", "NUMBER", "MONEY")):
        return "num"
    return "text"


def _quote(engine: sa.Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)


def _sample_values(conn: sa.Connection, engine: sa.Engine, table: str, column: str, n: int) -> tuple[str, ...]:
    q = f"SELECT DISTINCT {_quote(engine, column)} FROM {_quote(engine, table)} WHERE {_quote(engine, column)} IS NOT NULL LIMIT {int(n)}"
    try:
        rows = conn.execute(sa.text(q)).fetchall()
    except sa.exc.SQLAlchemyError:
        return ()
    return tuple(str(r[0])[:40] for r in rows)


# how many rows of a table `_enum_values` reads: bounded work on a large table (introspection runs at start)
ENUM_SCAN_ROWS = 5000
ENUM_MAX_CHARS = 30


def _enum_values(conn: sa.Connection, engine: sa.Engine, table: str, column: str, n: int) -> tuple[str, ...]:
    """All values of a categorical text column when it has at most `n` (in its first ENUM_SCAN_ROWS rows), each
    repeated (twice the rows of its values at least: a short table's names are not categories) and short; else ().
    """
    col, tab = _quote(engine, column), _quote(engine, table)
    q = (
        f"SELECT v, COUNT(*) FROM (SELECT {col} AS v FROM {tab} WHERE {col} IS NOT NULL LIMIT {ENUM_SCAN_ROWS}) s "
        f"GROUP BY v ORDER BY COUNT(*) DESC, v LIMIT {int(n) + 1}"
    )
    try:
        rows = conn.execute(sa.text(q)).fetchall()
    except sa.exc.SQLAlchemyError:
        return ()
    values = [r[0] for r in rows]
    if not rows or len(rows) > n or sum(r[1] for r in rows) < 2 * len(rows):
        return ()
    if not all(isinstance(v, str) and 0 < len(v) <= ENUM_MAX_CHARS and "\n" not in v for v in values):
        return ()
    return tuple(values)


def introspect(engine: sa.Engine, sample_values: int = 0, schema: str | None = None, enum_values: int = 0) -> Schema:
    """Read the schema of `engine` (tables sorted by name; column order as declared). `sample_values` reads a few
    values of every text column, `enum_values` every value of the short categorical ones (`Column.values`)."""
    insp = sa.inspect(engine)
    tables = []
    # Real schemas (Spider's among them) declare odd types and foreign keys SQLite cannot resolve; SQLAlchemy
    # warns and carries on, and so do we: what it can read is what the model gets.
    with warnings.catch_warnings(), engine.connect() as conn:
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        for tname in sorted(insp.get_table_names(schema=schema)):
            pk = set(insp.get_pk_constraint(tname, schema=schema).get("constrained_columns") or [])
            fks = []
            for fk in insp.get_foreign_keys(tname, schema=schema):
                for col, ref in zip(fk["constrained_columns"], fk["referred_columns"] or [], strict=False):
                    if ref is not None:
                        fks.append(ForeignKey(col, fk["referred_table"], ref))
            cols = []
            for c in insp.get_columns(tname, schema=schema):
                ctype = normalize_type(c["type"])
                samples: tuple[str, ...] = ()
                values: tuple[str, ...] = ()
                if ctype == "text" and c["name"] not in pk:
                    if enum_values:
                        values = _enum_values(conn, engine, tname, c["name"], enum_values)
                    if sample_values and not values:
                        samples = _sample_values(conn, engine, tname, c["name"], sample_values)
                cols.append(Column(c["name"], ctype, c["name"] in pk, samples, values))
            tables.append(Table(tname, tuple(cols), tuple(fks)))
    return Schema(engine.dialect.name, tuple(tables))
