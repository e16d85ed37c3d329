"""Helpers shared by tests (fixtures live in conftest.py): the real app served in-process through httpx, and waits
for something to happen.

Access control: `settings_for(...)` (conftest) builds settings with auth off. For a test that needs it on,
`settings, key = with_key(settings_for(url))` turns it on with a fresh key in the test's own keys file; send the key
as `headers=auth_headers(key)`.

Waiting: a test never sleeps a fixed time hoping something has happened by then (too short on a loaded machine, too
long everywhere else); it waits for the thing itself with `wait_until` (threads) or `wait_until_async` (the event
loop), whose bound only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import uvicorn

from app.auth.keys import KeyStore
from app.core.config import Settings, get_settings
from app.main import create_app
from app.nl2sql.generator import Generator

MODEL_DIR = get_settings().model_dir.resolve()  # what the service serves by default (make test: SmolLM2 fp32)


def with_key(
    settings: Settings,
    name: str = "tester",
    tables: Sequence[str] | None = None,
    rate_limit_per_minute: int | None = None,
    rate_limit_burst: int | None = None,
) -> tuple[Settings, str]:
    """`settings` with auth on and a new key `name` in its keys file (created if missing); returns the plaintext."""
    new = KeyStore(settings.api_keys_file).create(
        name, list(tables) if tables is not None else None, rate_limit_per_minute, rate_limit_burst
    )
    return settings.model_copy(update={"auth_disabled": False}), new.key


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def app_client(settings: Settings, generator: Generator) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (batcher started, schema read, the shared prompt cached), and an httpx
    client bound to it. Tests start once the warm-up is over, so their questions and counts are theirs alone."""
    app = create_app(settings, generator)
    async with app.router.lifespan_context(app):
        await app.state.service.warmed()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


BOUND_S = 60.0  # how long a wait may take before it is a failure: generous, nothing is timed by it


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = BOUND_S, poll_s: float = 0.01) -> Any:
    """Poll `condition()` until it is truthy and return its value; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never happened within {timeout_s:g} s: {what}"
        time.sleep(poll_s)
    return value


async def wait_until_async(
    condition: Callable[[], Any], what: str, timeout_s: float = BOUND_S, poll_s: float = 0.01
) -> Any:
    """`wait_until` inside the event loop: the loop keeps running between polls. `condition` may be a coroutine
    function (e.g. a request whose answer says whether the thing happened)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened within {timeout_s:g} s: {what}"
        await asyncio.sleep(poll_s)


def start_in_thread(server: uvicorn.Server, timeout_s: float = BOUND_S) -> threading.Thread:
    """Run a real uvicorn server in a daemon thread and return once it accepts connections."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the server started", timeout_s, poll_s=0.02)
    assert server.started, "the server's thread ended before it started serving"
    return thread


CHROMIUM = "/usr/bin/chromium"  # Debian's (`make system-deps`)
# no background traffic: this machine's network is closed, and a test page may load nothing from another origin
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def launch_chromium(playwright):
    """Debian's Chromium through Playwright, headless; a clear failure when it is not installed."""
    from pathlib import Path

    import pytest

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium", pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def two_layer_base():
    """SmolLM2 cut to its first 2 decoder layers: the export's every step in seconds (tests of models/)."""
    from models.base import load_base
    from models.bases import SMOLLM2

    model, tok = load_base(SMOLLM2)
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    return model, tok
