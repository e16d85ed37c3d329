"""Verified examples: question/SQL pairs a person approved (👍) or corrected (👎 with SQL) for one database.

A pair is checked before it is stored: the question and SQL are size-limited and the SQL passes the guard with the
author's table allow-list (it is what the model will be shown as a right answer, so it must be one a key may run).
For a new question the `k` most similar pairs (BM25 over the questions, `app.knowledge.bm25`) become earlier turns
of the conversation the model continues, most similar last, nearest the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from app.knowledge.bm25 import BM25
from app.nl2sql.prompt import normalize_sql
from app.sql.guard import GuardError, guard_sql

MAX_SQL = 4000


class ExampleError(ValueError):
    """A pair that cannot be stored; the message is for the user."""


@dataclass(frozen=True)
class Checked:
    question: str
    sql: str  # normalized, as the model is shown it
    tables: frozenset[str]


def strip_cap(sql: str, row_limit: int) -> str:
    """The SQL without the LIMIT the guard adds to every query (the UI shows it; the model never wrote it)."""
    return re.sub(rf"\s+LIMIT\s+{row_limit}\s*;?\s*$", "", sql.strip(), flags=re.I)


def check(
    question: str,
    sql: str,
    *,
    dialect: str,
    row_limit: int,
    allowed: Collection[str] | None,
    max_question: int,
) -> Checked:
    question = " ".join((question or "").split())
    if not question:
        raise ExampleError("The question is empty.")
    if len(question) > max_question:
        raise ExampleError(f"The question is too long: {len(question)} characters, at most {max_question}.")
    sql = strip_cap(normalize_sql(sql or ""), row_limit)
    if not sql:
        raise ExampleError("The SQL is empty.")
    if len(sql) > MAX_SQL:
        raise ExampleError(f"The SQL is too long: {len(sql)} characters, at most {MAX_SQL}.")
    try:
        guarded = guard_sql(sql, dialect=dialect, row_limit=row_limit, allowed_tables=allowed)
    except GuardError as exc:
        raise ExampleError(f"The SQL was not saved: {exc.message}") from None
    return Checked(question, sql, guarded.tables)


class ExampleIndex:
    """BM25 over the questions of `pairs` (anything with `question`), built once per set of examples."""

    def __init__(self, questions: Sequence[str]):
        self.bm25 = BM25(questions)
        self.size = len(questions)

    def nearest(self, question: str, k: int, keep: Callable[[int], bool] | None = None) -> list[int]:
        """Indices of the `k` most similar questions that `keep` accepts, least similar first (most similar last,
        next to the question being asked)."""
        if k <= 0:
            return []
        ranked = [i for i, _ in self.bm25.top(question, self.size) if keep is None or keep(i)][:k]
        return ranked[::-1]
