"""The connected database's schema, introspected once and cached; `refresh()` re-reads it after a migration.

Its prompt text is `app.nl2sql.prompter.Prompter`'s job: this module knows databases, not prompts."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from app.db.schema import Schema, introspect


class SchemaCatalog:
    def __init__(self, engine: sa.Engine, sample_values: int = 0, enum_values: int = 0):
        self._engine = engine
        self._sample_values, self._enum_values = sample_values, enum_values
        self._lock = threading.Lock()
        self._schema: Schema | None = None

    def refresh(self) -> Schema:
        """Read the schema again; a new Schema object, so whatever was derived from the old one is rebuilt."""
        schema = introspect(self._engine, sample_values=self._sample_values, enum_values=self._enum_values)
        with self._lock:
            self._schema = schema
        return schema

    @property
    def schema(self) -> Schema:
        return self._schema if self._schema is not None else self.refresh()
