"""Shared fixtures: a real, throwaway PostgreSQL server started from the Debian server binaries.

The server is started once per test session, only when a test asks for it (`postgres_url`), and stopped at the end.
Missing binaries are a failure, not a skip: the PostgreSQL path is part of what the suite must prove.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

# Each xdist worker, and every process it starts (servers, training runs, sweep workers), runs torch and onnxruntime
# on its share of the cores. At one thread per core each, two workers' thread pools spun against each other: two
# tiny training runs side by side took 55 s apiece at 2 threads each, 35 s at 1 (21 s alone). Set before torch loads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    os.environ.setdefault("OMP_NUM_THREADS", _SHARE)  # torch (train, generators): their default thread count
    os.environ.setdefault("ORT_THREADS", _SHARE)  # onnxruntime sessions: the `ort_threads` setting

import psycopg  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The project is not installed into the venv and pytest puts only tests/ on sys.path (no tests/__init__.py).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from durations_order import (  # noqa: E402, F401  (hooks: the heaviest test files first, `durations_order`)
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_runtest_logreport,
    pytest_sessionfinish,
)
from pg_cluster import PgCluster  # noqa: E402  (tests/ is on sys.path, like tests_support)

PG_DATABASE = "querywise_test"
PG_READER = "qw_reader"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict]:
    """A running PostgreSQL server with trust auth on 127.0.0.1 and the `querywise_test` database."""
    cluster = PgCluster()
    try:
        cluster.init().create_database(PG_DATABASE)
        yield {"host": cluster.host, "port": cluster.port, "user": cluster.user, "database": PG_DATABASE}
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: dict) -> str:
    """Superuser URL of the throwaway `querywise_test` database (SQLAlchemy, psycopg 3)."""
    s = postgres_server
    return f"postgresql+psycopg://{s['user']}@{s['host']}:{s['port']}/{s['database']}"


@pytest.fixture(scope="session")
def postgres_readonly_url(postgres_server: dict) -> str:
    """URL for `qw_reader`: LOGIN plus SELECT on public tables (now and later ones created by the superuser)."""
    s = postgres_server
    dsn = f"host={s['host']} port={s['port']} user={s['user']} dbname={s['database']}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {PG_READER} LOGIN")
        conn.execute(f"GRANT CONNECT ON DATABASE {s['database']} TO {PG_READER}")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {PG_READER}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PG_READER}")
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {PG_READER}")
    return f"postgresql+psycopg://{PG_READER}@{s['host']}:{s['port']}/{s['database']}"


# --- the real model and the real app ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def generator():
    """The exported ONNX model, loaded once per session and shared by every app the tests build."""
    from tests_support import MODEL_DIR

    from app.nl2sql.engine import OnnxGenerator

    if not (MODEL_DIR / "model.onnx").exists():
        pytest.fail(f"no model at {MODEL_DIR}: `make model` builds it (make test does)", pytrace=False)
    return OnnxGenerator(MODEL_DIR)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    from app.db.demo import build_sqlite

    return build_sqlite(tmp_path_factory.mktemp("demo") / "demo.sqlite")


@pytest.fixture
def settings_for(tmp_path):
    """Settings for an app on `database_url`, with its own query log and keys file in tmp_path.

    Access control is off and the rate limit and the per-key in-flight cap out of reach unless the test passes them (`auth_disabled=False`,
    `rate_limit_burst=...`): tests that are not about them should not trip over them. Auth tests get a key from
    `tests_support.with_key(settings)`.
    """
    from tests_support import MODEL_DIR

    from app.core.config import Settings

    def make(database_url: str, **kw):
        kw = {
            "auth_disabled": True,
            "api_keys_file": tmp_path / "api_keys.json",
            "rate_limit_per_minute": 100_000,
            "rate_limit_burst": 10_000,
            "max_in_flight_per_key": 1000,
            **kw,
        }
        return Settings(
            database_url=database_url,
            querylog_url=f"sqlite:///{tmp_path / 'querylog.sqlite'}",
            model_dir=MODEL_DIR,
            **kw,
        )

    return make


@pytest.fixture
async def client(settings_for, demo_db, generator):
    from tests_support import app_client

    async with app_client(settings_for(f"sqlite:///{demo_db}"), generator) as c:
        yield c
