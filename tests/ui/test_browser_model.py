"""The Model page in Debian's Chromium, as an admin: Specialize now starts a run, the page follows it (htmx polling:
stage, progress bar, the log's tail) until it ends; with too few verified examples it ends failed and says why. After
a swap (through the API) the header names the served model and Roll back returns to the one before.

A real uvicorn serves the real model on a free loopback port with access control on. Any Content-Security-Policy
violation or request to another origin fails the test.
"""

from pathlib import Path

import httpx
import pytest
import uvicorn
from tests_support import MODEL_DIR, auth_headers, launch_chromium, start_in_thread

from app.main import create_app
from bench.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SHOTS = Path(__file__).resolve().parents[2] / "reports" / "ui"
OTHER = MODEL_DIR.parent / ("int8" if MODEL_DIR.name != "int8" else "fp32")


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_db, generator):
    from app.auth.keys import KeyStore
    from app.core.config import Settings

    tmp = tmp_path_factory.mktemp("ui-model")
    settings = Settings(
        database_url=f"sqlite:///{demo_db}",
        querylog_url=f"sqlite:///{tmp / 'querylog.sqlite'}",
        model_dir=MODEL_DIR,
        auth_disabled=False,
        api_keys_file=tmp / "api_keys.json",
        model_exports_dir=MODEL_DIR.parent,
        specialize_dir=tmp / "runs",
    )
    key = KeyStore(settings.api_keys_file).create("ops", admin=True).key
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings, generator), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = start_in_thread(srv)
    yield f"http://127.0.0.1:{port}", key
    srv.should_exit = True
    thread.join(30)


def test_specialize_button_follows_the_run_and_rollback_returns_the_previous_model(server):
    from playwright.sync_api import expect, sync_playwright

    url, key = server
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = []
        page.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
        page.on("request", lambda r: not r.url.startswith((url, "data:", "blob:")) and problems.append(r.url))
        page.goto(url + "/login")
        page.fill("#key", key)
        page.click("#login-button")
        page.wait_for_selector("#ask-form")

        page.goto(url + "/model")
        assert page.text_content("#specialize-state").strip() == "No specialize run yet."
        assert page.query_selector("#rollback-button") is None  # nothing to roll back to yet
        page.click("#specialize-button")
        page.wait_for_selector("#specialize-log")  # the run's fragment, then polled until the run ends
        expect(page.locator("#specialize-state")).to_contain_text("failed", timeout=300_000)
        assert "too few verified pairs" in page.text_content("#specialize-state")
        assert "too few verified pairs" in page.text_content("#specialize-log")
        expect(page.locator("#specialize-button")).to_be_enabled()  # it can be started again
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "model.png"), full_page=True)

        r = httpx.post(url + "/api/model/load", json={"path": str(OTHER)}, headers=auth_headers(key), timeout=300)
        assert r.status_code == 200, r.text
        page.goto(url + "/model")
        assert page.text_content("header .model") == r.json()["model_id"]
        loaded = r.json()["served"]["quantization"]
        assert loaded in page.text_content("#model-info")
        page.click("#rollback-button")
        expect(page.locator("#model-info")).not_to_contain_text(loaded, timeout=120_000)
        assert "Before it:" in page.text_content("#model-info")  # the loaded one, kept for going forward again
        served = httpx.get(url + "/api/model", headers=auth_headers(key)).json()["served"]
        assert served["model_dir"] == str(MODEL_DIR)
        assert problems == []
        browser.close()
