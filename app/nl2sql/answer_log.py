"""Every answer counted and logged: request and latency metrics, and a query-log row derived from the Outcome.

A log write that fails never costs the answer: the row waits in the log's backlog (or is lost), counted on /metrics.
"""

from __future__ import annotations

import logging

from anyio import to_thread

from app.core.metrics import Metrics
from app.nl2sql.outcome import Outcome, log_entry
from app.querylog.store import QueryLog

log = logging.getLogger("querywise")


class AnswerLog:
    def __init__(self, querylog: QueryLog, metrics: Metrics):
        self.querylog, self.metrics = querylog, metrics

    async def record(self, out: Outcome, source: str) -> None:
        """`source`: "question" (the model wrote the SQL) or "sql" (a user did)."""
        self.metrics.requests.labels(source, out.status, out.category).inc()
        self.metrics.latency.labels("total").observe(out.total_ms / 1000)
        if out.execute_ms is not None:
            self.metrics.latency.labels("execute").observe(out.execute_ms / 1000)
        try:
            written = await to_thread.run_sync(self.querylog.record, log_entry(out, source))
        except Exception:  # the answer matters more than its log row
            written = False
            log.exception("query log write failed")
        if not written:
            self.metrics.log_failures.inc()
