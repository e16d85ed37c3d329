"""The same API against a real PostgreSQL started by the test run: the demo data loaded by the owner, questions
asked as `qw_reader`, a role with SELECT-only grants."""

import hashlib

import psycopg
import pytest
import sqlalchemy as sa
from tests_support import app_client

from app.db import demo
from app.sql.guard import guard_sql

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_demo(postgres_url, postgres_readonly_url) -> str:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT USAGE ON SCHEMA public TO qw_reader")
        )
        conn.execute(sa.text("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO qw_reader"))
    demo.load(engine)
    engine.dispose()
    return postgres_readonly_url


def _checksum(url: str) -> str:
    """Content checksum of every demo table, as the owner sees it."""
    h = hashlib.sha256()
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        for t in sorted(demo.metadata.tables):
            h.update(t.encode())
            for row in conn.execute(f"SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t} AS x"):
                h.update(str(row[0]).encode())
    return h.hexdigest()


@pytest.fixture
async def pg_client(pg_demo, settings_for, generator):
    async with app_client(settings_for(pg_demo), generator) as c:
        yield c


async def test_question_on_postgres_returns_rows(pg_client):
    r = await pg_client.post("/query", json={"question": "How many customers are there?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body
    assert guard_sql(body["sql"], dialect="postgresql").sql
    assert body["rows"] and body["row_count"] >= 1
    assert (await pg_client.get("/readyz")).json()["database"] is True
    schema = (await pg_client.get("/api/schema")).json()
    assert schema["dialect"] == "postgresql" and len(schema["tables"]) == 9


async def test_sqlite_dialect_is_transpiled_for_postgres(pg_client):
    r = await pg_client.post(
        "/sql", json={"sql": "SELECT strftime('%Y', order_date) AS y, COUNT(*) FROM orders GROUP BY y"}
    )
    body = r.json()
    assert body["status"] == "ok", body
    assert {row[0] for row in body["rows"]} == {"2024", "2025"}


async def test_writes_are_refused_and_data_unchanged(pg_client, postgres_url):
    before = _checksum(postgres_url)
    for sql in (
        "DELETE FROM orders",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        "UPDATE products SET unit_price = 0",
        "DROP TABLE customers",
        "SELECT pg_sleep(10)",
    ):
        body = (await pg_client.post("/sql", json={"sql": sql})).json()
        assert body["status"] == "refused", (sql, body)
    assert _checksum(postgres_url) == before


async def test_invalid_body_on_postgres_app(pg_client):
    assert (await pg_client.post("/query", json={"question": None})).status_code == 422
