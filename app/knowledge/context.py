"""What the model is told about this business for one question: glossary lines and verified examples.

The service asks `Knowledge.context` for every question. Glossary and examples are read from the application
database and kept for `TTL_S` seconds (a write through this process refreshes them at once; other replicas sharing
a PostgreSQL log see it within the TTL), so a question costs no extra query. If the application database is down
the question is answered without them: knowledge improves answers, it never blocks them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from app.core.config import DEMO_DB_PATH
from app.knowledge import glossary
from app.knowledge.examples import ExampleIndex
from app.knowledge.store import KnowledgeStore, KnowledgeUnavailable, database_key

log = logging.getLogger("querywise")
TTL_S = 5.0
DEMO_GLOSSARY = Path(__file__).resolve().parents[1] / "db" / "demo_glossary.yaml"


def seed_for(database_url: str, glossary_file: Path | None) -> Path | None:
    """The glossary to import where the database has none: `glossary_file`, or the demo's for the demo database."""
    if glossary_file is not None:
        return glossary_file
    return DEMO_GLOSSARY if database_key(database_url) == database_key(f"sqlite:///{DEMO_DB_PATH}") else None


@dataclass(frozen=True)
class Context:
    notes: str = ""  # glossary lines, written under the schema in the first user turn
    terms: tuple[str, ...] = ()  # the glossary entries used (names)
    earlier: tuple[tuple[str, str], ...] = ()  # verified (question, SQL) turns, most similar last


@dataclass
class _Loaded:
    at: float
    entries: list[glossary.Entry]
    examples: list[dict]
    index: ExampleIndex


class Knowledge:
    def __init__(
        self,
        store: KnowledgeStore,
        database: str,
        glossary_budget: int,
        examples_k: int,
        seed: Path | None = None,
    ):
        self.store, self.database = store, database
        self.glossary_budget, self.examples_k = glossary_budget, examples_k
        self._seed = seed  # a YAML glossary imported on first use where this database has none yet
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded = None

    def _load(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None and time.monotonic() - loaded.at < TTL_S:
            return loaded
        with self._lock:
            loaded = self._loaded
            if loaded is None or time.monotonic() - loaded.at >= TTL_S:
                if self._seed is not None:
                    self._import_seed(self._seed)
                    self._seed = None
                entries = self.store.glossary(self.database)
                examples = self.store.examples(self.database)
                loaded = _Loaded(time.monotonic(), entries, examples, ExampleIndex([e["question"] for e in examples]))
                self._loaded = loaded
        return loaded

    def _import_seed(self, path: Path) -> None:
        if self.store.has_glossary(self.database):
            return
        try:
            entries = glossary.parse_yaml(path.read_text())
        except (OSError, glossary.GlossaryError) as exc:
            log.error("glossary file %s not imported: %s", path, exc)
            return
        self.store.replace_glossary(self.database, entries, keep=lambda e: False)
        log.info("imported %d glossary entries from %s", len(entries), path)

    def context(
        self,
        question: str,
        allowed: Collection[str] | None,
        table_names: Collection[str],
        count_tokens: Callable[[str], int],
    ) -> Context:
        try:
            loaded = self._load()
        except KnowledgeUnavailable:
            log.warning("glossary and verified examples unavailable: answering without them")
            return Context()
        entries = glossary.visible(loaded.entries, allowed, table_names)
        chosen = glossary.select(entries, question, self.glossary_budget, count_tokens)
        keep = None
        if allowed is not None:
            allow = {t.lower() for t in allowed}
            keep = lambda i: set(loaded.examples[i]["tables"]) <= allow  # noqa: E731
        picked = [loaded.examples[i] for i in loaded.index.nearest(question, self.examples_k, keep)]
        return Context(
            notes=glossary.format_entries(chosen),
            terms=tuple(e.name for e in chosen),
            earlier=tuple((e["question"], e["sql"]) for e in picked),
        )
