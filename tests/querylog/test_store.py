"""The query log on its own: concurrent writers all land, an unavailable log database keeps rows in a bounded
backlog that catches up in order, and what cannot be kept is counted."""

import threading
from concurrent.futures import ThreadPoolExecutor

from app.querylog.store import LogEntry, QueryLog


def _entry(i: int) -> LogEntry:
    return LogEntry(source="sql", question=None, sql=f"SELECT {i}", status="ok", category="ok", total_ms=1.0)


def test_concurrent_writers_all_land(tmp_path):
    log = QueryLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    with ThreadPoolExecutor(16) as pool:
        written = list(pool.map(lambda i: log.record(_entry(i)), range(300)))
    assert all(written)
    assert log.count() == 300 and log.pending == 0
    assert {r["sql"] for r in log.recent(300)} == {f"SELECT {i}" for i in range(300)}


def test_backlog_catches_up_in_order_and_overflow_is_counted(tmp_path):
    blocker = tmp_path / "dir"
    blocker.write_text("not a directory")
    log = QueryLog(f"sqlite:///{blocker / 'log.sqlite'}", max_pending=5, retry_interval_s=0)
    assert [log.record(_entry(i)) for i in range(7)] == [False] * 7
    assert log.pending == 5 and log.dropped == 2  # the two oldest gave way
    blocker.unlink()
    assert log.record(_entry(7)) is True  # the backlog is full: one more old row gives way to it
    assert log.pending == 0 and log.dropped == 3 and log.count() == 5
    assert [r["sql"] for r in reversed(log.recent(10))] == [f"SELECT {i}" for i in range(3, 8)]


def test_close_writes_the_backlog_or_counts_it_lost(tmp_path):
    blocker = tmp_path / "dir"
    blocker.write_text("not a directory")
    log = QueryLog(f"sqlite:///{blocker / 'log.sqlite'}", retry_interval_s=60)
    log.record(_entry(1))
    blocker.unlink()
    assert log.record(_entry(2)) is False  # within the retry interval: no write attempt, no waiting
    log.close()
    assert log.pending == 0 and log.dropped == 0
    assert QueryLog(f"sqlite:///{blocker / 'log.sqlite'}").count() == 2

    gone = tmp_path / "gone"
    gone.write_text("not a directory")
    lost = QueryLog(f"sqlite:///{gone / 'log.sqlite'}")
    lost.record(_entry(1))
    lost.close()
    assert lost.dropped == 1 and lost.pending == 0


def test_a_slow_log_does_not_serialize_readers(tmp_path):
    """WAL: a dashboard read while a write transaction is open neither fails nor waits for it."""
    log = QueryLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    log.record(_entry(0))
    started, release = threading.Event(), threading.Event()

    def hold_write():
        with log.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO query_log (created_at, source, status, category, total_ms) "
                                 "VALUES ('2026-01-01', 'sql', 'ok', 'ok', 1)")  # fmt: skip
            started.set()
            release.wait(5)

    t = threading.Thread(target=hold_write)
    t.start()
    started.wait(5)
    try:
        assert log.count() == 1  # the open write is invisible, and the read did not block
    finally:
        release.set()
        t.join()
    assert log.count() == 2
