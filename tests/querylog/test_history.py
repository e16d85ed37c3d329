"""A key's history and saved questions in the query log, the same on SQLite and PostgreSQL; a log created before
keys were recorded gets the new column in place."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from app.querylog.store import LogEntry, QueryLog, asked_by, query_log


@pytest.fixture(params=["sqlite", "postgres"])
def log_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.sqlite'}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a clean log per test on the shared server
        conn.execute(sa.text("DROP TABLE IF EXISTS query_log, saved_question"))
    engine.dispose()
    return url


def _entry(sql: str, key: str | None = None) -> LogEntry:
    return LogEntry(source="sql", question=None, sql=sql, status="ok", category="ok", total_ms=1.0, key_name=key)


def test_a_key_sees_only_its_own_history(log_url):
    log = QueryLog(log_url)
    log.record(_entry("SELECT 1", "alice"))
    log.record(_entry("SELECT 2", "bob"))
    token = asked_by.set("alice")  # what the auth dependency sets for each request
    try:
        log.record(_entry("SELECT 3"))
    finally:
        asked_by.reset(token)
    assert [r["sql"] for r in log.history("alice")] == ["SELECT 3", "SELECT 1"]
    assert [r["sql"] for r in log.history("bob")] == ["SELECT 2"]
    assert log.history("carol") == []


def test_saved_questions_per_key_overwrite_by_name_and_delete(log_url):
    log = QueryLog(log_url)
    log.save("alice", "Top customers", "Who buys most?", "SELECT 1")
    log.save("alice", "Top customers", "Who buys most now?", "SELECT 2")  # same name: replaced
    log.save("bob", "Top customers", None, "SELECT 3")
    mine = log.saved("alice")
    assert [(s["name"], s["question"], s["sql"]) for s in mine] == [("Top customers", "Who buys most now?", "SELECT 2")]
    assert log.delete_saved("bob", mine[0]["id"]) is False  # not bob's to delete
    assert log.delete_saved("alice", mine[0]["id"]) is True
    assert log.saved("alice") == [] and len(log.saved("bob")) == 1


ORIGINAL = ("id", "created_at", "source", "question", "sql", "status", "category", "message", "row_count",
            "generate_ms", "execute_ms", "total_ms", "model_id", "batch_size")  # fmt: skip


def test_a_log_from_before_keys_gets_the_column(log_url):
    old = sa.Table("query_log", sa.MetaData(), *[c._copy() for c in query_log.columns if c.name in ORIGINAL])
    engine = sa.create_engine(log_url)
    with engine.begin() as conn:  # the table as it was: no key_name
        old.create(conn)
        conn.execute(old.insert().values(created_at=datetime.now(UTC), source="sql", sql="SELECT 0", status="ok",
                                         category="ok", total_ms=1.0))  # fmt: skip
    engine.dispose()
    log = QueryLog(log_url)
    assert log.record(_entry("SELECT 1", "alice"))
    assert [r["sql"] for r in log.history("alice")] == ["SELECT 1"] and log.count() == 2
