"""The business glossary of one database: terms with a plain-words definition and optionally a SQL expression
(`revenue = SUM(order_items.quantity * order_items.unit_price * (1 - order_items.discount))`), and descriptions of
columns (`orders.status`: what its values mean).

One document shape for the API (JSON), for import/export (YAML) and for the demo's shipped file:

    terms:
      - term: revenue
        definition: Money from sales, after each line's discount.
        sql: SUM(order_items.quantity * order_items.unit_price * (1 - order_items.discount))
    columns:
      - column: orders.status
        description: processing, shipped, delivered, cancelled or returned

In the prompt the entries are one SQL comment line each, under the schema in the first user turn
(`-- revenue = SUM(...): Money from sales, ...`). All of them while they fit `glossary_token_budget`; past it, the
entries the question is about, ranked with BM25. A SQL fragment is only ever shown to the model: it runs only as
part of a generated query, and that query passes the guard like any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import sqlglot
import yaml

from app.knowledge.bm25 import BM25

MAX_ENTRIES = 300
MAX_TERM = 80
MAX_TEXT = 500
MAX_SQL = 1000
_COLUMN = re.compile(r"^([A-Za-z_][A-Za-z0-9_ ]*)\.([A-Za-z_][A-Za-z0-9_ ]*)$")


class GlossaryError(ValueError):
    """A glossary document that cannot be stored; the message says what to fix."""


@dataclass(frozen=True)
class Entry:
    kind: str  # "term" or "column"
    name: str  # the term, or `table.column`
    definition: str
    sql: str | None = None

    @property
    def table(self) -> str | None:
        return self.name.split(".", 1)[0] if self.kind == "column" else None

    def as_dict(self) -> dict:
        if self.kind == "column":
            return {"column": self.name, "description": self.definition}
        return {"term": self.name, "definition": self.definition} | ({"sql": self.sql} if self.sql else {})

    def line(self) -> str:
        """The compact prompt form: one SQL comment line."""
        head = f"{self.name} = {self.sql}" if self.sql else self.name
        return f"-- {head}: {self.definition}"


def _one_line(value: object, field: str, where: str, limit: int, required: bool = True) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise GlossaryError(f"{where}: `{field}` is required.")
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise GlossaryError(f"{where}: `{field}` must be text.")
    text = re.sub(r"\s+", " ", str(value)).strip()  # one line: the prompt has one line per entry
    if len(text) > limit:
        raise GlossaryError(f"{where}: `{field}` is {len(text)} characters long; at most {limit}.")
    return text


def _check_sql(sql: str, where: str) -> None:
    """The fragment must parse as one SQL expression (it is never run on its own, only read by the model)."""
    try:
        parsed = sqlglot.parse(f"SELECT {sql}", read="sqlite")
    except sqlglot.errors.SqlglotError:
        parsed = []
    if len(parsed) != 1 or not isinstance(parsed[0], sqlglot.exp.Select) or parsed[0].args.get("from"):
        raise GlossaryError(f"{where}: `sql` must be one SQL expression, e.g. SUM(order_items.quantity).")


def parse(doc: object) -> list[Entry]:
    """Entries from a glossary document (a parsed YAML or JSON mapping); GlossaryError says what is wrong."""
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"terms", "columns"}:
        raise GlossaryError("A glossary is a mapping with `terms` and/or `columns` lists.")
    terms, columns = doc.get("terms", []), doc.get("columns", [])
    if not isinstance(terms, list) or not isinstance(columns, list):  # `terms: 0` is not an empty glossary
        raise GlossaryError("`terms` and `columns` must be lists.")
    if len(terms) + len(columns) > MAX_ENTRIES:
        raise GlossaryError(f"At most {MAX_ENTRIES} glossary entries; this one has {len(terms) + len(columns)}.")
    out: list[Entry] = []
    for i, t in enumerate(terms):
        where = f"terms[{i}]"
        if not isinstance(t, dict) or set(t) - {"term", "definition", "sql"}:
            raise GlossaryError(f"{where}: an entry has `term`, `definition` and optionally `sql`.")
        name = _one_line(t.get("term"), "term", where, MAX_TERM)
        sql = _one_line(t.get("sql"), "sql", where, MAX_SQL, required=False)
        if sql:
            sql = sql.rstrip(";").strip()
            _check_sql(sql, where)
        out.append(Entry("term", name, _one_line(t.get("definition"), "definition", where, MAX_TEXT), sql))
    for i, c in enumerate(columns):
        where = f"columns[{i}]"
        if not isinstance(c, dict) or set(c) - {"column", "description"}:
            raise GlossaryError(f"{where}: an entry has `column` (table.column) and `description`.")
        name = _one_line(c.get("column"), "column", where, MAX_TERM)
        if not _COLUMN.match(name):
            raise GlossaryError(f"{where}: `column` is written table.column, e.g. orders.status.")
        out.append(Entry("column", name, _one_line(c.get("description"), "description", where, MAX_TEXT)))
    seen: set[tuple[str, str]] = set()
    for e in out:
        key = (e.kind, e.name.lower())
        if key in seen:
            raise GlossaryError(f"`{e.name}` is defined twice.")
        seen.add(key)
    return out


def parse_yaml(text: str, allow_empty: bool = True) -> list[Entry]:
    """Entries from YAML (or JSON) text. `allow_empty=False` (the API) refuses an empty document: replacing the
    glossary with nothing must be said explicitly (`{"terms": [], "columns": []}`), not by an empty upload."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise GlossaryError(f"The glossary is not valid YAML{at}.") from None
    if doc is None and not allow_empty:
        raise GlossaryError('The glossary document is empty; to clear the glossary send {"terms": [], "columns": []}.')
    return parse(doc)


