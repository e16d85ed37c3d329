"""Glossary entries and verified examples in the application database (the query log's, never the user's).

Tables are created the way the query log creates its own (`create_all` on first use, so a restart finds them and
an old log database gains them), with portable types only: the same on SQLite and PostgreSQL. Every row carries the
database it is about (`database_key`): one application database can serve several user databases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from app.knowledge.glossary import Entry

metadata = sa.MetaData()
glossary_entry = sa.Table(
    "glossary_entry",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("database", sa.String(300), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # term | column
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("sql", sa.Text),
)
# One row per database whose glossary was ever written: a shipped glossary is imported only where there is none.
glossary_state = sa.Table(
    "glossary_state",
    metadata,
    sa.Column("database", sa.String(300), primary_key=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
verified_example = sa.Table(
    "verified_example",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("database", sa.String(300), nullable=False, index=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("tables", sa.Text, nullable=False),  # comma-separated, lowercased (allow-lists filter on it)
    sa.Column("source", sa.String(16), nullable=False),  # approved (👍) | corrected (👎 + SQL) | edited
    sa.Column("answer_id", sa.String(32)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


MAX_EXAMPLES = 5000  # per database: retrieval indexes them all in memory, and each one came from a person


class ExamplesFull(ValueError):
    """The database already has MAX_EXAMPLES verified examples."""


class KnowledgeUnavailable(Exception):
    """The application database cannot be read or written right now."""


def database_key(url: str) -> str:
    """Which user database a row is about: its URL without password or options (a SQLite file by absolute path)."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        return f"sqlite:///{Path(u.database).resolve()}"[:300]
    return u.set(password=None, query={}).render_as_string(hide_password=False)[:300]


def _question_key(question: str) -> str:
    return " ".join(question.lower().split()).rstrip("?. ")


class KnowledgeStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._ready = False
        self._lock = threading.Lock()

    def _create(self) -> None:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    metadata.create_all(self.engine)
                    self._ready = True

    def _run(self, work: Callable[[sa.Connection], object], write: bool = False):
        try:
            self._create()
            with self.engine.begin() if write else self.engine.connect() as conn:
                return work(conn)
        except ExamplesFull:
            raise
        except Exception as exc:
            raise KnowledgeUnavailable("The application database is unavailable right now.") from exc

    # --- glossary ---------------------------------------------------------------------------------------------

    def glossary(self, database: str) -> list[Entry]:
        q = sa.select(glossary_entry).where(glossary_entry.c.database == database).order_by(glossary_entry.c.position)
        rows = self._run(lambda c: c.execute(q).fetchall())
        return [Entry(r.kind, r.name, r.definition, r.sql) for r in rows]

    def has_glossary(self, database: str) -> bool:
        q = sa.select(glossary_state.c.database).where(glossary_state.c.database == database)
        return self._run(lambda c: c.execute(q).first()) is not None

    def replace_glossary(self, database: str, entries: Sequence[Entry], keep: Callable[[Entry], bool]) -> list[Entry]:
        """Replace the glossary of `database` by the existing entries `keep` accepts, then `entries`, in one
        transaction (a key with an allow-list replaces only what it can see); returns the whole new glossary."""

        def work(conn: sa.Connection) -> list[Entry]:
            where = glossary_entry.c.database == database
            old = conn.execute(sa.select(glossary_entry).where(where).order_by(glossary_entry.c.position)).fetchall()
            kept = [e for e in (Entry(r.kind, r.name, r.definition, r.sql) for r in old) if keep(e)]
            names = {(e.kind, e.name.lower()) for e in entries}
            final = [e for e in kept if (e.kind, e.name.lower()) not in names] + list(entries)
            conn.execute(glossary_entry.delete().where(where))
            if final:
                rows = [
                    {"database": database, "position": i, "kind": e.kind, "name": e.name, "definition": e.definition}
                    | {"sql": e.sql}
                    for i, e in enumerate(final)
                ]
                conn.execute(glossary_entry.insert(), rows)
            now = datetime.now(UTC)
            state = glossary_state.c.database == database
            if not conn.execute(glossary_state.update().where(state).values(updated_at=now)).rowcount:
                conn.execute(glossary_state.insert().values(database=database, updated_at=now))
            return final

        return self._run(work, write=True)

    # --- verified examples ------------------------------------------------------------------------------------

    def examples(self, database: str) -> list[dict]:
        q = sa.select(verified_example).where(verified_example.c.database == database).order_by(verified_example.c.id)
        return [_example(r) for r in self._run(lambda c: c.execute(q).fetchall())]

    def example(self, database: str, example_id: int) -> dict | None:
        where = (verified_example.c.database == database) & (verified_example.c.id == example_id)
        row = self._run(lambda c: c.execute(sa.select(verified_example).where(where)).first())
        return None if row is None else _example(row)

    def add_example(
        self, database: str, question: str, sql: str, tables: Sequence[str], source: str, answer_id: str | None
    ) -> int:
        """Store a verified pair; the same question asked again (case and spacing aside) replaces its SQL."""
        now = datetime.now(UTC)
        values = {"question": question, "sql": sql, "tables": ",".join(sorted(tables)), "source": source}
        values |= {"answer_id": answer_id, "updated_at": now}

        def work(conn: sa.Connection) -> int:
            rows = conn.execute(
                sa.select(verified_example.c.id, verified_example.c.question).where(
                    verified_example.c.database == database
                )
            ).fetchall()
            same = next((r.id for r in rows if _question_key(r.question) == _question_key(question)), None)
            if same is not None:
                conn.execute(verified_example.update().where(verified_example.c.id == same).values(**values))
                return same
            if len(rows) >= MAX_EXAMPLES:
                raise ExamplesFull(
                    f"This database has {len(rows)} verified examples, the most kept: delete some first."
                )
            res = conn.execute(verified_example.insert().values(database=database, created_at=now, **values))
            return res.inserted_primary_key[0]

        return self._run(work, write=True)

    def update_example(self, database: str, example_id: int, question: str, sql: str, tables: Sequence[str]) -> bool:
        where = (verified_example.c.database == database) & (verified_example.c.id == example_id)
        values = {"question": question, "sql": sql, "tables": ",".join(sorted(tables)), "source": "edited"}
        stmt = verified_example.update().where(where).values(updated_at=datetime.now(UTC), **values)
        return bool(self._run(lambda c: c.execute(stmt).rowcount, write=True))

    def forget_approved(self, database: str, answer_id: str) -> None:
        """Remove the pair a 👍 on `answer_id` stored (a later 👎 on the same answer takes it back)."""
        c = verified_example.c
        stmt = verified_example.delete().where(c.database == database, c.answer_id == answer_id, c.source == "approved")
        self._run(lambda conn: conn.execute(stmt), write=True)

    def delete_example(self, database: str, example_id: int) -> bool:
        where = (verified_example.c.database == database) & (verified_example.c.id == example_id)
        return bool(self._run(lambda c: c.execute(verified_example.delete().where(where)).rowcount, write=True))


def _example(row) -> dict:
    d = dict(row._mapping)
    d["tables"] = [t for t in d["tables"].split(",") if t]
    return d
