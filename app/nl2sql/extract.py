"""Pull the SQL out of what the model wrote.

The fine-tuned model answers with bare SQL; the few-shot base model sometimes wraps it in a ```sql fence or
prose. We take the fenced block if there is one, else the text from the first SELECT/WITH, and stop at the
first statement end or blank line. Whatever comes out still goes through the guard.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.nl2sql.constrain import SchemaNames
    from app.nl2sql.joins import KeyLinks

_FENCE = re.compile(r"```(?:sql)?\s*(.*?)(?:```|$)", re.S | re.I)
_START = re.compile(r"\b(SELECT|WITH)\b", re.I)


def _cut_at_statement_end(sql: str) -> str:
    quote = None
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif ch == ";":
            return sql[:i]
    return sql


def extract_sql(text: str) -> str:
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    m = _START.search(text)
    if not m:
        return ""
    sql = text[m.start() :].split("\n\n", 1)[0]
    return _cut_at_statement_end(sql).strip()


def sql_of(text: str, names: SchemaNames | None, links: KeyLinks | None = None, dialect: str = "sqlite") -> str:
    """The SQL of the model's answer; with the schema's names at hand, those that need quoting quoted where it wrote
    them bare (`SchemaNames.quote_bare`: `JOIN Order Details` → `JOIN "Order Details"`); with its keys at hand, a
    table it used but never read joined in, or a misspelt alias mended (`app.nl2sql.repair`)."""
    sql = extract_sql(text)
    sql = names.quote_bare(sql) if names is not None else sql
    if links is not None:
        from app.nl2sql.repair import repair_missing_tables

        sql = repair_missing_tables(sql, links, dialect)
    return sql
