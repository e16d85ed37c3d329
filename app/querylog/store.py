"""The query log: one row per request in the application's own database (never the user's).

SQLite file by default, any SQLAlchemy URL (PostgreSQL) for several replicas sharing one log. The dashboards and
`/api/dashboard` read success rate, latency percentiles over time and the most frequent error categories from it.

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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

log = logging.getLogger("querywise")

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
            self._ready = True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, entry: LogEntry) -> bool:
        """Write `entry` (and any backlog before it); False when it could not be written now and waits in memory."""
        row = asdict(entry) | {"created_at": datetime.now(UTC)}
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

    def dashboard(self, hours: int = 24, buckets: int = 24) -> dict:
        """Success rate and p50/p95 latency per time bucket, plus the most frequent error categories."""
        now = datetime.now(UTC)
        since = now - timedelta(hours=hours)
        q = sa.select(query_log.c.created_at, query_log.c.status, query_log.c.category, query_log.c.total_ms).where(
            query_log.c.created_at >= since
        )
        rows = self._read(q)
        width = timedelta(hours=hours) / buckets
        series = []
        for b in range(buckets):
            start = since + b * width
            sel = [r for r in rows if start <= _aware(r.created_at) < start + width]
            ok = [r for r in sel if r.status == "ok"]
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
            if r.status not in ("ok",):
                errors[r.category] = errors.get(r.category, 0) + 1
        lat_all = [r.total_ms for r in rows]
        # a success is an answer that ran and returned something: empty and all-NULL results are not
        ok_all = [r for r in rows if r.status == "ok"]
        return {
            "window_hours": hours,
            "requests": len(rows),
            "success_rate": round(len(ok_all) / len(rows), 3) if rows else None,
            "p50_ms": _percentile(lat_all, 0.5),
            "p95_ms": _percentile(lat_all, 0.95),
            "series": series,
            "top_errors": sorted(errors.items(), key=lambda kv: -kv[1])[:8],
        }


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
