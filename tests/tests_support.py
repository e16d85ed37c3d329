"""Helpers shared by tests (fixtures live in conftest.py): the real app served in-process through httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from app.core.config import Settings, get_settings
from app.main import create_app
from app.nl2sql.engine import OnnxGenerator

MODEL_DIR = get_settings().model_dir  # what the service serves by default


@contextlib.asynccontextmanager
async def app_client(settings: Settings, generator: OnnxGenerator) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (batcher started, schema read), and an httpx client bound to it."""
    app = create_app(settings, generator)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
