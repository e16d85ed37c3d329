"""The real uvicorn server as `python -m app` configures it: an oversized request head is refused, slow clients are
cut off at the head and body deadlines, and a client cannot claim another address with X-Forwarded-For unless its
proxy is trusted."""

import contextlib
import socket

import pytest
from fastapi import FastAPI, Request
from tests_support import start_in_thread

from app.server import BODY_TIMEOUT_S, HEAD_TIMEOUT_S, MAX_HEADER_BYTES, DrainingServer, server_config
from bench.server import free_port


@pytest.fixture
def serve_app():
    servers = []

    def start(trusted=()):
        app = FastAPI()

        @app.get("/whoami")
        def whoami(request: Request) -> dict:
            return {"client": request.client.host if request.client else None}

        @app.post("/echo")
        async def echo(request: Request) -> dict:
            return {"bytes": len(await request.body())}

        port = free_port()
        server = DrainingServer(server_config(app, "127.0.0.1", port, trusted), app)
        server.config.log_level = "warning"
        servers.append((server, start_in_thread(server, timeout_s=10)))
        return port

    yield start
    for server, t in servers:
        server.should_exit = True
        t.join(timeout=10)


def _raw(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head)
        chunks = []
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_request_head_is_refused(serve_app):
    port = serve_app()
    big = b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MAX_HEADER_BYTES) + b"\r\n\r\n"
    reply = _raw(port, big)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    ok = _raw(port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(serve_app):
    head = b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"
    untrusted = serve_app()
    assert b'"client":"127.0.0.1"' in _raw(untrusted, head)
    trusted = serve_app(("127.0.0.1",))
    assert b'"client":"203.0.113.9"' in _raw(trusted, head)


# A stalled connection must be closed by the server: a read that waits this long without the server closing it
# means no deadline applied (the bound only turns a hang into a failure; nothing is timed).
STALL_BOUND_S = 3 * max(HEAD_TIMEOUT_S, BODY_TIMEOUT_S)

STALLS = {
    "nothing-sent": b"",
    "head-never-finished": b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n",
    "chunked-body-never-finished": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    "body-shorter-than-declared": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10,
}


def _closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes the connection; fail if it never does within the bound."""
    sock.settimeout(STALL_BOUND_S)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept a stalled connection open past {STALL_BOUND_S} s: {b''.join(chunks)[:100]!r}")
    return b"".join(chunks)


@pytest.mark.parametrize("stall", list(STALLS), ids=list(STALLS))
def test_stalled_clients_are_closed_many_at_once(serve_app, stall):
    """21 connections that stall the same way (the attack run's number) are all closed by the server; a normal
    request is still answered meanwhile."""
    port = serve_app()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(21)]
    try:
        for s in socks:
            if STALLS[stall]:
                s.sendall(STALLS[stall])
        assert _raw(port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
        replies = [_closed_by_server(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert all(b"200 OK" not in r for r in replies), replies[0][:200]
    if stall in ("nothing-sent", "head-never-finished"):
        assert all(r.startswith(b"HTTP/1.1 408") for r in replies), replies[0][:200]


def test_a_slow_but_steady_client_is_served(serve_app):
    """The deadlines bound the whole head and body, generously: a body sent in a few pieces still arrives."""
    port = serve_app()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabc")
        s.sendall(b"def")
        reply = _closed_by_server(s)
    assert reply.startswith(b"HTTP/1.1 200") and b'{"bytes":6}' in reply


def test_a_kept_alive_connection_gets_a_fresh_head_deadline(serve_app):
    """After one answer on a kept-alive connection, the next request's head is again bounded."""
    port = serve_app()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n")  # the next head, never finished
        assert _closed_by_server(s).startswith(b"HTTP/1.1 408")
