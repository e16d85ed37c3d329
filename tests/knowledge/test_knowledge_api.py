"""Glossary, feedback and verified examples through the real app (real model, demo database), with the application
database on SQLite and on a real PostgreSQL server: what is stored, what a key with an allow-list sees and may
write, what reaches the prompt, and what the dashboards count."""

import itertools

import psycopg
import pytest
import sqlalchemy as sa
from tests_support import app_client, auth_headers, with_key

from app.knowledge.store import verified_example
from app.querylog.store import query_log

pytestmark = pytest.mark.slow
_names = itertools.count()

GLOSSARY = {
    "terms": [
        {"term": "revenue", "definition": "sales after discount", "sql": "SUM(order_items.quantity * order_items.unit_price * (1 - order_items.discount))"},
        {"term": "payroll", "definition": "what employees are paid", "sql": "SUM(employees.salary)"},
        {"term": "fiscal year", "definition": "the calendar year"},
    ],
    "columns": [{"column": "orders.status", "description": "processing, shipped, delivered, cancelled or returned"}],
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def app_db_url(request, tmp_path):
    """The application database: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.sqlite'}"
    s = request.getfixturevalue("postgres_server")
    name = f"qw_knowledge_{next(_names)}"
    with psycopg.connect(f"host={s['host']} port={s['port']} user={s['user']} dbname=postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://{s['user']}@{s['host']}:{s['port']}/{name}"


@pytest.fixture
def keyed(settings_for, demo_db, app_db_url):
    """Settings with auth on, an unrestricted key and a key limited to the order tables."""
    settings, admin = with_key(
        # the glossary in the prompt is off by default (it hurt the served model); these tests turn it on
        settings_for(f"sqlite:///{demo_db}", glossary_token_budget=300).model_copy(update={"querylog_url": app_db_url}),
        "admin",
    )
    settings, orders = with_key(settings, "orders-only", tables=["orders", "order_items", "customers"])
    return settings, auth_headers(admin), auth_headers(orders)


async def test_glossary_round_trip_yaml_and_the_allow_list(keyed, generator):
    settings, admin, orders = keyed
    async with app_client(settings, generator) as c:
        assert (await c.get("/api/glossary", headers=admin)).json() == {"terms": [], "columns": []}
        r = await c.put("/api/glossary", json=GLOSSARY, headers=admin)
        assert r.status_code == 200, r.text
        assert (await c.get("/api/glossary", headers=admin)).json() == GLOSSARY

        # YAML out and back in: the same document
        y = await c.get("/api/glossary?format=yaml", headers=admin)
        assert y.headers["content-type"].startswith("application/yaml") and "term: revenue" in y.text
        r = await c.put("/api/glossary", content=y.text, headers=admin | {"content-type": "application/yaml"})
        assert r.status_code == 200 and r.json() == GLOSSARY

        # a key limited to the order tables sees neither payroll (employees) nor anything else it cannot read
        seen = (await c.get("/api/glossary", headers=orders)).json()
        assert [t["term"] for t in seen["terms"]] == ["revenue", "fiscal year"] and seen["columns"] == GLOSSARY[
            "columns"
        ]
        bad = {"terms": [{"term": "headcount", "definition": "d", "sql": "COUNT(employees.employee_id)"}]}
        r = await c.put("/api/glossary", json=bad, headers=orders)
        assert r.status_code == 422 and "cannot read" in r.json()["detail"]
        # ...and replacing its part keeps what it cannot see
        mine = {
            "terms": [{"term": "open order", "definition": "not shipped yet", "sql": "orders.status = 'processing'"}]
        }
        assert (await c.put("/api/glossary", json=mine, headers=orders)).status_code == 200
        terms = [t["term"] for t in (await c.get("/api/glossary", headers=admin)).json()["terms"]]
        assert terms == ["payroll", "open order"]

        for body, ctype, message in [
            ("terms: [", "application/yaml", "not valid YAML"),
            ('{"terms": [{"term": "x", "definition": "y", "sql": "1; DROP TABLE orders"}]}', "application/json", "one SQL expression"),
            ('{"columns": [{"column": "orders.nope", "description": "y"}]}', "application/json", "no such column"),
            ("null\n", "application/yaml", "document is empty"),  # an empty upload never wipes the glossary
            ("", "application/json", "document is empty"),
        ]:  # fmt: skip
            r = await c.put("/api/glossary", content=body, headers=admin | {"content-type": ctype})
            assert r.status_code == 422 and message in r.json()["detail"], r.text
        r = await c.put("/api/glossary", content="terms: []", headers=admin | {"content-type": "text/plain"})
        assert r.status_code == 415
        assert (await c.get("/api/glossary")).status_code == 401

        # the glossary reaches the prompt, under the schema in the first user turn
        prompt = c.app.state.service.prompt_for("How many open orders are there?")
        assert "\n-- open order = orders.status = 'processing': not shipped yet\n\nQuestion: How many open" in prompt


async def test_feedback_stores_verified_examples_that_reach_the_prompt(keyed, generator):
    settings, admin, orders = keyed
    async with app_client(settings, generator) as c:
        service = c.app.state.service
        plain = service.prompt_for("How many customers do we have?")
        a = (await c.post("/query", json={"question": "How many customers are there?"}, headers=admin)).json()
        assert len(a["answer_id"]) == 32 and a["verified_examples"] == 0

        fix = "SELECT COUNT(*) FROM customers WHERE segment = 'retail'"
        for body, code, message in [
            ({"answer_id": "0" * 32, "verdict": "down"}, 404, "No answer"),
            ({"answer_id": "nope", "verdict": "down"}, 422, "answer_id"),
            ({"answer_id": a["answer_id"], "verdict": "meh"}, 422, "verdict"),
            ({"answer_id": a["answer_id"], "verdict": "down", "sql": "DELETE FROM customers"}, 422, "not saved"),
            ({"answer_id": a["answer_id"], "verdict": "up", "sql": fix}, 422, "👎"),
        ]:
            r = await c.post("/feedback", json=body, headers=admin)
            assert r.status_code == code and message in r.json()["detail"], (body, r.text)
        # a key limited to other tables cannot store SQL that reads hidden ones
        r = await c.post("/feedback", json={"answer_id": a["answer_id"], "verdict": "down", "sql": "SELECT COUNT(*) FROM employees"}, headers=orders)  # fmt: skip
        assert r.status_code == 422 and "not saved" in r.json()["detail"]

        r = await c.post("/feedback", json={"answer_id": a["answer_id"], "verdict": "down", "sql": fix}, headers=admin)
        assert r.status_code == 200 and r.json()["example_id"], r.text
        listed = (await c.get("/api/verified-examples", headers=admin)).json()["examples"]
        assert [(e["question"], e["sql"], e["source"], e["tables"]) for e in listed] == [
            ("How many customers are there?", fix, "corrected", ["customers"])
        ]
        assert (await c.get("/api/verified-examples", headers=orders)).json()["examples"] == listed

        # a close paraphrase: the pair is an earlier turn in the packed training format, and the answer says so
        prompt = service.prompt_for("How many customers do we have?")
        assert prompt != plain
        assert f"Question: How many customers are there?<|im_end|>\n<|im_start|>assistant\n{fix}<|im_end|>\n" in prompt
        assert prompt.endswith(
            "<|im_start|>user\nQuestion: How many customers do we have?<|im_end|>\n<|im_start|>assistant\n"
        )
        b = (await c.post("/query", json={"question": "How many customers do we have?"}, headers=admin)).json()
        assert b["verified_examples"] == 1

        # edit through the guard, then delete
        eid = listed[0]["id"]
        r = await c.put(f"/api/verified-examples/{eid}", json={"question": "How many retail customers?", "sql": "DROP TABLE customers"}, headers=admin)  # fmt: skip
        assert r.status_code == 422
        # the schema's max_length holds for the text as sent (the fuzz test found padding that stripping removed)
        r = await c.put(f"/api/verified-examples/{eid}", json={"question": "How many?", "sql": "n" + "\r" * 20_000}, headers=admin)  # fmt: skip
        assert r.status_code == 422 and "sql" in r.text
        r = await c.put(f"/api/verified-examples/{eid}", json={"question": "How many retail customers?", "sql": fix + " LIMIT 200"}, headers=admin)  # fmt: skip
        assert r.status_code == 200 and r.json()["sql"] == fix and r.json()["source"] == "edited"
        assert (await c.delete(f"/api/verified-examples/{eid}", headers=admin)).status_code == 200
        assert (await c.delete(f"/api/verified-examples/{eid}", headers=admin)).status_code == 404
        assert service.prompt_for("How many customers do we have?") == plain  # nothing left: the trained prompt


async def test_dashboards_do_not_count_answers_marked_wrong(keyed, generator):
    settings, admin, _ = keyed
    async with app_client(settings, generator) as c:
        # two SQL runs that succeed, then a question whose answer is marked 👎
        for _ in range(2):
            assert (
                await c.post("/sql", json={"sql": "SELECT COUNT(*) FROM customers"}, headers=admin)
            ).status_code == 200
        a = (await c.post("/query", json={"question": "How many customers are there?"}, headers=admin)).json()
        assert a["status"] == "ok", a
        assert (await c.get("/api/dashboard", headers=admin)).json()["success_rate"] == 1.0
        r = await c.post("/feedback", json={"answer_id": a["answer_id"], "verdict": "down"}, headers=admin)
        assert r.status_code == 200 and r.json()["example_id"] is None
        d = (await c.get("/api/dashboard", headers=admin)).json()
        assert d["success_rate"] == round(2 / 3, 3) and dict(d["top_errors"]).get("marked_wrong") == 1

        # 👍 stores the model's own SQL; a later 👎 on the same answer takes it back
        b = (await c.post("/query", json={"question": "How many products are there?"}, headers=admin)).json()
        r = await c.post("/feedback", json={"answer_id": b["answer_id"], "verdict": "up"}, headers=admin)
        assert r.status_code == 200 and r.json()["example_id"], r.text
        engine = c.app.state.querylog.engine
        with engine.connect() as conn:
            stored = conn.execute(sa.select(verified_example.c.sql, verified_example.c.source)).all()
            verdicts = conn.execute(sa.select(query_log.c.verdict).where(query_log.c.answer_id.is_not(None))).all()
        assert len(stored) == 1 and stored[0][1] == "approved" and "products" in stored[0][0].lower()
        assert sorted(v for (v,) in verdicts if v) == ["down", "up"]
        await c.post("/feedback", json={"answer_id": b["answer_id"], "verdict": "down"}, headers=admin)
        assert (await c.get("/api/verified-examples", headers=admin)).json()["examples"] == []


async def test_an_old_query_log_gains_the_feedback_columns(tmp_path, settings_for, demo_db, generator):
    """A query log created before feedback existed (no answer_id/model_sql/verdict columns) keeps working."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(url)
    old = sa.MetaData()
    sa.Table("query_log", old, *[c.copy() for c in query_log.columns if c.name not in ("answer_id", "model_sql", "verdict", "key_name")])  # fmt: skip
    old.create_all(engine)
    settings = settings_for(f"sqlite:///{demo_db}").model_copy(update={"querylog_url": url})
    async with app_client(settings, generator) as c:
        a = (await c.post("/query", json={"question": "How many customers are there?"})).json()
        r = await c.post("/feedback", json={"answer_id": a["answer_id"], "verdict": "down"})
        assert r.status_code == 200, r.text
    assert {"answer_id", "model_sql", "verdict"} <= {c["name"] for c in sa.inspect(engine).get_columns("query_log")}


async def test_a_glossary_file_is_imported_once_and_keys_are_shown_only_their_part(settings_for, demo_db, generator):
    from app.knowledge.context import DEMO_GLOSSARY

    settings = settings_for(f"sqlite:///{demo_db}", glossary_token_budget=300).model_copy(
        update={"glossary_file": DEMO_GLOSSARY}
    )
    question = "Total revenue and payroll of the sales reps managers"
    async with app_client(settings, generator) as c:
        service = c.app.state.service
        full = service.prompt_for(question)
        assert "-- revenue = SUM(order_items.quantity * order_items.unit_price * (1 - order_items.discount))" in full
        assert "-- employees.manager_id:" in full
        narrow = service.prompt_for(question, frozenset({"orders", "order_items", "customers"}))
        assert "-- revenue = " in narrow and "employees" not in narrow  # neither the table nor entries about it
        assert (await c.put("/api/glossary", json={})).status_code == 200  # emptied on purpose
    async with app_client(settings, generator) as c:  # a restart does not bring the shipped glossary back
        assert (await c.get("/api/glossary")).json() == {"terms": [], "columns": []}
        assert "\n-- " not in c.app.state.service.prompt_for(question)
