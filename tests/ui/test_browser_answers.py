"""Issue 12 in Debian's Chromium: what an answer offers (plain parse errors, progress and cancel, history and saved
questions, links that reproduce it, CSV, copy, Ctrl+Enter, highlighting, readable tables and charts, more rows), the
layout on a phone and on the dashboards, and the 404 page.

A real uvicorn serves the real model on a free loopback port with access control on; two keys show that a key sees
only its own history. Small screenshots go to reports/ui/. Any Content-Security-Policy violation or request to another
origin fails the test.
"""

import csv
import io
import re
from pathlib import Path

import pytest
import uvicorn
from tests_support import launch_chromium, start_in_thread, wait_until

from app.main import create_app
from bench.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SHOTS = Path(__file__).resolve().parents[2] / "reports" / "ui"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_db, generator):
    from tests_support import MODEL_DIR

    from app.auth.keys import KeyStore
    from app.core.config import Settings

    tmp = tmp_path_factory.mktemp("ui-answers")
    settings = Settings(
        database_url=f"sqlite:///{demo_db}",
        querylog_url=f"sqlite:///{tmp / 'querylog.sqlite'}",
        model_dir=MODEL_DIR,
        auth_disabled=False,
        api_keys_file=tmp / "api_keys.json",
    )
    keys = KeyStore(settings.api_keys_file)
    key, other = keys.create("analyst").key, keys.create("someone-else").key
    narrow = keys.create("narrow", ["customers"]).key
    app = create_app(settings, generator)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = start_in_thread(srv)
    yield {"url": f"http://127.0.0.1:{port}", "key": key, "other": other, "narrow": narrow, "app": app}
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(server, browser):
    """A logged-in page at 1280×900 that records CSP violations and requests to other origins."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server["url"])
    pg = context.new_page()
    problems = []
    pg.on("console", lambda m: "Content Security Policy" in m.text and problems.append(f"{m.text} {m.location}"))
    pg.on("request", lambda r: not r.url.startswith((server["url"], "data:", "blob:")) and problems.append(r.url))
    pg.goto(server["url"] + "/login")
    pg.fill("#key", server["key"])
    pg.click("#login-button")
    pg.wait_for_selector("#ask-form")
    yield pg
    context.close()
    assert problems == []


def run_sql(page, sql: str) -> None:
    """Run `sql` from the page's SQL editor (opening an answer's link first when there is no editor yet)."""
    if page.locator("textarea#sql").count() == 0:
        page.goto(page.url.split("/?")[0].rstrip("/") + "/?sql=SELECT%201")
        page.wait_for_selector("textarea#sql")
    old = page.locator("#result-card").element_handle()
    page.fill("textarea#sql", sql)
    page.click("#run-sql")
    page.wait_for_function("old => !old.isConnected", arg=old)  # the new answer replaced the old one
    page.wait_for_selector("#result-card, #result-error")
    wait_settled(page)


def wait_settled(page) -> None:
    """Wait until htmx has settled the swap (it copies the old element's classes onto a new one with the same id
    for a moment, e.g. the chart's bar/line switch)."""
    page.wait_for_function("() => !document.querySelector('.htmx-settling, .htmx-swapping')")


def shot(page, name: str, **kw) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path), **kw)
    assert path.stat().st_size < 200_000, f"{name} is {path.stat().st_size} bytes"


def test_a_parse_error_reads_as_one_sentence_and_the_link_reproduces_an_answer(server, page):
    url = server["url"]
    page.goto(url + "/?q=Customers+per+segment&sql=SELECT+segment%2C+COUNT(*)+FROM+customers+GROUP+BY+segment")
    page.wait_for_selector("#rows tbody tr")  # the link ran the SQL through the guard on opening
    assert page.input_value("#question") == "Customers per segment"
    assert page.inner_text("#asked") == "Customers per segment"
    link = page.get_attribute("#answer-link", "href")
    assert link.startswith("/?q=Customers+per+segment&sql=SELECT")
    run_sql(page, "SELECT name FROM customers WHERE")
    message = page.inner_text("#result-message")
    assert message.startswith("The SQL could not be read: it has a syntax error.")
    assert "Token" not in page.locator("#result-message").evaluate("e => e.firstChild.textContent")  # folded away
    assert not page.locator("#error-detail").evaluate("d => d.open")
    assert page.locator("#error-detail code").is_hidden()
    page.click("#error-detail summary")
    assert "line 1" in page.inner_text("#error-detail code")
    shot(page, "parse_error.png")
    # a link to a refused query refuses again: the guard runs on every reproduction
    page.goto(url + "/?sql=DROP+TABLE+customers")
    page.wait_for_selector("#result-card .badge.refused")


