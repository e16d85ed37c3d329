"""The connected database's schema, introspected once and cached with its prompt text (and that text's token count);
`refresh()` re-reads it after a migration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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
        self._version = 0
        self._token_count: tuple[Callable[[str], int], int] | None = None
        self.loaded_at: float | None = None

    def refresh(self) -> Schema:
        schema = introspect(self._engine, sample_values=self._sample_values)
        with self._lock:
            self._schema, self._text, self.loaded_at = schema, format_schema(schema), time.time()
            self._version += 1
            self._token_count = None
        return schema

    @property
    def schema(self) -> Schema:
        return self._schema if self._schema is not None else self.refresh()

    @property
    def text(self) -> str:
        if self._schema is None:
            self.refresh()
        return self._text

    def token_count(self, count_tokens: Callable[[str], int]) -> int:
        """Tokens of `text` by `count_tokens`, counted once per refresh: every question checks it against the budget."""
        if self._schema is None:
            self.refresh()
        with self._lock:
            text, version, cached = self._text, self._version, self._token_count
        if cached is not None and cached[0] == count_tokens:
            return cached[1]
        n = count_tokens(text)
        with self._lock:
            if self._version == version:  # a refresh meanwhile made this count stale: do not keep it
                self._token_count = (count_tokens, n)
        return n
