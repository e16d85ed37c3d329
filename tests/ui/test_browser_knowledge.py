"""Issue 11 in Debian's Chromium: 👎 with a correction from the SQL editor, the verified example listed, a close
paraphrase answered with it (the note says so and the SQL follows it), 👍, editing and deleting examples, and the
glossary edited as YAML (entries shown escaped).

A real uvicorn serves the real model on a free loopback port with access control on. Any Content-Security-Policy
violation or request to another origin fails the test.
"""

from pathlib import Path

import pytest
import uvicorn
from tests_support import launch_chromium, start_in_thread

from app.main import create_app
from bench.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SHOTS = Path(__file__).resolve().parents[2] / "reports" / "ui"
FIX = "SELECT COUNT(*) FROM customers WHERE segment = 'wholesale'"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_db, generator):
    from tests_support import MODEL_DIR

    from app.auth.keys import KeyStore
    from app.core.config import Settings

    tmp = tmp_path_factory.mktemp("ui-knowledge")
    settings = Settings(
        database_url=f"sqlite:///{demo_db}",
        querylog_url=f"sqlite:///{tmp / 'querylog.sqlite'}",
        model_dir=MODEL_DIR,
        auth_disabled=False,
        api_keys_file=tmp / "api_keys.json",
        glossary_token_budget=300,  # off by default (it hurt the served model); the page shows what was used
    )
    key = KeyStore(settings.api_keys_file).create("analyst").key
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings, generator), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = start_in_thread(srv)
    yield f"http://127.0.0.1:{port}", key
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    url, key = server
    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = []
        pg.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
        pg.on("request", lambda r: not r.url.startswith((url, "data:", "blob:")) and problems.append(r.url))
        pg.goto(url + "/login")
        pg.fill("#key", key)
        pg.click("#login-button")
        pg.wait_for_selector("#ask-form")
        yield pg
        assert problems == []
        browser.close()


def ask(page, url: str, question: str) -> None:
    page.goto(url + "/")
    page.fill("#question", question)
    page.click("#ask-button")
    page.wait_for_selector("#result-card #feedback", timeout=120_000)


def test_a_correction_becomes_a_verified_example_that_answers_a_paraphrase(server, page):
    url, _ = server
    ask(page, url, "How many wholesale customers are there?")
    assert page.locator("#context-note").count() == 0  # nothing learnt yet: the plain prompt
    page.fill("textarea#sql", FIX)  # the existing SQL editor carries the correction
    page.click("#thumbs-down")
    page.wait_for_selector("#feedback-message.saved")
    assert "saved as the verified answer" in page.inner_text("#feedback-message")

    page.click("#feedback-message a")  # "See it": the examples page lists the pair
    page.wait_for_selector(".example-card")
    assert page.locator(".example-card").count() == 1
    assert page.input_value(".example-question") == "How many wholesale customers are there?"
    assert page.input_value(".example-sql") == FIX

    ask(page, url, "How many wholesale customers do we have?")
    assert page.inner_text("#context-note").strip() == "Used 1 verified example"
    sql = " ".join(page.input_value("textarea#sql").split())
    assert "segment = 'wholesale'" in sql, sql  # the answer follows the verified example
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#result-card").screenshot(path=str(SHOTS / "verified_example_used.png"))

    page.click("#thumbs-up")  # right this time: stored too, the question next to the corrected one
    page.wait_for_selector("#feedback-message.saved")
    page.goto(url + "/examples")
    assert page.locator(".example-card").count() == 2


def test_examples_are_edited_through_the_guard_and_deleted(server, page):
    url, _ = server
    page.goto(url + "/examples")
    card = page.locator(".example-card").first
    card.locator(".example-sql").fill("DROP TABLE customers")
    card.locator(".example-save").click()
    page.wait_for_selector(".example-card .example-error")
    assert "not saved" in page.inner_text(".example-error")
    card = page.locator(".example-card").first
    card.locator(".example-question").fill("Wholesale customers <b>count</b>")
    card.locator(".example-sql").fill("SELECT COUNT(*) FROM customers WHERE segment = 'wholesale' LIMIT 200")
    card.locator(".example-save").click()
    page.wait_for_selector(".example-card .example-saved")
    page.reload()
    first = page.locator(".example-card").first
    assert first.locator(".example-question").input_value() == "Wholesale customers <b>count</b>"
    assert first.locator(".example-sql").input_value() == FIX  # the guard's row cap is not part of the example
    for _ in range(2):
        page.locator(".example-card .example-delete").first.click()
        page.wait_for_function("n => document.querySelectorAll('.example-card').length === n", arg=_ ^ 1)
    page.reload()
    assert page.locator("#no-examples").count() == 1


def test_the_glossary_is_edited_as_yaml_and_shown_escaped(server, page):
    url, _ = server
    page.goto(url + "/glossary")
    assert "No entries yet" in page.inner_text("#glossary-entries")
    page.fill("#glossary-yaml", "terms:\n  - term: revenue\n    definition: [unclosed\n")
    page.click("#glossary-save")
    page.wait_for_selector("#glossary-error")
    assert "not valid YAML" in page.inner_text("#glossary-error")
    assert "unclosed" in page.input_value("#glossary-yaml")  # the text stays, to be fixed
    page.fill(
        "#glossary-yaml",
        "terms:\n"
        "  - term: wholesale customer\n"
        "    definition: a business customer <script>alert(1)</script>\n"
        "    sql: customers.segment = 'wholesale'\n"
        "columns:\n"
        "  - column: customers.segment\n"
        "    description: retail or wholesale\n",
    )
    page.click("#glossary-save")
    page.wait_for_selector("#glossary-message")
    rows = page.locator("#glossary-entries tbody tr")
    assert rows.count() == 2
    assert "<script>alert(1)</script>" in rows.first.inner_text()  # shown as text
    assert page.locator("#glossary-entries script").count() == 0
    ask(page, url, "How many wholesale customers are there?")
    assert "glossary: wholesale customer, customers.segment" in page.inner_text("#context-note")