def document(entries: Iterable[Entry]) -> dict:
    entries = list(entries)
    return {
        "terms": [e.as_dict() for e in entries if e.kind == "term"],
        "columns": [e.as_dict() for e in entries if e.kind == "column"],
    }


def to_yaml(entries: Iterable[Entry]) -> str:
    return yaml.safe_dump(document(entries), sort_keys=False, allow_unicode=True, width=120)


def check_against(entries: Sequence[Entry], tables: dict[str, set[str]]) -> None:
    """Column descriptions must name a column that exists (`tables`: table -> column names, lowercased)."""
    for e in entries:
        if e.kind == "column":
            table, column = (p.lower() for p in e.name.split(".", 1))
            if column not in tables.get(table, set()):
                raise GlossaryError(f"`{e.name}`: the database has no such column.")


def tables_of(entry: Entry, table_names: Collection[str]) -> frozenset[str]:
    """The tables an entry is about: a column's table, or the tables its SQL or definition names as words."""
    if entry.kind == "column":
        return frozenset({entry.table.lower()})
    text = f"{entry.sql or ''} {entry.definition} {entry.name}".lower()
    words = set(re.findall(r"[a-z0-9_]+", text))
    return frozenset(t.lower() for t in table_names if t.lower() in words)


def visible(entries: Sequence[Entry], allowed: Collection[str] | None, table_names: Collection[str]) -> list[Entry]:
    """The entries a key with allow-list `allowed` may see: those about its tables only (None: every entry)."""
    if allowed is None:
        return list(entries)
    keep = {t.lower() for t in allowed}
    return [e for e in entries if tables_of(e, table_names) <= keep]


def format_entries(entries: Sequence[Entry]) -> str:
    return "\n".join(e.line() for e in entries)


def select(entries: Sequence[Entry], question: str, budget: int, count_tokens: Callable[[str], int]) -> list[Entry]:
    """All entries while they fit `budget` tokens; past it, the ones most relevant to `question` that fit.

    Relevance is BM25 over each entry's name and definition; entries sharing no word with the question are left
    out. The chosen entries keep their glossary order, so the same glossary always reads the same way.
    """
    if not entries or count_tokens(format_entries(entries)) <= budget:
        return list(entries)
    index = BM25([f"{e.name} {e.name} {e.definition}" for e in entries])  # the name twice: it is what is asked
    chosen: set[int] = set()
    used = 0
    for i, _ in index.top(question, len(entries)):
        cost = count_tokens(entries[i].line()) + 1
        if used + cost <= budget:
            chosen.add(i)
            used += cost
    return [e for i, e in enumerate(entries) if i in chosen]
