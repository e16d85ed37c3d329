"""The result vocabulary: what became of a question or a user's SQL (`Outcome`), its `Status` and `Category`.

The API response (`app.api.routes.query.QueryResponse`, the public fields) and the query-log row (`log_entry`) are
both derived from one Outcome, so the three never disagree on what an answer was.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum

from app.nl2sql.extract import extract_sql
from app.querylog.store import LogEntry


class Status(StrEnum):
    OK = "ok"  # ran and returned something
    EMPTY = "empty"  # ran and found nothing: not a success, and the user is told so
    REFUSED = "refused"  # the guard, the allow-list or the intent check would not run it
    ERROR = "error"  # no SQL, SQL that does not run, or the database failing


class Category(StrEnum):
    """Why an answer has its status (the guard's and the executor's error categories included)."""

    OK = "ok"
    EMPTY_RESULT = "empty_result"
    NULL_RESULT = "null_result"
    UNMATCHED_VALUE = "unmatched_value"
    UNKEYED_JOIN = "unkeyed_join"  # rows, from a join on columns that no key links: usually a wrong answer
    REFUSED = "refused"
    WRITE_REQUEST = "write_request"
    NO_SQL = "no_sql"
    SYNTAX_ERROR = "syntax_error"
    UNKNOWN_TABLE = "unknown_table"
    UNKNOWN_COLUMN = "unknown_column"
    TIMEOUT = "timeout"
    EXECUTION_ERROR = "execution_error"
    DB_UNAVAILABLE = "db_unavailable"
    CANCELLED = "cancelled"


def _internal() -> dict:
    return {"internal": True}  # kept off the API response


@dataclass
class Outcome:
    status: Status
    category: Category
    question: str | None = None
    sql: str | None = None  # what ran (after the guard), or the refused SQL
    generated_sql: str | None = field(default=None, metadata=_internal())  # the model's raw text
    message: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False
    generate_ms: float | None = None
    execute_ms: float | None = None
    total_ms: float = 0.0
    model_id: str | None = None
    batch_size: int | None = None
    candidates: int | None = None  # sampled candidates drawn by execution-guided decoding (None: greedy sufficed)
    answer_id: str | None = None  # names this answer in feedback (questions only)
    verified_examples: int = 0  # verified question/SQL pairs shown to the model as earlier turns
    glossary_terms: list[str] = field(default_factory=list)  # glossary entries shown to the model
    unkeyed: list[str] = field(default_factory=list, metadata=_internal())  # joins no key links (app.nl2sql.joins)

    def __post_init__(self) -> None:  # a category outside the vocabulary fails here, in tests, not in a dashboard
        self.status, self.category = Status(self.status), Category(self.category)

    def public(self) -> dict:
        """The fields an API client gets."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("internal")}

    @property
    def ran(self) -> bool:
        """The SQL ran (with or without rows)."""
        return self.status in (Status.OK, Status.EMPTY) and bool(self.sql)


PUBLIC_FIELDS = tuple(f.name for f in fields(Outcome) if not f.metadata.get("internal"))

# An answer with nothing in it is not a success, and the user is told so in words (the SQL may be wrong).
EMPTY_MESSAGES = {
    Category.EMPTY_RESULT: "No rows matched. The question may name a value that is not in the data, or the SQL "
    "below may not mean what was asked: check it.",
    Category.NULL_RESULT: "The query ran, but every value it returned is empty (NULL): nothing matched. Check the SQL "
    "below.",
}


def log_entry(out: Outcome, source: str) -> LogEntry:
    """The query-log row of an answer (`source`: "question" or "sql")."""
    return LogEntry(
        source=source,
        question=out.question,
        sql=out.sql,
        status=str(out.status),
        category=str(out.category),
        message=out.message,
        row_count=out.row_count,
        generate_ms=out.generate_ms,
        execute_ms=out.execute_ms,
        total_ms=out.total_ms,
        model_id=out.model_id,
        batch_size=out.batch_size,
        answer_id=out.answer_id,
        model_sql=extract_sql(out.generated_sql) if out.generated_sql else None,
    )