def test_a_zero_for_a_value_not_in_the_data_reads_as_empty_with_the_value_named(server, page):
    run_sql(page, "SELECT COUNT(*) FROM customers WHERE city = 'paris'")
    assert page.inner_text("#result-card .badge.empty") == "empty"
    assert page.inner_text("#result-card .badge.cat") == "value not in the data"
    message = page.inner_text("#result-message")
    assert "city = 'paris'" in message and "'Paris'" in message  # the value, and the spelling the data holds
    shot(page, "unmatched_value.png", clip={"x": 0, "y": 0, "width": 1280, "height": 420})
    run_sql(page, "SELECT COUNT(*) FROM orders WHERE status = 'cancelled' AND order_id < 0")
    assert page.inner_text("#result-card .badge.ok") == "ok"  # a value the data holds: the 0 is the answer


def test_rows_joined_on_columns_no_key_links_come_with_a_warning_to_check_the_join(server, page):
    run_sql(
        page,
        "SELECT c.name, SUM(p.amount) FROM customers c JOIN payments p ON c.customer_id = p.order_id GROUP BY c.name",
    )
    assert page.inner_text("#result-card .badge.unsure") == "unsure"  # the rows are shown, not as a success ...
    assert page.locator("#result-card .badge.ok").count() == 0
    assert page.inner_text("#result-card .badge.cat") == "check the join"  # ... but as an answer to check
    assert "customers.customer_id = payments.order_id" in page.inner_text("#result-message")
    assert "warn" in page.get_attribute("#result-message", "class")
    assert page.locator("#rows tbody tr").count() > 0
    shot(page, "unkeyed_join.png", clip={"x": 0, "y": 0, "width": 1280, "height": 420})


def test_progress_while_the_model_works_and_cancel_stops_it_on_the_server(server, page):
    import threading

    from anyio import to_thread

    url, app = server["url"], server["app"]
    service = app.state.service
    # Hold the question on the server once the model has written its SQL, until the test has looked and cancelled:
    # without the hold a fast answer could finish first and the page would have nothing in progress to show.
    release, held = threading.Event(), threading.Event()
    execute = service._guard_and_execute

    async def holding(sql, t0, allowed_tables=None):
        held.set()
        await to_thread.run_sync(release.wait, abandon_on_cancel=True)
        return await execute(sql, t0, allowed_tables)

    service._guard_and_execute = holding
    try:
        page.fill("#question", "Which customers placed the most orders in each region last year?")
        page.click("#ask-button")
        assert held.wait(120), "the question never reached the database step"
        page.wait_for_selector("#progress", state="visible")
        assert page.locator("#cancel-button").is_visible()
        page.wait_for_function("() => parseFloat(document.querySelector('#progress-elapsed').textContent) > 0")
        # The stage text for execution-guided candidates, as the page shows it (the service's report is unit-tested).
        page.route(
            "**/api/progress/*",
            lambda route: route.fulfill(json={"stage": "candidates", "candidate": 2, "candidates": 4, "elapsed_ms": 1}),
        )
        page.wait_for_selector("#progress-text >> text=trying candidate 2 of 4")
        shot(page, "progress.png", clip={"x": 0, "y": 0, "width": 1280, "height": 260})
        page.unroute("**/api/progress/*")
        rids = []
        page.on("request", lambda r: r.url.startswith(url + "/api/progress/") and rids.append(r.url.rsplit("/", 2)))
        page.click("#cancel-button")
        page.wait_for_selector("#result-cancelled")
        assert page.locator("#progress").is_hidden()
        assert rids and rids[-1][-1] == "cancel"
        # On the server: the request is gone from the progress board and the key's in-flight count, the queue empty.
        wait_until(
            lambda: not (app.state.auth.in_flight.counts or app.state.progress._entries or service.batcher.depth),
            "the cancelled question stopped running on the server",
            poll_s=0.1,
        )
        rid = rids[-1][-2]
        assert page.request.get(f"{url}/api/progress/{rid}").status == 404
    finally:
        release.set()
        service._guard_and_execute = execute


