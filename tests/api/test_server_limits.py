"""The real uvicorn server as `python -m app` configures it: an oversized request head is refused, and a client
cannot claim another address with X-Forwarded-For unless its proxy is trusted."""

import contextlib
import socket

import pytest
from fastapi import FastAPI, Request
from pg_cluster import free_port
from tests_support import start_in_thread

from app.server import MAX_HEADER_BYTES, DrainingServer, server_config


@pytest.fixture
def serve_app():
    servers = []

    def start(trusted=()):
        app = FastAPI()

        @app.get("/whoami")
        def whoami(request: Request) -> dict:
            return {"client": request.client.host if request.client else None}

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
