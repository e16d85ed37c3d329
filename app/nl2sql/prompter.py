"""Schema and business context → the prompt: the one owner of the schema's prompt text.

The whole schema's text is what the fine-tuned model was trained on; it is used untouched while it fits the token
budget, else the part linked to the question (`app.nl2sql.linking`). A key's allow-list narrows what the model sees
(and what schema-constrained decoding lets it name) to the tables that key may read: it cannot be led to write SQL
the guard would refuse, and hidden tables are not revealed through the prompt. Glossary entries and verified
examples (`app.knowledge`) join the prompt as notes and earlier turns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection

from app.db.catalog import SchemaCatalog
from app.db.schema import Schema
from app.knowledge.context import Context, Knowledge
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.fewshot import EXAMPLES
from app.nl2sql.generator import Generator
from app.nl2sql.joins import KeyLinks
from app.nl2sql.linking import link_schema
from app.nl2sql.prompt import build_conversation, format_schema


class Prompter:
    def __init__(self, catalog: SchemaCatalog, knowledge: Knowledge, token_budget: int, constrained: bool = True):
        self.catalog, self.knowledge = catalog, knowledge
        self.token_budget, self.constrained = token_budget, constrained
        self._lock = threading.Lock()
        # derived from one schema object: rebuilt when the catalog reloads it
        self._schema: Schema | None = None
        self._text = ""
        self._names: SchemaNames | None = None
        self._links: KeyLinks | None = None
        self._tokens: tuple[Callable[[str], int], int] | None = None

    def _current(self) -> tuple[Schema, str]:
        schema = self.catalog.schema
        with self._lock:
            if schema is not self._schema:
                self._schema, self._text, self._names, self._tokens = schema, format_schema(schema), None, None
                self._links = None
            return schema, self._text

    def schema(self, allowed_tables: Collection[str] | None = None) -> Schema:
        """The cached schema, or only the tables a key may read (foreign keys to hidden tables dropped)."""
        schema = self.catalog.schema
        return schema if allowed_tables is None else schema.restricted(allowed_tables)

    def schema_text(self, allowed_tables: Collection[str] | None = None) -> str:
        """The whole schema as the prompt writes it (what the schema page shows), for a key's tables only."""
        if allowed_tables is not None:
            return format_schema(self.schema(allowed_tables))
        return self._current()[1]

    def _token_count(self, count_tokens: Callable[[str], int]) -> int:
        """The whole text's tokens, counted once per schema and tokenizer: every question checks the budget."""
        schema, text = self._current()
        with self._lock:
            cached = self._tokens
        if cached is not None and cached[0] == count_tokens:
            return cached[1]
        n = count_tokens(text)
        with self._lock:
            if self._schema is schema:  # a reload meanwhile made this count stale: do not keep it
                self._tokens = (count_tokens, n)
        return n

    def schema_text_for(
        self, question: str, count_tokens: Callable[[str], int], allowed_tables: Collection[str] | None = None
    ) -> str:
        """The whole schema text when it fits the token budget, else the part linked to `question`."""
        budget = self.token_budget
        if allowed_tables is not None:
            return format_schema(link_schema(self.schema(allowed_tables), question, budget, count_tokens))
        total = self._token_count(count_tokens)
        schema, text = self._current()
        if total <= budget:
            return text  # untouched: the fine-tuned model was trained on whole schemas
        return format_schema(link_schema(schema, question, budget, count_tokens, total_tokens=total))

    def prompt(
        self, question: str, generator: Generator, allowed_tables: Collection[str] | None = None
    ) -> tuple[str, Context]:
        """The prompt, with the glossary entries and verified examples this key may see that fit the question.
        Without any, it is the plain prompt the model was trained on, unchanged (an untuned base gets few-shot
        examples instead)."""
        examples = () if generator.fine_tuned else EXAMPLES
        schema_text = self.schema_text_for(question, generator.count_tokens, allowed_tables)
        names = [t.name for t in self.catalog.schema.tables]
        ctx = self.knowledge.context(question, allowed_tables, names, generator.count_tokens)
        return build_conversation(schema_text, question, ctx.earlier, examples, ctx.notes), ctx

    def shared_start(self, generator: Generator) -> str:
        """What every question's prompt starts with (the warm-up caches it): up to where the question goes, or to
        the schema when the schema is too long to show whole and so depends on each question."""
        one, other = self.prompt("?", generator)[0], self.prompt("!", generator)[0]
        prompt = os.path.commonprefix([one, other])
        if self._token_count(generator.count_tokens) <= self.token_budget:
            return prompt
        schema_text = self.schema_text_for("", generator.count_tokens)
        at = prompt.find(schema_text) if schema_text else -1
        return prompt[:at] if at >= 0 else ""

    def key_links(self, allowed_tables: Collection[str] | None = None) -> KeyLinks:
        """The keys the join check reads (`app.nl2sql.joins`): of the tables the key may read, the whole schema's
        built once per schema."""
        if allowed_tables is not None:
            return KeyLinks(self.schema(allowed_tables))
        schema, _ = self._current()
        with self._lock:
            if self._links is None:
                self._links = KeyLinks(schema)
            return self._links

    def names(self, allowed_tables: Collection[str] | None = None) -> SchemaNames | None:
        """What schema-constrained decoding lets the model name (None when it is off): the tables the key may read."""
        if not self.constrained:
            return None
        if allowed_tables is not None:
            return SchemaNames.from_schema(self.schema(allowed_tables))
        schema, _ = self._current()
        with self._lock:
            if self._names is None:
                self._names = SchemaNames.from_schema(schema)
            return self._names