def test_history_lists_only_this_keys_questions_and_saved_questions_rerun(server, page):
    url = server["url"]
    marker = "SELECT name, city FROM customers WHERE city = 'Lisbon'"
    run_sql(page, marker)
    # another key's SQL, through the JSON API: it must not appear in this key's history
    other = page.request.post(
        url + "/sql", data={"sql": "SELECT 'other key was here' AS secret"}, headers={"X-API-Key": server["other"]}
    )
    assert other.ok, other.text()
    page.goto(url + "/history")
    history = page.inner_text("#history")
    assert marker.split(" WHERE")[0] in history and "other key was here" not in history
    assert page.locator("#history .badge").first.inner_text() in ("ok", "empty")
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", history)
    # save an answer under a name, then re-run it from the list
    page.goto(
        url + "/?sql=SELECT+segment%2C+COUNT(*)+AS+customers+FROM+customers+GROUP+BY+segment&q=Customers+by+segment"
    )
    page.wait_for_selector("#save-form")
    page.fill("#save-name", "Customers by segment")
    page.click("#save-button")
    page.wait_for_selector("#saved-message >> text=Saved as")
    page.goto(url + "/history")
    page.click("#saved .saved-link >> text=Customers by segment")
    page.wait_for_selector("#rows tbody tr")
    assert page.inner_text("#asked") == "Customers by segment" and page.locator("#rows tbody tr").count() >= 2
    page.goto(url + "/history")
    shot(page, "history.png")
    page.click("#saved button.link-button")  # delete
    page.wait_for_selector("#saved-none")


def test_csv_copy_ctrl_enter_and_highlighted_sql(server, page):
    url = server["url"]
    run_sql(
        page,
        """SELECT '=1+1' AS formula, 'a,"b"' AS quoted, '-2' AS minus, '@x' AS at, -5 AS n, 'line
break' AS multi""",
    )
    with page.expect_download() as info:
        page.click("#download-csv")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["formula", "quoted", "minus", "at", "n", "multi"]
    assert rows[1] == ["'=1+1", 'a,"b"', "'-2", "'@x", "-5", "line\nbreak"]
    assert info.value.suggested_filename.endswith(".csv")
    # the same guard and allow-list: a key limited to customers cannot export orders
    refused = page.request.get(
        url + "/api/export.csv?sql=SELECT+*+FROM+orders", headers={"X-API-Key": server["narrow"]}
    )
    assert refused.status == 400, refused.text()
    capped = page.request.get(url + "/api/export.csv?sql=SELECT+*+FROM+orders")
    assert capped.ok and len(list(csv.reader(io.StringIO(capped.text())))) == 1 + 200  # header + the row cap
    # Copy SQL puts the editor's text on the clipboard
    page.click("#copy-sql")
    page.wait_for_selector("#copy-sql >> text=Copied")
    assert "'=1+1' AS formula" in page.evaluate("navigator.clipboard.readText()")
    # the SQL is laid out and highlighted; Ctrl+Enter runs the edited SQL
    run_sql(page, "select segment, count(*) from customers group by segment order by 2 desc")
    assert "\nFROM customers" in page.input_value("textarea#sql")  # pretty-printed by the server
    assert (
        page.locator(".sql-editor pre .t-kw").count() >= 5
        and page.locator(".sql-editor pre .t-kw").first.inner_text() == "SELECT"
    )
    old = page.locator("#result-card").element_handle()
    page.fill("textarea#sql", "SELECT COUNT(*) FROM orders")
    page.press("textarea#sql", "Control+Enter")
    page.wait_for_function("old => !old.isConnected", arg=old)
    page.wait_for_selector("#rows tbody tr")
    assert page.inner_text("#rows tbody td") == "5,000"
    shot(page, "sql_editor.png", clip={"x": 0, "y": 0, "width": 1280, "height": 560})


