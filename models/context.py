"""Business context for evaluation: the glossary and verified examples the service would put in the prompt.

`python -m models.evaluate --glossary FILE --examples K` measures what each part buys on a suite. The glossary is
selected per question exactly as the service selects it (`app.knowledge.glossary.select`, same token budget).
Verified examples come from a disjoint split of the suite itself: questions are dealt into `folds` folds by id, and
a question's examples are drawn only from the other folds of the same database (never the case being asked, nor
any case of its fold), ranked by the service's BM25 and placed as earlier turns, most similar last
(`app.nl2sql.prompt.build_conversation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from app.knowledge import glossary
from app.knowledge.examples import ExampleIndex


class BusinessContext:
    def __init__(
        self,
        items: Sequence[dict],
        entries: Sequence[glossary.Entry] = (),
        examples_k: int = 0,
        folds: int = 5,
        budget: int = 300,
        count_tokens: Callable[[str], int] = lambda s: len(s) // 4,
    ):
        if examples_k and folds < 2:
            raise ValueError("--folds must be at least 2: examples come from the other folds")
        self.entries, self.k, self.folds = list(entries), examples_k, folds
        self.budget, self.count = budget, count_tokens
        self.items = list(items)  # the whole suite (before --limit): every fold is a pool for the others
        self._pools: dict[tuple[str, int], tuple[list[dict], ExampleIndex]] = {}

    @classmethod
    def from_args(cls, items, glossary_file: Path | None, examples_k: int, folds: int, budget: int, count_tokens):
        entries = glossary.parse_yaml(Path(glossary_file).read_text()) if glossary_file else []
        return cls(items, entries, examples_k, folds, budget, count_tokens)

    def fold(self, item: dict) -> int:
        return item["id"] % self.folds

    def _pool(self, db_id: str, fold: int) -> tuple[list[dict], ExampleIndex]:
        key = (db_id, fold)
        if key not in self._pools:
            pool = [it for it in self.items if it["db_id"] == db_id and self.fold(it) != fold]
            self._pools[key] = (pool, ExampleIndex([it["question"] for it in pool]))
        return self._pools[key]

    def examples(self, item: dict) -> list[dict]:
        """The verified examples for `item`: other folds, same database, most similar last."""
        if not self.k:
            return []
        pool, index = self._pool(item["db_id"], self.fold(item))
        return [pool[i] for i in index.nearest(item["question"], self.k)]

    def for_item(self, item: dict) -> tuple[list[tuple[str, str]], str, dict]:
        """(earlier turns, glossary notes, what was used) for one question."""
        chosen = glossary.select(self.entries, item["question"], self.budget, self.count) if self.entries else []
        picked = self.examples(item)
        used = {"examples": [p["id"] for p in picked], "glossary": [e.name for e in chosen]}
        return [(p["question"], p["gold"]) for p in picked], glossary.format_entries(chosen), used
