"""The browser UI in Debian's Chromium driven by Playwright: log in with an API key, ask, see rows and SQL, open
dashboards and schema, log out.

The app is served by a real uvicorn on a free loopback port, with the real model and access control on; screenshots
go to reports/. The page fails a test if the browser reports a Content-Security-Policy violation.
"""

from pathlib import Path

import pytest
import uvicorn
from tests_support import launch_chromium, start_in_thread

from app.main import create_app
from bench.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]
REPORTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_db, generator):
    from tests_support import MODEL_DIR

    from app.auth.keys import KeyStore
    from app.core.config import Settings

    tmp = tmp_path_factory.mktemp("ui")
    settings = Settings(
        database_url=f"sqlite:///{demo_db}",
        querylog_url=f"sqlite:///{tmp / 'querylog.sqlite'}",
        model_dir=MODEL_DIR,
        auth_disabled=False,
        api_keys_file=tmp / "api_keys.json",
    )
    key = KeyStore(settings.api_keys_file).create("browser").key
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings, generator), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = start_in_thread(srv)
    yield f"http://127.0.0.1:{port}", key
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.csp_violations = []
        pg.on("console", lambda m: "Content Security Policy" in m.text and pg.csp_violations.append(m.text))
        yield pg
        assert pg.csp_violations == []
        browser.close()


def test_login_with_a_key(server, page):
    url, key = server
    page.goto(url + "/")
    assert page.url.startswith(url + "/login")  # redirected: not logged in
    page.fill("#key", "qw_not-a-key")
    page.click("#login-button")
    assert "not valid" in page.inner_text("#login-error")
    page.fill("#key", key)
    page.click("#login-button")
    page.wait_for_selector("#ask-form")
    assert page.url == url + "/"
    assert page.inner_text("#logout-form .who") == "browser"
    assert page.csp_violations == []


def test_ask_a_question_and_see_rows_sql_and_timing(server, page):
    url, _ = server
    REPORTS.mkdir(exist_ok=True)
    page.goto(url + "/")
    assert page.locator("#examples .example").count() >= 3
    page.fill("#question", "How many customers are there?")
    page.click("#ask-button")
    page.wait_for_selector("#result-card", timeout=120_000)
    assert page.locator("#result-card .badge.ok").count() == 1, page.inner_text("#result")
    assert page.locator("#rows tbody tr").count() >= 1
    sql = page.input_value("textarea#sql")
    assert sql.upper().startswith("SELECT") and "customers" in sql.lower()
    assert "ms total" in page.inner_text("#timing")
    page.screenshot(path=str(REPORTS / "ui_ask.png"), full_page=True)


def test_edit_sql_and_rerun_through_the_guard(server, page):
    url, _ = server
    page.goto(url + "/")
    page.fill("#question", "How many customers are there?")
    page.click("#ask-button")
    page.wait_for_selector("textarea#sql", timeout=120_000)
    page.fill("textarea#sql", "SELECT segment, COUNT(*) AS customers FROM customers GROUP BY segment")
    page.click("form.sql button")
    page.wait_for_selector("#chart .bar-row")
    assert page.locator("#rows tbody tr").count() >= 2
    page.fill("textarea#sql", "DROP TABLE customers")
    page.click("form.sql button")
    page.wait_for_selector("#result-card .badge.refused")
    assert "read-only" in page.inner_text("#result-message").lower()
    assert page.locator("#result-card .badge").count() == 1  # "refused", once: no second "refused" badge


def test_empty_and_null_answers_read_as_such_and_write_requests_are_declined(server, page):
    url, _ = server
    page.goto(url + "/")
    page.fill("#question", "Delete all customers")
    page.click("#ask-button")
    page.wait_for_selector("#result-card .badge.refused", timeout=120_000)
    assert "asks to change data" in page.inner_text("#result-card .meta")
    assert "only reads" in page.inner_text("#result-message")
    assert page.locator("textarea#sql").count() == 0  # nothing was written, nothing ran
    page.fill("#question", "How many customers are there?")
    page.click("#ask-button")
    page.wait_for_selector("textarea#sql", timeout=120_000)
    page.fill("textarea#sql", "SELECT MAX(customer_id) FROM customers WHERE 1 = 0")
    page.click("form.sql button")
    page.wait_for_selector("#result-card .badge.empty")
    assert "only NULLs" in page.inner_text("#result-card .meta")
    assert "NULL" in page.inner_text("#result-message") and page.locator("#result-card .badge.ok").count() == 0
    # no text filter to blame (a value the data lacks reads "value not in the data": test_browser_answers.py)
    page.fill("textarea#sql", "SELECT name FROM customers WHERE customer_id < 0")
    page.click("form.sql button")
    page.locator("#result-message", has_text="No rows matched").wait_for()  # the new answer, not the last one
    assert page.locator("#result-card .badge.empty").count() == 1 and "no rows" in page.inner_text("#result-card .meta")


def test_an_example_question_fills_the_box_and_asks_it(server, page):
    url, _ = server
    page.goto(url + "/")
    example = page.locator("#examples .example").first
    text = example.inner_text().strip()
    example.click()
    page.wait_for_selector("#result-card", timeout=120_000)
    assert page.input_value("#question") == text  # done by /static/ui.js: no inline handler


def test_dashboards_and_schema_pages(server, page):
    url, _ = server
    page.goto(url + "/dashboards")
    assert int(page.inner_text("#stat-requests")) >= 3
    assert page.locator("#chart-success rect.bucket").count() == 24  # one slot per bucket of the window
    assert page.locator("#chart-latency rect.bucket").count() >= 2
    assert "refused" in page.inner_text("#top-errors")
    page.screenshot(path=str(REPORTS / "ui_dashboards.png"), full_page=True)
    page.goto(url + "/schema")
    assert page.locator("#schema-tables .tcard").count() == 9
    page.screenshot(path=str(REPORTS / "ui_schema.png"), full_page=True)


def test_logout_then_htmx_posts_send_the_page_to_login(server, page):
    url, key = server
    page.goto(url + "/")
    page.click("#logout-button")
    page.wait_for_selector("#login-form")
    page.goto(url + "/schema")
    assert page.url.startswith(url + "/login")
    page.fill("#key", key)
    page.click("#login-button")
    page.wait_for_selector("#schema-tables")  # back where it was going
    # The session ends (a logout in another tab) while the ask page is open: its next htmx post goes to /login.
    page.goto(url + "/")
    page.context.clear_cookies()
    page.fill("#question", "How many customers are there?")
    page.click("#ask-button")
    page.wait_for_url(url + "/login", timeout=30_000)


def test_api_docs_render_from_this_server_alone(server, page):
    """The browser here has no internet: Swagger UI and ReDoc render only if every asset comes from the app."""
    url, _ = server
    other_origins = []
    page.on("request", lambda r: not r.url.startswith((url, "data:", "blob:")) and other_origins.append(r.url))
    page.goto(url + "/docs")
    page.wait_for_selector(".opblock-summary-path >> text=/query", timeout=30_000)
    page.goto(url + "/redoc")
    page.wait_for_selector("text=Ask a business question", timeout=30_000)
    assert other_origins == []
