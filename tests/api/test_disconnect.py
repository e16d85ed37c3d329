"""A client that goes away stops costing anything: its question leaves the decoding batch, its query stops, its key's
in-flight slots are freed, and another key's question is answered instead. A real uvicorn server (an in-process
client cannot disconnect), the real model; every wait is for an event, bounded only to turn a hang into a failure."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from urllib.parse import urlencode

import httpx
import pytest
from tests_support import start_in_thread, wait_until, with_key

from app.main import create_app
from app.server import DrainingServer, server_config
from bench.server import free_port

pytestmark = pytest.mark.slow  # the real model decoding

BOUND_S = 120  # a hang becomes a failure after this; nothing is timed


@pytest.fixture
def served(settings_for, demo_db, generator):
    """The app on a real server: one decoding row at a time, so a row that never leaves would block everyone."""
    base = settings_for(
        f"sqlite:///{demo_db}",
        batch_max_size=1,
        exec_guided_candidates=0,
        max_new_tokens=1024,
        statement_timeout_s=300,
    )
    settings, alice = with_key(base, "alice")
    _, bob = with_key(base, "bob")
    app = create_app(settings, generator)
    port = free_port()
    server = DrainingServer(server_config(app, "127.0.0.1", port), app)
    server.config.log_level = "warning"
    thread = start_in_thread(server)
    wait_until(lambda: hasattr(app.state, "service"), "the app started", BOUND_S)
    wait_until(lambda: app.state.service.warm_up != "running", "the shared prompt is cached", BOUND_S)
    yield app, port, alice, bob
    server.should_exit = True
    thread.join(timeout=60)


def _middleware(app, cls_name: str = "CancelOnDisconnect"):
    stack = app.middleware_stack
    while stack is not None and type(stack).__name__ != cls_name:
        stack = getattr(stack, "app", None)
    assert stack is not None, f"{cls_name} is not in the middleware stack"
    return stack


@contextlib.contextmanager
def _request_then_hang_up(port: int, path: str, key: str, form: dict | None = None, body: dict | None = None):
    """Send a POST and keep the connection open until the block ends; then close it without reading the answer."""
    if form is not None:
        payload, ctype = urlencode(form).encode(), "application/x-www-form-urlencoded"
    else:
        payload, ctype = json.dumps(body).encode(), "application/json"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(head + payload)
        yield
    finally:
        sock.close()


def _ask_in_thread(port: int, key: str, question: str) -> tuple[threading.Thread, list[httpx.Response]]:
    answer: list[httpx.Response] = []

    def ask() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as client:
            answer.append(
                client.post("/query", json={"question": question}, headers={"Authorization": f"Bearer {key}"})
            )

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread, answer


QUESTION = "List every customer with their region and email"


@pytest.mark.parametrize(
    ("path", "form", "body"),
    [
        pytest.param("/query", None, {"question": QUESTION}, id="api"),
        pytest.param("/ui/ask", {"question": QUESTION}, None, id="ui-htmx"),
    ],
)
def test_a_question_whose_client_left_leaves_the_batch_and_frees_the_way(served, path, form, body):
    app, port, alice, bob = served
    service, auth = app.state.service, app.state.auth
    stats = service.batcher.stats
    before = stats.requests  # the warm-up's pieces of prompt
    with _request_then_hang_up(port, path, alice, form=form, body=body):
        wait_until(lambda: stats.requests == before + 1, "alice's question is decoding", BOUND_S)
        # bob asks while alice's row holds the only decoding slot: he waits in the queue behind it
        asker, answer = _ask_in_thread(port, bob, "How many customers are there?")
        wait_until(lambda: service.batcher.depth == 1, "bob's question is queued", BOUND_S)
    # alice hung up: her request is cancelled, her row leaves the batch unfinished, and bob's question takes its place
    asker.join(timeout=BOUND_S)
    assert stats.cancelled == 1 and stats.dropped == 1 and stats.requests == before + 2
    assert _middleware(app).cancelled == 1
    assert answer and answer[0].status_code == 200, answer
    assert answer[0].json()["status"] in ("ok", "empty", "error"), answer[0].text
    wait_until(lambda: auth.in_flight.counts == {}, "both keys' in-flight slots are free", BOUND_S)


def test_a_query_whose_client_left_is_stopped_in_the_database(served):
    """A query that would run for the whole 300 s statement timeout stops when its client hangs up."""
    app, port, alice, _ = served
    pool = app.state.service.executor.engine.pool
    forever = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c"
    with _request_then_hang_up(port, "/sql", alice, body={"sql": forever}):
        wait_until(lambda: pool.checkedout() == 1, "the query runs", BOUND_S)
    wait_until(lambda: pool.checkedout() == 0, "the query stopped and gave its connection back", BOUND_S)
    assert _middleware(app).cancelled == 1
    wait_until(lambda: app.state.auth.in_flight.counts == {}, "alice's in-flight slot is free", BOUND_S)
