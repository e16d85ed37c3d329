"""Helpers shared by tests (fixtures live in conftest.py): the real app served in-process through httpx.

Access control: `settings_for(...)` (conftest) builds settings with auth off. For a test that needs it on,
`settings, key = with_key(settings_for(url))` turns it on with a fresh key in the test's own keys file; send the key
as `headers=auth_headers(key)`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence

import httpx
import uvicorn

from app.auth.keys import KeyStore
from app.core.config import Settings, get_settings
from app.main import create_app
from app.nl2sql.engine import OnnxGenerator

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
async def app_client(settings: Settings, generator: OnnxGenerator) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (batcher started, schema read), and an httpx client bound to it."""
    app = create_app(settings, generator)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def start_in_thread(server: uvicorn.Server, timeout_s: float = 60) -> threading.Thread:
    """Run a real uvicorn server in a daemon thread and return once it accepts connections."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
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