def test_results_read_well_charts_switch_and_more_rows(server, page):
    run_sql(page, "SELECT c.segment, SUM(p.amount), COUNT(*) FROM payments p JOIN orders o ON o.order_id = p.order_id "
                  "JOIN customers c ON c.customer_id = o.customer_id GROUP BY c.segment")  # fmt: skip
    headers = page.locator("#rows thead th").all_inner_texts()
    assert headers == ["segment", "Sum of amount", "Count"]
    amount = page.locator("#rows tbody tr").first.locator("td").nth(1).inner_text()
    assert re.fullmatch(r"\d{1,3}(,\d{3})+\.\d{2}", amount), amount  # thousands separators, two decimals
    assert page.locator("#chart").get_attribute("class").split() == ["chart", "show-bar"]  # categories: bars
    # a time series opens as a line, in time order, and switches to bars
    run_sql(page, "SELECT strftime('%Y-%m', order_date) AS month, COUNT(*) AS orders FROM orders "
                  "GROUP BY 1 ORDER BY 1 DESC LIMIT 12")  # fmt: skip
    assert page.locator("#chart-line").is_visible() and page.locator("#chart-bars").is_hidden()
    assert page.locator("#chart-line circle").count() == 12
    first, last = (
        page.locator("#chart-line .ticks span").first.inner_text(),
        page.locator("#chart-line .ticks span").last.inner_text(),
    )
    assert first < last  # oldest month on the left although the rows are newest first
    shot(page, "chart_line.png")
    page.click("button.chart-kind[data-kind=bar]")
    assert page.locator("#chart-bars").is_visible() and page.locator("#chart-line").is_hidden()
    # capped: the total is counted, and more rows load below
    run_sql(page, "SELECT order_id, order_date, status FROM orders ORDER BY order_id")
    assert page.inner_text("#row-count") == "· first 200 of 5,000 rows"
    page.click("#load-more")
    page.wait_for_function("() => document.querySelectorAll('#rows tbody tr').length === 400")
    assert page.locator("#rows tbody tr").nth(200).locator("td").first.inner_text() == "201"
    page.click("#load-more")
    page.wait_for_function("() => document.querySelectorAll('#rows tbody tr').length === 600")


def test_phone_header_wraps_and_dashboards_fit_with_real_buckets(server, page):
    url = server["url"]
    long_sql = (
        "SELECT "
        + ", ".join(f"customer_id AS a_rather_long_column_alias_{i}" for i in range(60))
        + " FROM customers LIMIT 1"
    )
    run_sql(page, long_sql)
    page.goto(url + "/dashboards?hours=1")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the dashboards are {width} px wide at 1280"
    bars = page.locator("#chart-success rect.bucket")
    assert bars.count() == 24  # every bucket of the window has its slot on the time axis
    drawn = [float(h) for h in bars.evaluate_all("rs => rs.map(r => r.getAttribute('height'))")]
    assert sum(h > 0 for h in drawn) >= 1 and drawn[0] == 0  # requests only in the last minutes: one bucket has them
    assert page.locator("#chart-latency rect.bucket").count() >= 2
    assert "buckets of 2.5 min" in page.inner_text("#axis-note")
    assert page.locator("#chart-success .ticks span").count() == 3
    shot(page, "dashboards.png")
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", "/dashboards", "/history"):
        page.goto(url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a phone"
        box = page.locator("header.top nav").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.goto(url + "/")
    shot(page, "phone_ask.png")


def test_unknown_pages_get_an_html_404_and_api_clients_json(server, page):
    url = server["url"]
    response = page.goto(url + "/no/such/page")
    assert response.status == 404 and "text/html" in response.headers["content-type"]
    assert "/no/such/page" in page.inner_text("#not-found")
    page.click("#not-found a >> text=Ask a question")
    page.wait_for_selector("#ask-form")
    api = page.request.get(url + "/no/such/page", headers={"Accept": "application/json"})
    assert api.status == 404 and api.json() == {"detail": "Not Found"}
