"""The adversarial suite: every case in `cases.py` sent through the real app to SQLite and to a real PostgreSQL.

SQL cases go to POST /sql and POST /ui/sql together; question cases go to POST /query and are asked all at once, so
the batching queue decodes them together. After every case (after every batch of questions) the database must be
exactly as it was: the SQLite file byte-identical (and no journal or other file beside it), PostgreSQL's data and
catalog checksum-identical, and no file in the directory the attacks aim at. Every answer must be a refusal or a
safe, bounded one: never a 500 or a traceback, no query still running once it is answered, at most `row_limit` rows.

The PostgreSQL app connects as `qw_reader` (SELECT-only grants, `postgres_readonly_url`); the data is loaded by the
superuser into a database of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from cases import ALLOW_LIST_CASES, ALLOW_LIST_TABLES, QUESTION_CASES, SQL_CASES, Case
from tests_support import MODEL_DIR, app_client, auth_headers, with_key

from app.core.config import Settings
from app.db import demo
from app.sql.guard import GuardError, guard_sql

pytestmark = pytest.mark.slow

ROW_LIMIT = 50
TIMEOUT_S = 1.0
PG_DATABASE = "querywise_security"
# Never in any answer: a stack trace, or the contents of a file the attacks try to read.
ALWAYS_ABSENT = ("Traceback", 'File "', "root:x:0:0")


# --- targets: a database, how to fingerprint it, and an app on it ------------------------------------------------


@dataclass
class Target:
    dialect: str
    url: str  # what the app connects with
    files: Path  # where attacks aim their files; must stay empty
    state: Callable[[], object]  # everything a write could change
    secrets: tuple[str, ...]  # server paths that must not leak
    baseline: object = None


@dataclass
class Env:
    target: Target
    client: httpx.AsyncClient


def _watched_dir() -> Path:
    # Not pytest's tmp_path (root-only 0700): PostgreSQL's server user must be able to write here if anything let it.
    path = Path(tempfile.mkdtemp(prefix="querywise-attack-"))
    path.chmod(0o777)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sqlite_target(demo_db: Path, tmp_path_factory) -> Target:
    db = tmp_path_factory.mktemp("security-sqlite") / "demo.sqlite"
    shutil.copyfile(demo_db, db)
    files = _watched_dir()

    def state() -> object:
        # The file's bytes, and nothing beside it: a -journal, -wal or -shm file would mean a write was attempted.
        return _sha256(db), sorted(p.name for p in db.parent.iterdir()), sorted(p.name for p in files.iterdir())

    target = Target("sqlite", f"sqlite:///{db}", files, state, (str(db.parent),))
    target.baseline = state()
    yield target
    shutil.rmtree(files, ignore_errors=True)


_PG_CATALOG_SHAPE = {
    # Relations of every schema but the system ones: temp tables of any session show up here (pg_temp_N).
    "relations": "SELECT n.nspname, c.relname, c.relkind, c.relpersistence FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2",
    "roles": "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles ORDER BY 1",
    "role_settings": "SELECT setdatabase, setrole, setconfig::text FROM pg_db_role_setting ORDER BY 1, 2",
    "databases": "SELECT datname FROM pg_database ORDER BY 1",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    "functions": "SELECT count(*) FROM pg_proc",
    "sequences": "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2",
    "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
    "triggers_rules_comments": "SELECT (SELECT count(*) FROM pg_trigger), (SELECT count(*) FROM pg_rewrite), "
    "(SELECT count(*) FROM pg_event_trigger), (SELECT count(*) FROM pg_description)",
    "advisory_locks": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
    "prepared_xacts": "SELECT count(*) FROM pg_prepared_xacts",
    # The reader's sessions after an answer: none still running a query or holding a transaction open.
    "reader_busy": "SELECT count(*) FROM pg_stat_activity WHERE usename = 'qw_reader' AND state <> 'idle'",
}


def _pg_state(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        state = {name: conn.execute(q).fetchall() for name, q in _PG_CATALOG_SHAPE.items()}
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            # Every row, in a stable order, as text: md5 of the lot.
            (digest,) = conn.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{schema}\".\"{table}\" t"
            ).fetchone()
            state[f"data:{schema}.{table}"] = digest
    return state


@pytest.fixture(scope="module")
def pg_target(postgres_server: dict, postgres_url: str, postgres_readonly_url: str) -> Target:
    """The demo data in a database of its own, loaded by the superuser; grants as deploy/postgres-init sets them."""
    admin = sa.make_url(postgres_url)
    s = postgres_server
    with psycopg.connect(f"host={s['host']} port={s['port']} user={s['user']} dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE}")
        c.execute(f"CREATE DATABASE {PG_DATABASE}")
        data_dir = c.execute("SHOW data_directory").fetchone()[0]
    engine = sa.create_engine(admin.set(database=PG_DATABASE))
    with engine.begin() as conn:
        conn.exec_driver_sql("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.exec_driver_sql("GRANT USAGE ON SCHEMA public TO qw_reader")
    demo.load(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO qw_reader")
    with engine.connect() as conn:  # statistics now, so autovacuum has no reason to touch the tables mid-run
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    engine.dispose()

    dsn = f"host={s['host']} port={s['port']} user={s['user']} dbname={PG_DATABASE}"
    files = _watched_dir()

    def state() -> object:
        return _pg_state(dsn), sorted(p.name for p in files.iterdir())

    reader = sa.make_url(postgres_readonly_url).set(database=PG_DATABASE).render_as_string(hide_password=False)
    target = Target("postgres", reader, files, state, (data_dir,))
    target.baseline = state()
    yield target
    shutil.rmtree(files, ignore_errors=True)


def _settings(url: str, tmp: Path) -> Settings:
    return Settings(
        database_url=url,
        querylog_url=f"sqlite:///{tmp / 'querylog.sqlite'}",
        model_dir=MODEL_DIR,
        auth_disabled=True,  # not an auth test; see tests/api/test_auth.py
        api_keys_file=tmp / "api_keys.json",
        rate_limit_per_minute=100_000,
        rate_limit_burst=10_000,
        max_in_flight_per_key=1000,
        statement_timeout_s=TIMEOUT_S,
        row_limit=ROW_LIMIT,
        # Every question is asked at once and must be answered, not shed: room for all of them, however slow.
        queue_max_size=64,
        queue_max_wait_s=600,
        # One answer per question keeps the run short; sampled candidates take the same guard and executor path.
        exec_guided_candidates=0,
    )


@pytest.fixture(scope="module")
async def sqlite_env(sqlite_target: Target, generator, tmp_path_factory) -> AsyncIterator[Env]:
    async with app_client(_settings(sqlite_target.url, tmp_path_factory.mktemp("app-sqlite")), generator) as c:
        yield Env(sqlite_target, c)


@pytest.fixture(scope="module")
async def pg_env(pg_target: Target, generator, tmp_path_factory) -> AsyncIterator[Env]:
    async with app_client(_settings(pg_target.url, tmp_path_factory.mktemp("app-pg")), generator) as c:
        yield Env(pg_target, c)


# --- reading answers -------------------------------------------------------------------------------------------


@dataclass
class Answer:
    endpoint: str
    http: int
    status: str  # ok | empty | refused | error, or "http" when the request itself was rejected
    category: str
    rows: int
    sql: str | None
    text: str


def _api_answer(endpoint: str, r: httpx.Response) -> Answer:
    if r.status_code != 200 or not r.headers.get("content-type", "").startswith("application/json"):
        return Answer(endpoint, r.status_code, "http", "", 0, None, r.text)
    body = r.json()
    return Answer(endpoint, 200, body["status"], body["category"], body["row_count"], body.get("sql"), r.text)


def _ui_answer(r: httpx.Response) -> Answer:
    text = r.text
    if r.status_code != 200:
        return Answer("/ui/sql", r.status_code, "http", "", 0, None, text)
    status = re.search(r'class="result status-(\w+)"', text)
    if status is None:  # a notice instead of a result card (e.g. empty SQL)
        return Answer("/ui/sql", 200, "notice", "", 0, None, text)
    category = re.search(r'<span class="badge cat">(\w+)</span>', text)
    tbody = re.search(r"<tbody>(.*?)</tbody>", text, re.S)
    rows = tbody.group(1).count("<tr>") if tbody else 0
    shown = re.search(r'<textarea id="sql"[^>]*>(.*?)</textarea>', text, re.S)
    return Answer(
        "/ui/sql",
        200,
        status.group(1),
        category.group(1) if category else status.group(1),
        rows,
        html.unescape(shown.group(1)) if shown else None,
        text,
    )


def _check_expectation(a: Answer, expect: str, dialect: str) -> None:
    where = f"{a.endpoint}: {a.http} {a.status}/{a.category}: {a.text[:300]}"
    if expect == "too_long":
        if a.endpoint == "/ui/sql":
            assert a.http == 413 or a.status == "refused", where
        else:
            assert a.http in (413, 422), where
        return
    assert a.http == 200, where
    allowed = {
        "refused": {"refused"},
        "blocked": {"refused", "error"},
        "bounded": {"ok", "empty", "error", "refused"},
        "timeout": {"error"},
        "harmless": {"ok", "empty"},
        "safe": {"ok", "empty", "error", "refused"},
    }[expect]
    assert a.status in allowed, where
    if expect == "timeout":
        assert a.category == "timeout", where
    if a.status in ("ok", "empty") and a.sql is not None:
        # What ran is itself a guarded read: checking it again changes nothing but may not refuse it.
        try:
            guard_sql(a.sql, dialect=dialect, row_limit=ROW_LIMIT)
        except GuardError as e:
            pytest.fail(f"{a.endpoint} ran SQL the guard refuses on a second look ({e.message}): {a.sql}")


def _check_answer(a: Answer, case: Case, target: Target) -> None:
    assert a.http < 500, f"{a.endpoint}: {a.http}: {a.text[:500]}"
    for secret in (*ALWAYS_ABSENT, *case.absent, *target.secrets):
        assert secret not in a.text, f"{a.endpoint} leaked {secret!r}: {a.text[:500]}"
    assert a.rows <= ROW_LIMIT, f"{a.endpoint}: {a.rows} rows"
    _check_expectation(a, case.expectation(target.dialect), target.dialect)


def _assert_unchanged(target: Target, when: str) -> None:
    now = target.state()
    if now != target.baseline:
        changed = {k for k in now[0] if now[0][k] != target.baseline[0].get(k)} if isinstance(now[0], dict) else now
        pytest.fail(f"the {target.dialect} database changed {when}: {changed}")


# --- the SQL channel ---------------------------------------------------------------------------------------------


async def _attack_sql(env: Env, case: Case) -> None:
    payload = case.payload.replace("{tmp}", str(env.target.files))
    api, ui = await asyncio.gather(
        env.client.post("/sql", json={"sql": payload}),
        env.client.post("/ui/sql", data={"sql": payload}),
    )
    for answer in (_api_answer("/sql", api), _ui_answer(ui)):
        _check_answer(answer, case, env.target)
    # Bounded: once both answers are out, no query of theirs still holds a connection (runs on past its answer).
    pool = env.client.app.state.service.executor.engine.pool
    assert pool.checkedout() == 0, f"{case.id}: a query still runs after its answer"
    _assert_unchanged(env.target, f"after {case.id}")


def _params(cases: list[Case], dialect: str, marks=()) -> list:
    return [pytest.param(c, id=c.id, marks=marks) for c in cases if dialect in c.dialects]


@pytest.mark.parametrize("case", _params(SQL_CASES, "sqlite"))
async def test_sql_attack_sqlite(sqlite_env: Env, case: Case) -> None:
    await _attack_sql(sqlite_env, case)


@pytest.mark.parametrize("case", _params(SQL_CASES, "postgres", pytest.mark.postgres))
async def test_sql_attack_postgres(pg_env: Env, case: Case) -> None:
    await _attack_sql(pg_env, case)


# --- the question channel: the real model writes the SQL -----------------------------------------------------------


async def _ask_all(env: Env) -> dict[str, Answer]:
    """Every question at once (the batching queue decodes them together); the database checked after the lot."""
    _assert_unchanged(env.target, "before the questions")
    responses = await asyncio.gather(*(env.client.post("/query", json={"question": c.payload}) for c in QUESTION_CASES))
    answers = {c.id: _api_answer("/query", r) for c, r in zip(QUESTION_CASES, responses, strict=True)}
    _assert_unchanged(env.target, "after the questions")
    return answers


@pytest.fixture(scope="module")
async def sqlite_answers(sqlite_env: Env) -> dict[str, Answer]:
    return await _ask_all(sqlite_env)


@pytest.fixture(scope="module")
async def pg_answers(pg_env: Env) -> dict[str, Answer]:
    return await _ask_all(pg_env)


@pytest.mark.parametrize("case", _params(QUESTION_CASES, "sqlite"))
async def test_question_attack_sqlite(sqlite_env: Env, sqlite_answers: dict[str, Answer], case: Case) -> None:
    _check_answer(sqlite_answers[case.id], case, sqlite_env.target)


@pytest.mark.parametrize("case", _params(QUESTION_CASES, "postgres", pytest.mark.postgres))
async def test_question_attack_postgres(pg_env: Env, pg_answers: dict[str, Answer], case: Case) -> None:
    _check_answer(pg_answers[case.id], case, pg_env.target)


# --- a key limited to some tables: refused, and nothing learned about the others -------------------------------


@dataclass
class Restricted:
    target: Target
    client: httpx.AsyncClient
    key: str


async def _restricted(target: Target, generator, tmp: Path) -> AsyncIterator[Restricted]:
    settings, key = with_key(_settings(target.url, tmp), "limited", tables=ALLOW_LIST_TABLES)
    async with app_client(settings, generator) as c:
        yield Restricted(target, c, key)


@pytest.fixture(scope="module")
async def sqlite_restricted(sqlite_target: Target, generator, tmp_path_factory) -> AsyncIterator[Restricted]:
    async for r in _restricted(sqlite_target, generator, tmp_path_factory.mktemp("app-sqlite-limited")):
        yield r


@pytest.fixture(scope="module")
async def pg_restricted(pg_target: Target, generator, tmp_path_factory) -> AsyncIterator[Restricted]:
    async for r in _restricted(pg_target, generator, tmp_path_factory.mktemp("app-pg-limited")):
        yield r


MISSING = "no_such_tbl"  # a table no database here has


async def _attack_allow_list(env: Restricted, case: Case) -> None:
    """The payload names `payments` (exists, not allowed); the same payload with a table that does not exist must get
    the very same answer, so the key cannot tell which tables exist."""
    answers = {}
    for table in ("payments", MISSING):
        payload = case.payload.replace("payments", table)
        r = await env.client.post("/sql", json={"sql": payload}, headers=auth_headers(env.key))
        answer = _api_answer("/sql", r)
        _check_answer(answer, case, env.target)
        answers[table] = (answer.status, answer.category, r.json().get("message", "").replace(table, "<table>"))
    assert answers["payments"] == answers[MISSING], answers
    assert env.client.app.state.service.executor.engine.pool.checkedout() == 0
    _assert_unchanged(env.target, f"after {case.id}")


@pytest.mark.parametrize("case", _params(ALLOW_LIST_CASES, "sqlite"))
async def test_allow_list_attack_sqlite(sqlite_restricted: Restricted, case: Case) -> None:
    await _attack_allow_list(sqlite_restricted, case)


@pytest.mark.parametrize("case", _params(ALLOW_LIST_CASES, "postgres", pytest.mark.postgres))
async def test_allow_list_attack_postgres(pg_restricted: Restricted, case: Case) -> None:
    await _attack_allow_list(pg_restricted, case)


# --- the role the PostgreSQL app uses ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_app_role_is_select_only(pg_target: Target, postgres_server: dict) -> None:
    """What the suite relies on and the README promises operators: qw_reader can log in and read, nothing else."""
    assert sa.make_url(pg_target.url).username == "qw_reader"
    s = postgres_server
    with psycopg.connect(f"host={s['host']} port={s['port']} user={s['user']} dbname={PG_DATABASE}") as conn:
        flags = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
            "WHERE rolname = 'qw_reader'"
        ).fetchone()
        assert flags == (False, False, False, False, False)
        privileges = conn.execute(
            "SELECT tablename, has_table_privilege('qw_reader', 'public.' || tablename, 'SELECT'), "
            "has_table_privilege('qw_reader', 'public.' || tablename, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, "
            "TRIGGER') FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        assert len(privileges) == len(demo.metadata.tables)
        assert all(can_read and not can_write for _, can_read, can_write in privileges), privileges
        assert conn.execute("SELECT has_schema_privilege('qw_reader', 'public', 'CREATE')").fetchone() == (False,)


def test_cases_cover_the_issue() -> None:
    """At least 100 attack cases, questions among them, each dialect with its own specific attacks."""
    assert len(SQL_CASES) + len(QUESTION_CASES) >= 100
    assert len(QUESTION_CASES) >= 25
    assert len(_params(SQL_CASES, "sqlite")) >= 100 and len(_params(SQL_CASES, "postgres")) >= 100
    assert any(c.dialects == ("sqlite",) for c in SQL_CASES) and any(c.dialects == ("postgres",) for c in SQL_CASES)
