"""The query log: one row per request in the application's own database (never the user's).

SQLite file by default, any SQLAlchemy URL (PostgreSQL) for several replicas sharing one log. The dashboards and
`/api/dashboard` read success rate, latency percentiles over time and the most frequent error categories from it;
`/history` reads a key's own rows (`key_name`), and its saved questions live in `saved_question` next to the log.

The log must never cost an answer, and should lose nothing: `record` writes the row before the answer goes out
(so a row exists for every answer, even if the process is killed right after). When the log database is
unavailable the row waits in a bounded in-memory backlog, and the next successful write (or `close` at shutdown)
catches up, keeping each row's original time. Rows that overflow the backlog or are still unwritten at `close`
are counted in `dropped`; `pending` is the backlog. While the database is down, writes are retried at most once
per `retry_interval_s`, so requests do not queue behind a dead connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

log = logging.getLogger("querywise")
# Who asked: set once per request by the auth dependencies (app.api.deps), read when the row is written. A context
# variable, so the service's signatures (shared with the batch API and the benchmarks) need not carry it.
asked_by: ContextVar[str | None] = ContextVar("asked_by", default=None)

metadata = sa.MetaData()
query_log = sa.Table(
    "query_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("source", sa.String(16), nullable=False),  # question | sql (a user-edited query)
    sa.Column("question", sa.Text),
    sa.Column("sql", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),  # ok | empty | refused | error
    sa.Column("category", sa.String(32), nullable=False),  # ok, empty_result, refused, syntax_error, ...
    sa.Column("message", sa.Text),
    sa.Column("row_count", sa.Integer),
    sa.Column("generate_ms", sa.Float),
    sa.Column("execute_ms", sa.Float),
    sa.Column("total_ms", sa.Float, nullable=False),
    sa.Column("model_id", sa.String(200)),
    sa.Column("batch_size", sa.Integer),
    sa.Column("answer_id", sa.String(32), index=True),  # what feedback names (app.knowledge.feedback)
    sa.Column("model_sql", sa.Text),  # the SQL the model wrote, before the guard (a 👍 stores it)
    sa.Column("verdict", sa.String(8)),  # up | down, from the user's feedback; None when none was given
    sa.Column("key_name", sa.String(64)),  # the API key's name; None for rows written before keys were logged
)
sa.Index("ix_query_log_key_name_id", query_log.c.key_name, query_log.c.id)
# Questions a key saved under a name, re-run from /history (question and the SQL that answered it).
saved_question = sa.Table(
    "saved_question",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key_name", sa.String(64), nullable=False),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("question", sa.Text),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("key_name", "name", name="uq_saved_question_key_name"),
)


@dataclass
class LogEntry:
    source: str
    question: str | None
    sql: str | None
    status: str
    category: str
    total_ms: float
    message: str | None = None
    row_count: int | None = None
    generate_ms: float | None = None
    execute_ms: float | None = None
    model_id: str | None = None
    batch_size: int | None = None
    answer_id: str | None = None
    model_sql: str | None = None
    key_name: str | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 1)


class QueryLogUnavailable(Exception):
    """The query log database cannot be read right now."""


class QueryLog:
    def __init__(self, url: str, max_pending: int = 10_000, retry_interval_s: float = 1.0):
        self.max_pending = max_pending
        self.retry_interval_s = retry_interval_s
        self.dropped = 0
        self._pending: deque[tuple[int, dict]] = deque()  # (sequence number, row), oldest first
        self._seq = 0
        self._written_seq = 0  # every row up to this sequence number is in the database (or was dropped)
        self._buf_lock = threading.Lock()  # guards the backlog; held only for list operations
        self._write_lock = threading.Lock()  # one writer at a time: rows queued meanwhile go in its transaction
        self._retry_at = 0.0
        self._failing = False  # the last write failed
        self._ready = False  # table created
        backend = sa.engine.make_url(url).get_backend_name()
        connect_args = {"connect_timeout": 3} if backend.startswith("postgres") else {}
        self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        if backend == "sqlite":
            self._sqlite_path = url.removeprefix("sqlite:///")
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self._sqlite_path = None
        try:
            self._create()
        except Exception as exc:  # serve anyway: rows wait in the backlog until the log database is back
            log.warning("query log unavailable at start (rows are kept in memory meanwhile): %s", _first_line(exc))

    def _create(self) -> None:
        if not self._ready:
            if self._sqlite_path:
                Path(self._sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
            self._ready = True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, entry: LogEntry) -> bool:
        """Write `entry` (and any backlog before it); False when it could not be written now and waits in memory."""
        row = asdict(entry) | {"created_at": datetime.now(UTC)}
        if row["key_name"] is None:
            row["key_name"] = asked_by.get()
        with self._buf_lock:
            self._seq += 1
            seq = self._seq
            self._pending.append((seq, row))
            if len(self._pending) > self.max_pending:
                self._pending.popleft()
                self.dropped += 1
        with self._write_lock:
            if self._written_seq >= seq:
                return True  # another writer took it into its transaction
            if time.monotonic() < self._retry_at:
                return False
            return self._flush()

    def _flush(self) -> bool:
        """Write the whole backlog in one transaction; on failure keep it and retry after `retry_interval_s`."""
        with self._buf_lock:
            batch = list(self._pending)
        if not batch:
            return True
        try:
            self._create()
            with self.engine.begin() as conn:
                conn.execute(query_log.insert(), [row for _, row in batch])
        except Exception as exc:
            self._retry_at = time.monotonic() + self.retry_interval_s
            self._failing = True
            log.warning("query log write failed, %d rows kept in memory: %s", len(batch), _first_line(exc))
            return False
        last = batch[-1][0]
        with self._buf_lock:
            while self._pending and self._pending[0][0] <= last:
                self._pending.popleft()  # rows appended meanwhile stay, in order
            self._written_seq = last
        if self._failing:
            self._failing = False
            log.info("query log is back: %d waiting rows written", len(batch))
        return True

    def close(self) -> None:
        """Write what is still pending (at shutdown); what cannot be written is counted as dropped."""
        with self._write_lock:
            self._retry_at = 0.0
            if not self._flush():
                with self._buf_lock:
                    lost = len(self._pending)
                    self.dropped += lost
                    self._pending.clear()
                log.error("query log: %d rows could not be written and are lost", lost)
        self.engine.dispose()

    def _read(self, query):
        try:
            with self.engine.connect() as conn:
                return conn.execute(query).fetchall()
        except Exception as exc:
            raise QueryLogUnavailable("The query log is unavailable right now.") from exc

    def count(self) -> int:
        return self._read(sa.select(sa.func.count()).select_from(query_log))[0][0]

    def recent(self, limit: int = 20) -> list[dict]:
        return [dict(r._mapping) for r in self._read(sa.select(query_log).order_by(query_log.c.id.desc()).limit(limit))]

    def history(self, key_name: str, limit: int = 50) -> list[dict]:
        """The most recent rows of one key, newest first: a key sees only its own questions."""
        q = sa.select(query_log).where(query_log.c.key_name == key_name).order_by(query_log.c.id.desc()).limit(limit)
        return [dict(r._mapping) for r in self._read(q)]

    def saved(self, key_name: str) -> list[dict]:
        q = sa.select(saved_question).where(saved_question.c.key_name == key_name).order_by(saved_question.c.name)
        return [dict(r._mapping) for r in self._read(q)]

    def save(self, key_name: str, name: str, question: str | None, sql: str) -> None:
        """Save (or overwrite, under the same name) a question of `key_name`."""
        row = {"question": question, "sql": sql, "created_at": datetime.now(UTC)}
        try:
            self._create()
            with self.engine.begin() as conn:
                where = (saved_question.c.key_name == key_name) & (saved_question.c.name == name)
                if not conn.execute(saved_question.update().where(where).values(**row)).rowcount:
                    conn.execute(saved_question.insert().values(key_name=key_name, name=name, **row))
        except Exception as exc:
            raise QueryLogUnavailable("The query log is unavailable right now: the question was not saved.") from exc

    def delete_saved(self, key_name: str, saved_id: int) -> bool:
        try:
            with self.engine.begin() as conn:
                where = (saved_question.c.key_name == key_name) & (saved_question.c.id == saved_id)
                return bool(conn.execute(saved_question.delete().where(where)).rowcount)
        except Exception as exc:
            raise QueryLogUnavailable("The query log is unavailable right now.") from exc

    def dashboard(self, hours: int = 24, buckets: int = 24) -> dict:
        """Success rate and p50/p95 latency per time bucket, plus the most frequent error categories."""
        now = datetime.now(UTC)
        since = now - timedelta(hours=hours)
        q = sa.select(
            query_log.c.created_at,
            query_log.c.status,
            query_log.c.category,
            query_log.c.total_ms,
            query_log.c.verdict,
        ).where(query_log.c.created_at >= since)
        rows = self._read(q)
        width = timedelta(hours=hours) / buckets
        series = []
        for b in range(buckets):
            start = since + b * width
            sel = [r for r in rows if start <= _aware(r.created_at) < start + width]
            ok = [r for r in sel if _succeeded(r)]
            lat = [r.total_ms for r in sel]
            series.append(
                {
                    "start": start.isoformat(timespec="minutes"),
                    "requests": len(sel),
                    "success_rate": round(len(ok) / len(sel), 3) if sel else None,
                    "p50_ms": _percentile(lat, 0.5),
                    "p95_ms": _percentile(lat, 0.95),
                }
            )
        errors: dict[str, int] = {}
        for r in rows:
            if not _succeeded(r):
                category = "marked_wrong" if r.status == "ok" and r.verdict == "down" else r.category
                errors[category] = errors.get(category, 0) + 1
        lat_all = [r.total_ms for r in rows]
        ok_all = [r for r in rows if _succeeded(r)]
        return {
            "window_hours": hours,
            "requests": len(rows),
            "success_rate": round(len(ok_all) / len(rows), 3) if rows else None,
            "p50_ms": _percentile(lat_all, 0.5),
            "p95_ms": _percentile(lat_all, 0.95),
            "series": series,
            "top_errors": sorted(errors.items(), key=lambda kv: -kv[1])[:8],
        }


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added since a log was created (create_all makes missing tables, never missing columns)."""
    present = {c["name"] for c in sa.inspect(engine).get_columns("query_log")}
    missing = [c for c in query_log.columns if c.name not in present]
    with engine.begin() as conn:
        for column in missing:  # nullable and without defaults: the same statement works on SQLite and PostgreSQL
            conn.execute(
                sa.text(f"ALTER TABLE query_log ADD COLUMN {column.name} {column.type.compile(engine.dialect)}")
            )
        for index in query_log.indexes:
            index.create(conn, checkfirst=True)


def _succeeded(row) -> bool:
    """An answer that ran and returned something (empty and all-NULL results do not), unless its user marked it 👎 or
    it joins on columns no key links (category `unkeyed_join`: usually wrong, and the user was told to check it)."""
    return row.status == "ok" and row.category != "unkeyed_join" and row.verdict != "down"


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL: readers (dashboards) never block the writer; synchronous=NORMAL in WAL survives a process crash or kill,
    # which is what a query log needs, at a fraction of the cost of an fsync per answer.
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")
    dbapi_conn.execute("PRAGMA busy_timeout=5000")
