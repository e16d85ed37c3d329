"""👍/👎 on an answer, from the UI or `POST /feedback`: the verdict is written on the answer's query-log row (the
dashboards do not count a 👎 answer as a success), and the pair becomes a verified example: a 👍 stores the SQL the
model wrote, a 👎 with SQL stores the correction. Either SQL passes the guard, with the author's allow-list, first.

An answer is named by its `answer_id`, a random 128-bit id returned with it: knowing it is the proof of having seen
the answer.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa

from app.knowledge.examples import ExampleError, check, strip_cap
from app.knowledge.parts import KnowledgeParts
from app.knowledge.store import ExamplesFull, KnowledgeUnavailable
from app.nl2sql.prompt import normalize_sql
from app.querylog.store import query_log
from app.sql.guard import GuardError, guard_sql

VERDICTS = ("up", "down")
_ANSWER_ID = re.compile(r"^[0-9a-f]{32}$")


class FeedbackError(ValueError):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code, self.message = status_code, message


@dataclass(frozen=True)
class FeedbackResult:
    answer_id: str
    verdict: str
    example_id: int | None
    message: str


def _answer(kb: KnowledgeParts, answer_id: str):
    q = sa.select(
        query_log.c.question, query_log.c.sql, query_log.c.model_sql, query_log.c.status, query_log.c.category
    ).where(query_log.c.answer_id == answer_id, query_log.c.source == "question")
    try:
        with kb.querylog.engine.connect() as conn:
            return conn.execute(q).first()
    except Exception as exc:
        raise KnowledgeUnavailable("The application database is unavailable right now.") from exc


def _canonical(sql: str, dialect: str, row_limit: int) -> str:
    """One spelling per query: the guard's output (the UI shows the SQL re-formatted, e.g. on several lines)."""
    try:
        return guard_sql(sql, dialect=dialect, row_limit=row_limit).sql
    except GuardError:
        return strip_cap(normalize_sql(sql), row_limit)


def is_correction(answer_sql: str | None, model_sql: str | None, sql: str | None, dialect: str, row_limit: int) -> bool:
    """Whether `sql` (e.g. the UI's editor, sent with every 👎) differs from what the answer showed."""
    if not sql or not sql.strip():
        return False
    same = {_canonical(s, dialect, row_limit) for s in (answer_sql, model_sql) if s}
    return _canonical(sql, dialect, row_limit) not in same


def give(
    kb: KnowledgeParts, answer_id: str, verdict: str, sql: str | None, allowed: Collection[str] | None
) -> FeedbackResult:
    """Record a verdict (and a correction); FeedbackError (4xx) or KnowledgeUnavailable (503) when it cannot."""
    answer_id = (answer_id or "").strip().lower()
    if not _ANSWER_ID.match(answer_id):
        raise FeedbackError(422, "answer_id: expected the 32-character id returned with the answer.")
    verdict = (verdict or "").strip()
    if verdict not in VERDICTS:
        raise FeedbackError(422, "verdict: expected 'up' or 'down'.")
    row = _answer(kb, answer_id)
    if row is None:
        raise FeedbackError(404, "No answer has this id (it may not be written to the query log yet).")
    store, knowledge = kb.knowledge.store, kb.knowledge
    limits = {
        "dialect": kb.dialect,
        "row_limit": kb.row_limit,
        "allowed": allowed,
        "max_question": kb.question_max_chars,
    }
    changed = is_correction(row.sql, row.model_sql, sql, kb.dialect, kb.row_limit)
    correction = sql if changed else None
    if verdict == "up" and correction:
        raise FeedbackError(422, "Corrected SQL goes with a 👎: a 👍 approves the SQL the answer showed.")
    example_id, message = None, "Thanks: marked wrong. It no longer counts as a success."
    try:
        if verdict == "up":
            if row.status not in ("ok", "empty") or not (row.model_sql or row.sql):
                raise FeedbackError(422, "Only an answer whose SQL ran can be approved; give 👎 with the right SQL.")
            pair = check(row.question, row.model_sql or row.sql, **limits)
            example_id = store.add_example(
                knowledge.database, pair.question, pair.sql, pair.tables, "approved", answer_id
            )
            message = "Thanks: saved as a verified example."
        elif correction:
            pair = check(row.question, correction, **limits)
            example_id = store.add_example(
                knowledge.database, pair.question, pair.sql, pair.tables, "corrected", answer_id
            )
            message = "Thanks: your SQL is saved as the verified answer to this question."
    except (ExampleError, ExamplesFull) as exc:
        raise FeedbackError(422, str(exc)) from None
    try:
        with kb.querylog.engine.begin() as conn:
            conn.execute(query_log.update().where(query_log.c.answer_id == answer_id).values(verdict=verdict))
    except Exception as exc:
        raise KnowledgeUnavailable("The application database is unavailable right now.") from exc
    if verdict == "down" and not correction:  # a 👍 taken back: its pair is no longer verified
        store.forget_approved(knowledge.database, answer_id)
    knowledge.invalidate()
    return FeedbackResult(answer_id, verdict, example_id, message)
