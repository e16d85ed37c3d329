"""The real app with the real model: the ONNX generator is loaded once per session and shared by every app
built in the tests; each app gets its own query log. Clients talk to it in-process through httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.core.config import ROOT, Settings
from app.db.demo import build_sqlite
from app.main import create_app
from app.nl2sql.engine import OnnxGenerator

MODEL_DIR = ROOT / "build" / "onnx" / "int8"


@pytest.fixture(scope="session")
def generator() -> OnnxGenerator:
    if not (MODEL_DIR / "model.onnx").exists():
        pytest.fail(f"no model at {MODEL_DIR}: `make model` builds it (make test does)", pytrace=False)
    return OnnxGenerator(MODEL_DIR)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    return build_sqlite(tmp_path_factory.mktemp("demo") / "demo.sqlite")


@contextlib.asynccontextmanager
async def app_client(settings: Settings, generator: OnnxGenerator) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, generator)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def settings_for(tmp_path):
    def make(database_url: str, **kw) -> Settings:
        return Settings(
            database_url=database_url,
            querylog_url=f"sqlite:///{tmp_path / 'querylog.sqlite'}",
            model_dir=MODEL_DIR,
            **kw,
        )

    return make


@pytest.fixture
async def client(settings_for, demo_db, generator) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings_for(f"sqlite:///{demo_db}"), generator) as c:
        yield c
