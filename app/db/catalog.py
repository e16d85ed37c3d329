"""The connected database's schema, introspected once and cached; `refresh()` re-reads it after a migration."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from app.db.schema import Schema, introspect
from app.nl2sql.prompt import format_schema


class SchemaCatalog:
    def __init__(self, engine: sa.Engine, sample_values: int = 0):
        self._engine = engine
        self._sample_values = sample_values
        self._lock = threading.Lock()
        self._schema: Schema | None = None
        self._text = ""
        self.loaded_at: float | None = None

    def refresh(self) -> Schema:
        schema = introspect(self._engine, sample_values=self._sample_values)
        with self._lock:
            self._schema, self._text, self.loaded_at = schema, format_schema(schema), time.time()
        return schema

    @property
    def schema(self) -> Schema:
        return self._schema if self._schema is not None else self.refresh()

    @property
    def text(self) -> str:
        if self._schema is None:
            self.refresh()
        return self._text
