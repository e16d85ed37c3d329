"""Faults with the real app, the real model and a real PostgreSQL server that the tests stop and start:

- the user's database goes away mid-run: 503 with a clear message (never 500), `/readyz` 503 with
  `database: false`, and answers again once it is back, without restarting the app;
- a runaway query hits the statement timeout (`category: timeout`) and is cancelled on the server;
- the query log database goes away: questions are still answered, the loss is counted on /metrics and the log
  catches up when it returns (on the next write, or at shutdown).
"""

import time

import psycopg
import pytest
import sqlalchemy as sa
from pg_cluster import PgCluster
from tests_support import app_client

from app.db import demo

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUNAWAY = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 1000000000) SELECT COUNT(*) FROM t"
COUNT_SQL = {"sql": "SELECT COUNT(*) AS n FROM customers"}
QUESTION = {"question": "How many customers are there?"}


@pytest.fixture(scope="module")
def pg():
    """A PostgreSQL server of this module's own (stopping it must not disturb other tests), with the demo data."""
    cluster = PgCluster().init()
    try:
        cluster.create_database("shop")
        engine = sa.create_engine(cluster.url("shop"))
        demo.load(engine)
        engine.dispose()
        yield cluster
    finally:
        cluster.destroy()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _assert_clean_503(r, *words: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    detail = r.json()["detail"]
    assert all(w in detail.lower() for w in words), detail
    assert "Traceback" not in r.text and "127.0.0.1" not in detail and "postgres" not in detail.lower()


async def test_database_down_mid_run_answers_503_and_recovers_without_restart(pg, settings_for, generator):
    settings = settings_for(pg.url("shop"), auth_disabled=True, max_new_tokens=48)
    async with app_client(settings, generator) as c:
        assert (await c.post("/sql", json=COUNT_SQL)).json()["status"] == "ok"
        assert (await c.get("/readyz")).status_code == 200
        pg.stop()
        try:
            _assert_clean_503(await c.post("/sql", json=COUNT_SQL), "not reachable")
            _assert_clean_503(await c.post("/query", json=QUESTION), "not reachable")
            ready = await c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] is False and ready.json()["ready"] is False
        finally:
            pg.start()
        ok = await c.post("/sql", json=COUNT_SQL)
        assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] is True
        q = await c.post("/query", json=QUESTION)
        assert q.status_code == 200 and q.json()["status"] in ("ok", "empty", "error"), q.text
        assert q.json()["category"] != "db_unavailable"
        metrics = (await c.get("/metrics")).text
        assert 'category="db_unavailable"' in metrics  # the outage is visible afterwards too


async def test_app_started_while_database_down_serves_once_it_is_up(pg, settings_for, generator):
    settings = settings_for(pg.url("shop"), auth_disabled=True, max_new_tokens=48)
    pg.stop()
    try:
        async with app_client(settings, generator) as c:
            # No schema yet: the question cannot even be put to the model; a clear 503, not a 500.
            _assert_clean_503(await c.post("/query", json=QUESTION), "not reachable")
            assert (await c.get("/api/schema")).status_code == 503
            assert (await c.get("/readyz")).json()["database"] is False
            pg.start()
            q = await c.post("/query", json=QUESTION)
            assert q.status_code == 200, q.text
            assert (await c.get("/api/schema")).status_code == 200
    finally:
        if not pg.running:
            pg.start()


def _active_backends(pg: PgCluster, needle: str) -> list[tuple]:
    with psycopg.connect(pg.dsn("shop"), autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, state, query FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE %s",
            (f"%{needle}%",),
        ).fetchall()


async def test_runaway_query_times_out_and_is_cancelled_on_the_server(pg, settings_for, generator):
    settings = settings_for(pg.url("shop"), auth_disabled=True, statement_timeout_s=1)
    async with app_client(settings, generator) as c:
        r = await c.post("/sql", json={"sql": RUNAWAY})
        body = r.json()
        # The query never ends by itself: "timeout" means the deadline stopped it.
        assert r.status_code == 200 and body["status"] == "error" and body["category"] == "timeout", body
        assert "1 s" in body["message"]
        assert _active_backends(pg, "RECURSIVE") == []  # the server stopped it: nothing runs on, nothing idles open
        # The connection went back to the pool in a usable state.
        assert (await c.post("/sql", json=COUNT_SQL)).json()["status"] == "ok"


