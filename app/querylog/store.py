"""The query log: one row per request in the application's own database (never the user's).

SQLite file by default, any SQLAlchemy URL (PostgreSQL) for several replicas sharing one log. The dashboards and
`/api/dashboard` read success rate, latency percentiles over time and the most frequent error categories from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

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


class QueryLog:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)

    def record(self, entry: LogEntry) -> None:
        row = asdict(entry) | {"created_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            conn.execute(query_log.insert(), row)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(query_log)).scalar_one()

    def recent(self, limit: int = 20) -> list[dict]:
        q = sa.select(query_log).order_by(query_log.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def dashboard(self, hours: int = 24, buckets: int = 24) -> dict:
        """Success rate and p50/p95 latency per time bucket, plus the most frequent error categories."""
        now = datetime.now(UTC)
        since = now - timedelta(hours=hours)
        q = sa.select(query_log.c.created_at, query_log.c.status, query_log.c.category, query_log.c.total_ms).where(
            query_log.c.created_at >= since
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).fetchall()
        width = timedelta(hours=hours) / buckets
        series = []
        for b in range(buckets):
            start = since + b * width
            sel = [r for r in rows if start <= _aware(r.created_at) < start + width]
            ok = [r for r in sel if r.status in ("ok", "empty")]
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
        ok_all = [r for r in rows if r.status in ("ok", "empty")]
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
