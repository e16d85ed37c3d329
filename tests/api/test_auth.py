"""Access control and HTTP hardening on the real app (real model, demo SQLite): keys, UI login, per-key rate limits
and table allow-lists, body limits, CORS, security headers."""

import logging
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tests_support import app_client, auth_headers, with_key

from app.auth.keys import KeyStore
from app.auth.sessions import COOKIE_NAME

pytestmark = pytest.mark.slow

PROTECTED_API = [
    ("POST", "/query", {"question": "How many customers are there?"}),
    ("POST", "/sql", {"sql": "SELECT 1"}),
    ("GET", "/api/schema", None),
    ("POST", "/api/schema/refresh", None),
    ("GET", "/api/examples", None),
    ("GET", "/api/stats", None),
    ("GET", "/api/dashboard", None),
]
UI_PAGES = ["/", "/dashboards", "/schema"]
UI_POSTS = [("/ui/ask", {"question": "How many customers are there?"}), ("/ui/sql", {"sql": "SELECT 1"})]
SALES_TABLES = ("orders", "customers")


@pytest.fixture
async def secured(settings_for, demo_db, generator):
    """Auth on, two keys: `full` (every table) and `sales` (orders and customers only)."""
    settings, full = with_key(settings_for(f"sqlite:///{demo_db}", auth_disabled=False), "full")
    _, sales = with_key(settings, "sales", tables=SALES_TABLES)
    async with app_client(settings, generator) as c:
        c.keys = {"full": full, "sales": sales}  # type: ignore[attr-defined]
        c.settings = settings  # type: ignore[attr-defined]
        yield c


async def _call(client, method, path, body=None, headers=None):
    return await client.request(method, path, json=body, headers=headers or {})


