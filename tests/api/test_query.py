"""`POST /query` and friends against the real app, the real model and the demo SQLite database."""

import asyncio

import pytest
from tests_support import wait_until_async

from app.sql.guard import guard_sql

pytestmark = pytest.mark.slow


async def test_question_returns_guarded_sql_and_rows(client):
    r = await client.post("/query", json={"question": "How many customers are there?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body
    assert body["sql"].upper().startswith(("SELECT", "WITH"))
    assert guard_sql(body["sql"], row_limit=200).sql  # what ran is what the guard accepts
    assert body["row_count"] >= 1 and body["rows"] and body["columns"]
    assert body["truncated"] is False
    for k in ("generate_ms", "execute_ms", "total_ms"):
        assert body[k] is not None and body[k] >= 0
    assert body["total_ms"] >= body["generate_ms"]
    assert body["model_id"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": 42}, "question"),
        ({"question": ["a"]}, "question"),
        ({"question": "x" * 600}, "too long"),
        ({"question": "ok", "extra": 1}, "extra"),
    ],
)
async def test_invalid_bodies_get_422_with_a_message(client, payload, fragment):
    r = await client.post("/query", json=payload)
    assert r.status_code == 422
    assert fragment in r.json()["detail"].lower()


async def test_malformed_json_gets_422(client):
    r = await client.post("/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_refused_sql_is_never_executed(client):
    before = (await client.get("/api/schema")).json()
    r = await client.post("/sql", json={"sql": "DROP TABLE customers"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "refused" and body["rows"] == [] and body["execute_ms"] is None
    assert "read-only" in body["message"].lower() or "drop" in body["message"].lower()
    after = (await client.get("/api/schema")).json()
    assert before == after


async def test_edited_sql_runs_through_the_guard_with_row_cap(client):
    r = await client.post("/sql", json={"sql": "SELECT customer_id FROM customers"})
    body = r.json()
    assert body["status"] == "ok" and body["row_count"] == 200 and body["truncated"] is True
    assert "LIMIT 200" in body["sql"].upper()


async def test_health_ready_metrics_docs(client):
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    await client.post("/sql", json={"sql": "SELECT 1"})
    metrics = (await client.get("/metrics")).text
    assert "querywise_requests_total" in metrics and "querywise_request_seconds" in metrics
    assert (await client.get("/openapi.json")).json()["paths"]["/query"]["post"]
    assert (await client.get("/docs")).status_code == 200


async def test_every_request_is_logged_and_dashboard_reads_it(client):
    await client.post("/sql", json={"sql": "SELECT 1"})
    await client.post("/sql", json={"sql": "DELETE FROM orders"})
    await client.post("/sql", json={"sql": "SELECT nope FROM customers"})
    d = (await client.get("/api/dashboard")).json()
    assert d["requests"] == 3
    cats = dict(d["top_errors"])
    assert cats.get("refused") == 1 and cats.get("unknown_column") == 1
    assert d["p50_ms"] is not None and d["p95_ms"] is not None
    assert 0 < d["success_rate"] < 1


async def test_schema_and_examples(client):
    s = (await client.get("/api/schema")).json()
    names = {t["name"] for t in s["tables"]}
    assert {"customers", "orders", "order_items", "products", "payments", "employees"} <= names
    assert "customers(" in s["prompt_text"]
    ex = (await client.get("/api/examples")).json()["examples"]
    assert len(ex) >= 3


async def test_concurrent_questions_decode_in_shared_batches_with_the_same_answers(client):
    questions = [
        "How many customers are there?",
        "How many products are there?",
        "How many orders are there?",
        "How many employees are there?",
        "List the names of all regions.",
        "How many suppliers are there?",
    ]
    alone = []
    for q in questions:
        alone.append((await client.post("/query", json={"question": q})).json())
    before = (await client.get("/api/stats")).json()["batching"]
    together = await asyncio.gather(*(client.post("/query", json={"question": q}) for q in questions))
    after = (await client.get("/api/stats")).json()["batching"]
    batches = after["batches"] - before["batches"]
    assert after["requests"] - before["requests"] == len(questions)
    assert batches < len(questions)
    assert max(r.json()["batch_size"] for r in together) > 1
    assert [r.json()["sql"] for r in together] == [a["sql"] for a in alone]


async def test_full_queue_answers_503_with_retry_after(settings_for, demo_db, generator):
    from tests_support import app_client

    settings = settings_for(f"sqlite:///{demo_db}", queue_max_size=1, batch_max_size=1, max_new_tokens=16)
    async with app_client(settings, generator) as c:
        rs = await asyncio.gather(
            *(c.post("/query", json={"question": f"How many orders in {y}?"}) for y in range(2000, 2008))
        )
        codes = [r.status_code for r in rs]
        assert 503 in codes and 200 in codes
        shed = next(r for r in rs if r.status_code == 503)
        assert shed.headers["retry-after"].isdigit()
        assert "busy" in shed.json()["detail"].lower()
        assert "querywise_shed_total 0.0" not in (await c.get("/metrics")).text


async def test_all_null_and_empty_answers_are_not_successes(client):
    nulls = (await client.post("/sql", json={"sql": "SELECT MAX(customer_id) FROM customers WHERE 1 = 0"})).json()
    assert nulls["status"] == "empty" and nulls["category"] == "null_result" and nulls["row_count"] == 1
    assert "NULL" in nulls["message"]
    none = (await client.post("/sql", json={"sql": "SELECT * FROM customers WHERE 1 = 0"})).json()
    assert none["status"] == "empty" and none["category"] == "empty_result" and "No rows matched" in none["message"]
    await client.post("/sql", json={"sql": "SELECT 1"})
    d = (await client.get("/api/dashboard")).json()
    assert d["requests"] == 3 and d["success_rate"] == round(1 / 3, 3)  # only the answer with a value counts


async def test_one_key_cannot_hold_more_than_its_share_in_flight(settings_for, demo_db, generator):
    """With a cap of 1, a second request of the same key while its first is running gets 429 at once; once the
    first is answered, the key may ask again."""
    import asyncio

    from tests_support import app_client

    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000000) SELECT count(*) FROM c"
    settings = settings_for(f"sqlite:///{demo_db}", max_in_flight_per_key=1, statement_timeout_s=20)
    async with app_client(settings, generator) as c:
        first = asyncio.create_task(c.post("/sql", json={"sql": slow}))
        in_flight = c.app.state.auth.in_flight.counts  # type: ignore[attr-defined]
        await wait_until_async(lambda: in_flight, "the first request holds its slot")
        second = await c.post("/sql", json={"sql": "SELECT 1"})
        assert second.status_code == 429 and "in progress" in second.json()["detail"]
        assert second.headers["Retry-After"]
        assert (await first).status_code == 200
        assert not in_flight
        assert (await c.post("/sql", json={"sql": "SELECT 1"})).status_code == 200


async def test_readiness_answers_while_the_shared_worker_threads_are_all_busy(client):
    """Every thread of anyio's shared pool held by slow work: /readyz still answers, on threads of its own."""
    import asyncio
    import threading

    from anyio import to_thread

    release = threading.Event()
    limiter = to_thread.current_default_thread_limiter()
    blockers = [asyncio.create_task(to_thread.run_sync(release.wait)) for _ in range(int(limiter.total_tokens))]
    try:
        await wait_until_async(
            lambda: limiter.borrowed_tokens == limiter.total_tokens, "the slow work holds every worker thread"
        )
        r = await asyncio.wait_for(client.get("/readyz"), timeout=10)
        assert r.status_code == 200 and r.json()["database"] is True
    finally:
        release.set()
        await asyncio.gather(*blockers)


async def test_an_unexpected_error_is_a_500_with_security_headers_and_one_log_line(
    settings_for, demo_db, generator, caplog
):
    import logging

    from tests_support import app_client

    async with app_client(settings_for(f"sqlite:///{demo_db}"), generator) as c:

        async def boom() -> dict:
            raise RuntimeError("kaboom\nsecond line of detail")

        c.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
        with caplog.at_level(logging.ERROR, logger="querywise"):
            r = await c.get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "Internal error; it has been logged."}
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and "RuntimeError on /boom: kaboom" in errors[0].getMessage()
    assert errors[0].exc_info is None and "second line" not in errors[0].getMessage()
