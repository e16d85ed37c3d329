"""Who may change the served model, and how: admin keys only (403 for others, 401 without a key); `POST /api/model/load`
serves only export directories under MODEL_EXPORTS_DIR (422 otherwise, never a 500); a load keeps the old model for
`POST /api/model/rollback` (409 when there is none); questions asked while the model changes are all answered; a
specialize run with too few verified pairs ends failed with a message saying so, and its log is shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests_support import MODEL_DIR, app_client, auth_headers, wait_until_async, with_key

from app.auth.keys import KeyStore

pytestmark = pytest.mark.slow
EXPORTS = MODEL_DIR.parent  # build/onnx/smollm2-135m: fp32 (served by the tests) and int8
OTHER = "int8" if MODEL_DIR.name != "int8" else "fp32"
BOUND_S = 300  # a hang becomes a failure after this; nothing is timed


async def _niceness_of_python(pid: int) -> list[int] | None:
    """[the process's nice value] once it runs python (before that it is `nice` itself), None till then."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        niceness = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    except (OSError, ValueError, IndexError):
        return None
    return [niceness] if b"models.specialize" in cmdline and b"python" in cmdline.split(b"\0")[0] else None


@pytest.fixture
async def admin_app(settings_for, demo_db, generator, tmp_path):
    base = settings_for(
        f"sqlite:///{demo_db}",
        model_exports_dir=EXPORTS,
        specialize_dir=tmp_path / "runs",
        exec_guided_candidates=0,
        queue_max_wait_s=600,  # never shed for waiting on a shared CPU: a failed question must be the swap's
    )
    settings, plain = with_key(base, "analyst")
    admin = KeyStore(settings.api_keys_file).create("ops", admin=True).key  # python -m app.keys create --admin
    async with app_client(settings, generator) as client:
        yield client, admin, plain


async def test_admin_routes_need_an_admin_key(admin_app):
    client, admin, plain = admin_app
    for method, url, body in (
        ("GET", "/api/model", None),
        ("POST", "/api/model/load", {"path": str(EXPORTS / OTHER)}),
        ("POST", "/api/model/rollback", None),
        ("POST", "/api/specialize", None),
        ("GET", "/api/specialize", None),
    ):
        r = await client.request(method, url, json=body)
        assert r.status_code == 401, (url, r.text)
        r = await client.request(method, url, json=body, headers=auth_headers(plain))
        assert r.status_code == 403 and "admin key" in r.json()["detail"], (url, r.text)
    r = await client.get("/api/model", headers=auth_headers(admin))
    assert r.status_code == 200 and r.json()["served"]["model_dir"] == str(MODEL_DIR)


@pytest.mark.parametrize(
    "path",
    [
        str(EXPORTS.parent / "qwen2.5-coder-0.5b" / "int8"),  # outside MODEL_EXPORTS_DIR
        str(EXPORTS / ".." / "qwen2.5-coder-0.5b" / "int8"),  # .. out of it
        str(EXPORTS),  # inside, but not an export
        "/etc/passwd",
        "hidden",  # a specialize run's temp export (`.specialized-<timestamp>.tmp`): never served
        "",
    ],
)
async def test_load_refuses_paths_that_are_not_exports_under_the_exports_dir(admin_app, path, tmp_path):
    client, admin, _ = admin_app
    if path == "hidden":  # a complete-looking export in a hidden directory under the exports dir
        hidden = tmp_path / "exports" / ".specialized-x.tmp" / "fp32"
        hidden.mkdir(parents=True)
        for f in ("model.onnx", "tokenizer.json"):
            (hidden / f).symlink_to(MODEL_DIR / f)
        client.app.state.settings.model_exports_dir = tmp_path / "exports"
        path = str(hidden)
    r = await client.post("/api/model/load", json={"path": path}, headers=auth_headers(admin))
    assert r.status_code == 422, r.text
    assert "path" in r.json()["detail"]
    r = await client.post("/api/model/load", json={"path": str(EXPORTS / OTHER), "x": 1}, headers=auth_headers(admin))
    assert r.status_code == 422  # unknown fields


async def test_load_then_rollback_while_questions_are_answered(admin_app):
    client, admin, plain = admin_app
    h = auth_headers(admin)
    r = await client.post("/api/model/rollback", headers=h)
    assert r.status_code == 409 and "no earlier model" in r.json()["detail"]

    async def ask(i: int):
        return await client.post("/query", json={"question": f"How many customers are there? ({i})"}, headers=h)

    asking = [asyncio.ensure_future(ask(i)) for i in range(6)]
    r = await client.post("/api/model/load", json={"path": str(EXPORTS / OTHER)}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["served"]["model_dir"] == str(EXPORTS / OTHER) and body["previous"]["model_dir"] == str(MODEL_DIR)
    answers = await asyncio.gather(*asking, ask(99))
    assert [a.status_code for a in answers] == [200] * 7, [a.text for a in answers if a.status_code != 200]
    ready = (await client.get("/readyz")).json()
    assert ready["model"] == body["model_id"]

    r = await client.post("/api/model/rollback", headers=h)
    assert r.status_code == 200
    assert r.json()["served"]["model_dir"] == str(MODEL_DIR)
    assert r.json()["previous"]["model_dir"] == str(EXPORTS / OTHER)  # a second rollback would undo it
    assert (await ask(100)).status_code == 200

    page = await client.get("/model", headers=h)
    assert page.status_code == 200 and "rollback-button" in page.text and "specialize-button" in page.text
    page = await client.get("/model", headers=auth_headers(plain))
    assert page.status_code == 200 and "specialize-button" not in page.text and "rollback-button" not in page.text


async def test_specialize_with_too_few_pairs_fails_with_a_message(admin_app):
    client, admin, _ = admin_app
    h = auth_headers(admin)
    r = await client.post("/api/specialize", headers=h)
    assert r.status_code == 202, r.text
    pid = client.app.state.specialize.proc.pid
    # niced (SPECIALIZE_NICE, 10 by default) once `nice` has exec'd the run: serving keeps priority on a shared CPU
    niceness = await wait_until_async(lambda: _niceness_of_python(pid), "the run's python started", BOUND_S, 0.05)
    assert niceness == [10]

    async def finished() -> dict | None:
        st = (await client.get("/api/specialize", headers=h)).json()
        return None if st["running"] else st

    st = await wait_until_async(finished, "the specialize run ended", BOUND_S, poll_s=0.5)
    assert st["state"] == "failed", st
    assert "too few verified pairs" in st["message"]
    assert "too few verified pairs" in st["log_tail"]
    assert (await client.get("/readyz")).json()["model"] == client.app.state.service.generator.model_id
