"""Shared fixtures: a real, throwaway PostgreSQL server started from the Debian server binaries.

The server is started once per test session, only when a test asks for it (`postgres_url`), and stopped at the end.
Missing binaries are a failure, not a skip: the PostgreSQL path is part of what the suite must prove.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The project is not installed into the venv and pytest puts only tests/ on sys.path (no tests/__init__.py).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_SUPERUSER = "postgres"
PG_DATABASE = "querywise_test"
PG_READER = "qw_reader"


def _pg_bin_dir() -> Path:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under /usr/lib/postgresql/*/bin. "
        "Install them (Debian: apt-get install -y postgresql) to run the PostgreSQL tests.",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> tuple[list[str], str | None]:
    """initdb refuses to run as root: run the server tools as the `postgres` OS user then."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam(PG_SUPERUSER)
    except KeyError:
        pytest.fail("Running as root, and there is no `postgres` OS user to run initdb/pg_ctl as.", pytrace=False)
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("Running as root, and `runuser` is missing: cannot start PostgreSQL as `postgres`.", pytrace=False)
    return [runuser, "-u", PG_SUPERUSER, "--"], PG_SUPERUSER


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict]:
    """A running PostgreSQL server with trust auth on 127.0.0.1 and the `querywise_test` database."""
    bin_dir = _pg_bin_dir()
    prefix, owner = _as_server_user()
    # Not pytest's tmp_path: that sits under a root-only 0700 directory the `postgres` user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="querywise-pg-"))
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, log = base / "data", base / "server.log"
    port = _free_port()
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        _run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "-A", "trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            base,
        )  # fmt: skip
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
        _run([*pg_ctl, "-l", str(log), "-o", opts, "-w", "-t", "60", "start"], base)
        started = True
        admin = f"host=127.0.0.1 port={port} user={PG_SUPERUSER} dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        yield {"host": "127.0.0.1", "port": port, "user": PG_SUPERUSER, "database": PG_DATABASE}
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "immediate", "stop"], cwd=base, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


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

    Access control is off and the rate limit out of reach unless the test passes them (`auth_disabled=False`,
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