async def test_runaway_query_times_out_on_sqlite(settings_for, demo_db, generator):
    settings = settings_for(f"sqlite:///{demo_db}", auth_disabled=True, statement_timeout_s=1)
    async with app_client(settings, generator) as c:
        body = (await c.post("/sql", json={"sql": RUNAWAY})).json()
        assert body["category"] == "timeout", body
        assert c.app.state.service.executor.engine.pool.checkedout() == 0  # nothing runs on after the answer
        assert (await c.post("/sql", json=COUNT_SQL)).json()["status"] == "ok"


def _log_rows(pg: PgCluster, database: str) -> list[tuple]:
    with psycopg.connect(pg.dsn(database)) as conn:
        return conn.execute("SELECT id, source, sql, created_at FROM query_log ORDER BY id").fetchall()


async def test_querylog_down_answers_flow_loss_is_counted_and_log_catches_up(pg, settings_for, demo_db, generator):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE qlog")
    settings = settings_for(f"sqlite:///{demo_db}", auth_disabled=True, max_new_tokens=48)
    settings = settings.model_copy(update={"querylog_url": pg.url("qlog")})
    async with app_client(settings, generator) as c:
        for i in range(3):
            assert (await c.post("/sql", json={"sql": f"SELECT {i} AS before_outage"})).status_code == 200
        pg.stop()
        try:
            for i in range(5):
                r = await c.post("/sql", json={"sql": f"SELECT {i} AS during_outage"})
                assert r.status_code == 200 and r.json()["status"] == "ok", r.text
            q = await c.post("/query", json=QUESTION)
            assert q.status_code == 200, q.text
            metrics = (await c.get("/metrics")).text
            assert _metric(metrics, "querywise_querylog_failures_total") >= 1
            assert _metric(metrics, "querywise_querylog_pending") == 6
            ready = await c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["querylog_pending"] == 6  # not a readiness failure
            dash = await c.get("/api/dashboard")
            assert dash.status_code == 503 and "query log" in dash.json()["detail"].lower()
            page = await c.get("/dashboards")  # the UI says so too, instead of a 500
            assert page.status_code == 503 and "dashboards-unavailable" in page.text
        finally:
            pg.start()
        # Back: rows are kept in memory until the shutdown below writes them (no request needed).
        assert len(_log_rows(pg, "qlog")) == 3
    rows = _log_rows(pg, "qlog")
    assert len(rows) == 9
    assert [r[1] for r in rows] == ["sql"] * 8 + ["question"]
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)  # original times, original order
    assert "during_outage" in rows[3][2]


async def test_querylog_unavailable_at_start_then_back_catches_up_on_next_write(
    settings_for, demo_db, generator, tmp_path
):
    blocker = tmp_path / "logdir"
    blocker.write_text("a file where the log's directory should be")
    settings = settings_for(f"sqlite:///{demo_db}", auth_disabled=True)
    settings = settings.model_copy(update={"querylog_url": f"sqlite:///{blocker / 'querylog.sqlite'}"})
    async with app_client(settings, generator) as c:  # starts although the log cannot be opened
        for i in range(4):
            assert (await c.post("/sql", json={"sql": f"SELECT {i}"})).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert _metric(metrics, "querywise_querylog_failures_total") == 4
        assert _metric(metrics, "querywise_querylog_pending") == 4
        blocker.unlink()  # the directory can be created now
        # the behaviour under test: the log retries only once its retry interval (1 s) has passed, so time must pass
        time.sleep(1.1)
        assert (await c.post("/sql", json={"sql": "SELECT 'back'"})).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert _metric(metrics, "querywise_querylog_pending") == 0
        assert _metric(metrics, "querywise_querylog_dropped") == 0
        assert (await c.get("/api/dashboard")).json()["requests"] == 5
