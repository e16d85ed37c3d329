"""A throwaway PostgreSQL server run from the Debian server binaries, that tests can stop and start again.

`conftest.postgres_server` keeps one for the whole session; fault tests make their own (`PgCluster(...).init()`),
so stopping it does not disturb other tests. As root, initdb/pg_ctl run as the `postgres` OS user via runuser.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from bench.server import free_port  # one free-port helper for tests and benchmarks

PG_SUPERUSER = "postgres"


def pg_bin_dir() -> Path:
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


class PgCluster:
    """One data directory and port; `init()` once, then `start()` / `stop()` as often as a test needs."""

    def __init__(self) -> None:
        self.bin_dir = pg_bin_dir()
        self.prefix, owner = _as_server_user()
        # Not pytest's tmp_path: that sits under a root-only 0700 directory the `postgres` user cannot enter.
        self.base = Path(tempfile.mkdtemp(prefix="querywise-pg-"))
        if owner:
            entry = pwd.getpwnam(owner)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.host, self.port, self.user = "127.0.0.1", free_port(), PG_SUPERUSER
        self.running = False

    def _pg_ctl(self, *args: str) -> list[str]:
        return [*self.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]

    def init(self) -> PgCluster:
        _run(
            [*self.prefix, str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", PG_SUPERUSER, "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            self.base,
        )  # fmt: skip
        return self.start()

    def start(self) -> PgCluster:
        opts = f"-c listen_addresses={self.host} -p {self.port} -k {self.base} -c fsync=off -c full_page_writes=off"
        _run(self._pg_ctl("-l", str(self.log), "-o", opts, "-w", "-t", "60", "start"), self.base)
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends open sessions (as a restart or failover does); `immediate` is a crash."""
        if self.running:
            subprocess.run(self._pg_ctl("-m", mode, "-w", "stop"), cwd=self.base, capture_output=True, timeout=60)
            self.running = False

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"host={self.host} port={self.port} user={user or self.user} dbname={database}"

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        """SQLAlchemy URL (psycopg 3)."""
        return f"postgresql+psycopg://{user or self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