async def test_protected_api_routes_answer_401_without_or_with_a_wrong_key(secured):
    for method, path, body in PROTECTED_API:
        for headers, fragment in (
            ({}, "authentication required"),
            (auth_headers("qw_wrong"), "not valid"),
            ({"X-API-Key": secured.keys["full"] + "x"}, "not valid"),
            ({"Authorization": f"Basic {secured.keys['full']}"}, "not valid"),
        ):
            r = await _call(secured, method, path, body, headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert fragment in r.json()["detail"].lower()
    metrics = (await secured.get("/metrics")).text
    assert re.search(r"^querywise_auth_failures_total (\d+)", metrics, re.M).group(1) == str(4 * len(PROTECTED_API))


async def test_a_key_in_either_header_opens_the_api(secured):
    key = secured.keys["full"]
    for headers in (auth_headers(key), {"X-API-Key": key}, {"authorization": f"bearer {key}"}):
        for method, path, body in PROTECTED_API[1:]:  # /query (the model) once below
            r = await _call(secured, method, path, body, headers)
            assert r.status_code == 200, (method, path, r.text)
    r = await secured.post("/query", json={"question": "How many customers are there?"}, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


async def test_open_routes_need_no_key(secured):
    for path in ("/healthz", "/readyz", "/metrics", "/static/style.css", "/static/ui.js", "/docs", "/openapi.json"):
        assert (await secured.get(path)).status_code == 200, path
    assert (await secured.get("/login")).status_code == 200


async def test_ui_without_login_redirects_pages_and_tells_htmx_to_go_to_login(secured):
    for path in UI_PAGES:
        r = await secured.get(path + "?hours=1" if path == "/dashboards" else path)
        assert r.status_code == 303, path
        target = urlsplit(r.headers["location"])
        assert target.path == "/login" and parse_qs(target.query)["next"][0].startswith(path)
    for path, form in UI_POSTS:
        r = await secured.post(path, data=form, headers={"HX-Request": "true"})
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/login", path
        assert (await secured.post(path, data=form)).status_code == 303
    # A key header opens the UI too (scripts), but a wrong one does not.
    assert (await secured.get("/", headers={"X-API-Key": secured.keys["full"]})).status_code == 200
    assert (await secured.get("/", headers={"X-API-Key": "qw_wrong"})).status_code == 303


async def test_login_sets_a_strict_httponly_cookie_without_the_key_and_logout_ends_it(secured):
    key = secured.keys["full"]
    bad = await secured.post("/login", data={"key": "qw_wrong", "next": "/schema"})
    assert bad.status_code == 401 and "not valid" in bad.text and COOKIE_NAME not in bad.headers.get("set-cookie", "")
    r = await secured.post("/login", data={"key": key, "next": "/schema"})
    assert r.status_code == 303 and r.headers["location"] == "/schema"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert key not in token and key[3:] not in token and KeyStore(secured.settings.api_keys_file).verify(token) is None

    jar = {COOKIE_NAME: token}
    page = await secured.get("/", cookies=jar)
    assert page.status_code == 200 and 'id="logout-form"' in page.text and ">full<" in page.text
    ok = await secured.post("/ui/sql", data={"sql": "SELECT 1 AS one"}, cookies=jar, headers={"HX-Request": "true"})
    assert ok.status_code == 200 and 'id="result-card"' in ok.text
    # The session opens the JSON API too (the schema page's re-read button posts there).
    assert (await secured.post("/api/schema/refresh", cookies=jar)).status_code == 200
    assert (await secured.get("/login", cookies=jar)).status_code == 303  # already logged in

    # CSRF: a state-changing post carried by the cookie from another origin is refused; from this one it passes.
    evil = {"Origin": "https://evil.example", "HX-Request": "true"}
    assert (await secured.post("/ui/sql", data={"sql": "SELECT 1"}, cookies=jar, headers=evil)).status_code == 403
    same = {"Origin": "http://test", "HX-Request": "true"}
    assert (await secured.post("/ui/sql", data={"sql": "SELECT 1"}, cookies=jar, headers=same)).status_code == 200
    cross_login = await secured.post("/login", data={"key": key}, headers={"Origin": "https://evil.example"})
    assert cross_login.status_code == 403

    out = await secured.post("/logout", cookies=jar)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert f'{COOKIE_NAME}=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    assert (await secured.get("/", cookies=jar)).status_code == 303  # the old token is dead on this server


async def test_login_next_is_never_an_open_redirect(secured):
    for target in ("//evil.example/x", "https://evil.example", "\\\\evil", "javascript:alert(1)"):
        r = await secured.post("/login", data={"key": secured.keys["full"], "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/", target


async def test_revoking_a_key_stops_its_api_calls_and_its_sessions_without_a_restart(secured):
    key = secured.keys["sales"]
    token = (await secured.post("/login", data={"key": key})).headers["set-cookie"].split(";")[0].split("=", 1)[1]
    assert (await secured.get("/api/stats", headers={"X-API-Key": key})).status_code == 200
    assert (await secured.get("/", cookies={COOKIE_NAME: token})).status_code == 200
    KeyStore(secured.settings.api_keys_file).revoke("sales")  # as `python -m app.keys revoke sales` does
    assert (await secured.get("/api/stats", headers={"X-API-Key": key})).status_code == 401
    assert (await secured.get("/", cookies={COOKIE_NAME: token})).status_code == 303
    assert (await secured.get("/api/stats", headers={"X-API-Key": secured.keys["full"]})).status_code == 200


async def test_sales_key_cannot_read_employees(secured):
    sales, full = {"X-API-Key": secured.keys["sales"]}, {"X-API-Key": secured.keys["full"]}
    for sql in (
        "SELECT * FROM employees",
        "SELECT o.order_id FROM orders o JOIN employees e ON e.employee_id = o.employee_id",
        "SELECT count(*) FROM orders WHERE customer_id IN (SELECT employee_id FROM employees)",
        "WITH e AS (SELECT * FROM main.EMPLOYEES) SELECT * FROM e",
    ):
        body = (await secured.post("/sql", json={"sql": sql}, headers=sales)).json()
        assert body["status"] == "refused", (sql, body)
        assert "employees" in body["message"] and body["rows"] == [] and body["execute_ms"] is None
    ok = (await secured.post("/sql", json={"sql": "SELECT count(*) FROM orders"}, headers=sales)).json()
    assert ok["status"] == "ok"
    assert (await secured.post("/sql", json={"sql": "SELECT count(*) FROM employees"}, headers=full)).json()[
        "status"
    ] == "ok"

    schema = (await secured.get("/api/schema", headers=sales)).json()
    assert {t["name"] for t in schema["tables"]} == set(SALES_TABLES)
    assert "employees" not in schema["prompt_text"] and "employees" not in str(schema["tables"])
    assert "employees" in (await secured.get("/api/schema", headers=full)).json()["prompt_text"]
    examples = (await secured.get("/api/examples", headers=sales)).json()["examples"]
    assert examples and not any("employee" in q.lower() or "salary" in q.lower() for q in examples)
    page = (await secured.get("/schema", headers=sales)).text
    assert "<h3>orders</h3>" in page and "employees" not in page

    # What the model is shown for this key, and what happens when it is asked about employees anyway.
    service = secured.app.state.service
    prompt_schema = service.prompter.schema_text_for(
        "How many employees are there?", service.generator.count_tokens, frozenset(SALES_TABLES)
    )
    assert prompt_schema.splitlines()[0].startswith(("orders(", "customers(")) and "employees" not in prompt_schema
    body = (await secured.post("/query", json={"question": "How many employees are there?"}, headers=sales)).json()
    assert body["status"] != "ok" or "employees" not in body["sql"].lower(), body
    ui = await secured.post("/ui/sql", data={"sql": "SELECT * FROM employees"}, headers=sales)
    assert ui.status_code == 200 and "badge refused" in ui.text


async def test_rate_limit_answers_429_with_retry_after_per_key(settings_for, demo_db, generator):
    base = settings_for(f"sqlite:///{demo_db}", auth_disabled=False, rate_limit_per_minute=6, rate_limit_burst=3)
    settings, a = with_key(base, "a")
    _, b = with_key(settings, "b")
    _, tight = with_key(settings, "tight", rate_limit_per_minute=1, rate_limit_burst=1)
    async with app_client(settings, generator) as c:
        codes = [
            (await c.post("/sql", json={"sql": "SELECT 1"}, headers=auth_headers(a))).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 200]
        r = await c.post("/sql", json={"sql": "SELECT 1"}, headers=auth_headers(a))
        assert r.status_code == 429
        assert r.headers["retry-after"].isdigit() and 1 <= int(r.headers["retry-after"]) <= 10
        assert "rate limit" in r.json()["detail"].lower()
        # The question route shares the key's bucket; another key has its own; a per-key override is tighter.
        assert (await c.post("/query", json={"question": "x"}, headers=auth_headers(a))).status_code == 429
        assert (await c.post("/sql", json={"sql": "SELECT 1"}, headers=auth_headers(b))).status_code == 200
        assert (await c.post("/sql", json={"sql": "SELECT 1"}, headers=auth_headers(tight))).status_code == 200
        t2 = await c.post("/sql", json={"sql": "SELECT 1"}, headers=auth_headers(tight))
        assert t2.status_code == 429 and int(t2.headers["retry-after"]) >= 50
        # UI posts get the result fragment (htmx swaps 429s in), with Retry-After too.
        for _ in range(3):  # b has 2 of its 3 tokens left
            ui = await c.post("/ui/sql", data={"sql": "SELECT 1"}, headers={**auth_headers(b), "HX-Request": "true"})
        assert ui.status_code == 429 and 'id="result-error"' in ui.text and "Rate limit" in ui.text
        assert ui.headers["retry-after"].isdigit()
        metrics = (await c.get("/metrics")).text
        assert 'querywise_rate_limited_total{route="/sql"} 2.0' in metrics
        assert 'querywise_rate_limited_total{route="/query"} 1.0' in metrics
        assert 'querywise_rate_limited_total{route="/ui/sql"} 1.0' in metrics


async def test_rate_limit_without_auth_is_per_client_address(settings_for, demo_db, generator):
    settings = settings_for(f"sqlite:///{demo_db}", rate_limit_per_minute=6, rate_limit_burst=2)
    async with app_client(settings, generator) as c:
        codes = [(await c.post("/sql", json={"sql": "SELECT 1"})).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


async def test_bodies_over_the_limit_get_413_by_length_or_by_counting(settings_for, demo_db, generator):
    settings = settings_for(f"sqlite:///{demo_db}", max_body_bytes=2_000)
    async with app_client(settings, generator) as c:
        big = {"sql": "SELECT 1 -- " + "x" * 3_000}
        r = await c.post("/sql", json=big)
        assert r.status_code == 413 and "too large" in r.json()["detail"] and "2000" in r.json()["detail"]
        assert r.headers["x-content-type-options"] == "nosniff"

        async def chunks():  # no Content-Length: the middleware must count what arrives
            for _ in range(10):
                yield b"x" * 500

        streamed = await c.post("/sql", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        lying = await c.post("/sql", content=b"{}" * 1_500, headers={"content-length": "10"})
        assert lying.status_code in (400, 413)  # never reaches the app with a cut body
        bad = await c.post("/sql", content=b"{}", headers={"content-length": "ten"})
        assert bad.status_code == 400 and "Content-Length" in bad.json()["detail"]
        assert (await c.post("/sql", json={"sql": "SELECT 1"})).status_code == 200  # small bodies pass
        ui = await c.post("/ui/ask", data={"question": "x" * 600})  # under the body limit, over the question limit
        assert ui.status_code == 200 and "too long" in ui.text


async def test_cors_is_closed_by_default_and_opens_only_to_listed_origins(settings_for, demo_db, generator):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with app_client(settings_for(f"sqlite:///{demo_db}"), generator) as c:
        r = await c.options("/query", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = await c.post("/sql", json={"sql": "SELECT 1"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    settings = settings_for(f"sqlite:///{demo_db}", cors_origins=["https://app.example"])
    async with app_client(settings, generator) as c:
        ok = await c.options("/query", headers={**preflight, "Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        no = await c.options("/query", headers=preflight)
        assert "access-control-allow-origin" not in no.headers


async def test_security_headers_and_a_csp_the_pages_actually_satisfy(secured):
    key = {"X-API-Key": secured.keys["full"]}
    await secured.post("/sql", json={"sql": "SELECT segment, count(*) FROM customers GROUP BY segment"}, headers=key)
    for path in ("/", "/dashboards", "/schema", "/login"):
        r = await secured.get(path, headers=key if path != "/login" else {})
        assert r.status_code == 200, path
        h = r.headers
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "same-origin" and h["cache-control"] == "no-store"
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        # The CSP forbids inline script and style: the templates must not need them.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
        assert not re.search(r"\son[a-z]+\s*=", r.text, re.I), path
        assert not re.search(r"\sstyle\s*=", r.text, re.I), path
        assert "<style" not in r.text, path
    frag = await secured.post("/ui/sql", data={"sql": "SELECT segment, count(*) AS n FROM customers GROUP BY 1"},
                              headers=key)  # fmt: skip
    assert 'class="bar-row"' in frag.text and not re.search(r"\sstyle\s*=", frag.text)
    api = await secured.post("/sql", json={"sql": "SELECT 1"}, headers=key)
    assert api.headers["cache-control"] == "no-store" and api.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in api.headers
    unauth = await secured.get("/api/stats")
    assert unauth.status_code == 401 and unauth.headers["x-content-type-options"] == "nosniff"
    static = await secured.get("/static/style.css")
    assert "no-store" not in static.headers.get("cache-control", "") and static.headers["x-content-type-options"]
    for path in ("/docs", "/redoc"):  # Swagger UI and ReDoc come from /static: the policy allows no other origin
        page = await secured.get(path)
        assert page.status_code == 200 and "https:" not in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text, page.text


async def test_errors_carry_no_stack_trace_or_key(secured):
    key = secured.keys["full"]
    for r in (
        await secured.post(
            "/sql", content=b"{not json", headers={"X-API-Key": key, "content-type": "application/json"}
        ),
        await secured.post("/sql", json={"sql": 42}, headers={"X-API-Key": key}),
        await secured.get("/api/stats", headers={"X-API-Key": key + "x"}),
        await secured.post("/login", data={"key": key + "x"}),
    ):
        assert r.status_code in (401, 422), r.text
        assert "Traceback" not in r.text and 'File "' not in r.text and key not in r.text


async def test_startup_logs_say_how_auth_stands(settings_for, demo_db, generator, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="querywise")
    async with app_client(settings_for(f"sqlite:///{demo_db}"), generator):
        pass
    assert any(r.levelno == logging.WARNING and "authentication is disabled" in r.message for r in caplog.records)
    assert "local use only" in caplog.text
    caplog.clear()
    settings = settings_for(f"sqlite:///{demo_db}", auth_disabled=False, api_keys_file=tmp_path / "none.json")
    async with app_client(settings, generator) as c:
        assert (await c.get("/api/stats")).status_code == 401  # it starts, and everything protected stays shut
        assert (await c.get("/healthz")).status_code == 200
    assert "python -m app.keys create --name" in caplog.text
    (tmp_path / "broken.json").write_text("{")
    broken = settings_for(f"sqlite:///{demo_db}", auth_disabled=False, api_keys_file=tmp_path / "broken.json")
    with pytest.raises(Exception, match="not valid JSON"):
        async with app_client(broken, generator):
            pass


def _client_at(app, address: str) -> httpx.AsyncClient:
    """Another browser, at its own client address, on the same running app."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_failed_logins_never_lock_out_another_partys_valid_key(secured):
    """The throttle backs off per (address, key prefix): an attacker behind the victim's proxy, or one elsewhere who
    knows the victim's key prefix, is slowed down, and the victim still logs in at once."""
    victim_key = secured.keys["full"]
    async with _client_at(secured.app, "10.1.1.1") as victim, _client_at(secured.app, "10.1.1.1") as neighbour, \
            _client_at(secured.app, "10.9.9.9") as outsider:  # fmt: skip
        # behind the same proxy address: 30 wrong keys, one prefix and many
        statuses = [(await neighbour.post("/login", data={"key": "qw_NeighbourGuess" + str(i)})).status_code
                    for i in range(15)]  # fmt: skip
        statuses += [(await neighbour.post("/login", data={"key": f"qw_{i:09d}x"})).status_code for i in range(15)]
        # elsewhere, with the victim's own prefix and a wrong tail
        statuses += [(await outsider.post("/login", data={"key": victim_key[:20] + "wrong"})).status_code
                     for _ in range(15)]  # fmt: skip
        assert set(statuses) <= {401, 429} and 429 in statuses
        slowed = await outsider.post("/login", data={"key": victim_key[:20] + "wrong"})
        assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) >= 1
        assert "try again in" in slowed.text
        # the victim, from the shared address, with the right key: in
        ok = await victim.post("/login", data={"key": victim_key, "next": "/schema"})
        assert ok.status_code == 303 and ok.headers["location"] == "/schema", ok.text
        # and the outsider's own correct key is not refused either, though its address has been failing
        other = await outsider.post("/login", data={"key": secured.keys["sales"]})
        assert other.status_code == 303


async def test_forwarded_for_does_not_reset_the_login_throttle(secured):
    """Without TRUSTED_PROXIES, X-Forwarded-For is not believed: rotating it does not make a new party."""
    async with _client_at(secured.app, "10.2.2.2") as attacker:
        for i in range(10):
            await attacker.post(
                "/login", data={"key": "qw_SameGuessAgain"}, headers={"X-Forwarded-For": f"203.0.113.{i}"}
            )
        r = await attacker.post(
            "/login", data={"key": "qw_SameGuessAgain"}, headers={"X-Forwarded-For": "198.51.100.1"}
        )
        assert r.status_code == 429
