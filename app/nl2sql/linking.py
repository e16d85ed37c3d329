"""Schema linking: cut a schema too large for the prompt down to the tables (and columns) a question needs.

A 200-table database does not fit the small model's context, and CPU cost is linear in prompt tokens. Tables are
ranked by lexical overlap with the question, completed by their foreign-key neighbours, and added while the
serialized schema fits a token budget. A schema that already fits is returned as is: the model was trained on whole
schemas, and its prompts must stay exactly what it saw.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache

from app.db.schema import Column, Schema, Table
from app.nl2sql.prompt import format_schema, format_table

TABLE_WEIGHT = 3.0  # a table named like a noun of the question is much stronger evidence than one of its columns
COLUMN_WEIGHT = 1.0
SAMPLE_WEIGHT = 0.5  # a value of the question seen in a column says the table holds it, but values repeat widely
COVERAGE_BONUS = 1.0  # every word of the name is asked about: "orders" picks `orders` over `order_items`
EXACT, FUZZY = 1.0, 0.6
MIN_PREFIX = 4  # "supplied" ~ "supplier", "prerequisites" ~ "prereq"; shorter prefixes join unrelated words
PREFIX_SHARE = 0.75  # ...and the shared prefix covers most of the shorter word: "invoice" is not "invoke"
RELATIVE_CUTOFF = 0.3  # below this share of the best score a match is noise (a lone `name` column), not a candidate
DECAY = 0.5  # a table pulled in by a key ranks at half the table that pulls it, so closures fade with distance
PAD_SHARE = 0.5  # a table too wide for the budget keeps unmatched columns up to this share, leaving room for its keys

STOPWORDS = frozenset({
    "a", "an", "the", "of", "for", "in", "on", "at", "by", "to", "from", "with", "without", "into", "per", "each",
    "every", "all", "any", "some", "and", "or", "not", "no", "than", "then", "is", "are", "was", "were", "be", "been",
    "being", "do", "does", "did", "have", "has", "had", "that", "this", "these", "those", "there", "their", "its",
    "it", "they", "them", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "many", "much",
    "show", "list", "give", "find", "get", "return", "display", "tell", "me", "us", "count", "number", "id", "ids",
})  # fmt: skip
# Words in table names that say nothing about the content: "the name of the country" is not about `car_names`.
GENERIC = frozenset({"name", "data", "info", "detail", "record", "table", "list"})
SYNONYM_GROUPS = (
    ("customer", "client", "buyer"),
    ("supplier", "vendor"),
    ("employee", "staff", "worker"),
    ("invoice", "bill"),
)
SYNONYMS = {w: group for group in SYNONYM_GROUPS for w in group}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")


def singular(word: str) -> str:
    """Crude English singular, enough to meet `orders` with "order" and `categories` with "category"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _raw_words(text: str) -> list[str]:
    return _WORD.findall(_CAMEL.sub(" ", text).lower())


@lru_cache(maxsize=16384)
def words(text: str) -> tuple[str, ...]:
    """`OrderItems`, `order_items`, "order items" → ('order', 'item')."""
    return tuple(singular(w) for w in _raw_words(text))


def question_words(question: str) -> tuple[str, ...]:
    """The question's content words, singular, each once. Bare numbers are left out: they would match `audit_log_5`
    by name, and reach the SQL as literals anyway."""
    kept = (singular(w) for w in _raw_words(question) if len(w) > 1 and not w.isdigit() and w not in STOPWORDS)
    return tuple(dict.fromkeys(kept))


@lru_cache(maxsize=65536)
def match(word: str, token: str) -> float:
    """How well a question word names an identifier word: exact, fuzzy (shared prefix, synonym) or not at all."""
    if word == token:
        return EXACT
    if word in SYNONYMS and token in SYNONYMS[word]:
        return FUZZY
    n = 0
    for a, b in zip(word, token, strict=False):
        if a != b:
            break
        n += 1
    return FUZZY if n >= MIN_PREFIX and n >= PREFIX_SHARE * min(len(word), len(token)) else 0.0


def _best(word: str, tokens: Sequence[str]) -> float:
    return max((match(word, t) for t in tokens), default=0.0)


def _sample_words(column: Column) -> frozenset[str]:
    return frozenset(w for s in column.samples for w in words(s))


def score_table(table: Table, qwords: Sequence[str]) -> tuple[float, dict[str, float]]:
    """The table's relevance to the question, and each column's (by name) for trimming."""
    name = [t for t in words(table.name) if t not in GENERIC] or words(table.name)
    cols = [(c.name, words(c.name), _sample_words(c)) for c in table.columns]
    col_scores = dict.fromkeys((c.name for c in table.columns), 0.0)
    covered: set[str] = set()
    total = 0.0
    for w in qwords:
        covered.update(t for t in name if match(w, t))
        best_col = best_sample = 0.0
        for cname, ctokens, samples in cols:
            m, s = _best(w, ctokens), SAMPLE_WEIGHT if w in samples else 0.0
            col_scores[cname] += COLUMN_WEIGHT * m + s
            best_col, best_sample = max(best_col, m), max(best_sample, s)
        # Per question word, the best column only: a wide table must not win by repeating a word in many columns.
        total += TABLE_WEIGHT * _best(w, name) + COLUMN_WEIGHT * best_col + best_sample
    content = [t for t in name if not t.isdigit() and t not in STOPWORDS]
    if content and covered.issuperset(content):
        total += COVERAGE_BONUS
    return total, col_scores


def _largest_prefix(n: int, lo: int, fits: Callable[[int], bool]) -> int | None:
    """Largest k in [lo, n] with fits(k), fits assumed monotone (more columns, more tokens); None if not even lo."""
    if not fits(lo):
        return None
    hi = n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Linker:
    def __init__(self, schema: Schema, question: str, budget: int, count_tokens: Callable[[str], int]):
        self.schema, self.tables, self.budget = schema, schema.tables, budget
        self._count, self._memo = count_tokens, {}
        # What joining two lines costs: 0 for a word counter, 1 for a BPE tokenizer that keeps "\n" as a token.
        self.newline = max(0, count_tokens("a)\nb(") - count_tokens("a)") - count_tokens("b("))
        self.index = {t.name.lower(): i for i, t in enumerate(self.tables)}
        self.refs = [self._targets(t, i) for i, t in enumerate(self.tables)]
        self.incoming: list[list[int]] = [[] for _ in self.tables]
        for i, targets in enumerate(self.refs):
            for j in targets:
                self.incoming[j].append(i)
        qwords = question_words(question)
        scored = [score_table(t, qwords) for t in self.tables]
        self.own = [s for s, _ in scored]
        self.col_scores = [c for _, c in scored]

    def _targets(self, table: Table, i: int) -> list[int]:
        found = (self.index.get(f.ref_table.lower()) for f in table.foreign_keys)
        return sorted({j for j in found if j is not None and j != i})

    def tokens(self, text: str) -> int:
        if text not in self._memo:
            self._memo[text] = self._count(text)
        return self._memo[text]

    def render(self, i: int, kept: dict[int, Table]) -> Table:
        """Table i as kept, without the foreign keys that point to a table (or trimmed column) not in the prompt."""
        version = kept[i]
        own_cols = {c.name.lower() for c in version.columns}
        fks = []
        for f in version.foreign_keys:
            j = self.index.get(f.ref_table.lower())
            ref = kept.get(j) if j is not None else None
            if ref is None or f.column.lower() not in own_cols:
                continue
            if ref is not self.tables[j] and f.ref_column.lower() not in {c.name.lower() for c in ref.columns}:
                continue
            fks.append(f)
        return version if len(fks) == len(version.foreign_keys) else replace(version, foreign_keys=tuple(fks))

    def cost(self, kept: dict[int, Table]) -> int:
        """Estimated tokens of the kept tables' serialization (exact when tokens never span a line break)."""
        lines = sum(self.tokens(format_table(self.render(i, kept))) for i in kept)
        return lines + self.newline * (len(kept) - 1)

    def key_columns(self, i: int) -> set[str]:
        """Columns a join needs: the primary key, the table's foreign keys, and columns other tables point to."""
        table = self.tables[i]
        keys = {c.name.lower() for c in table.columns if c.primary_key}
        keys |= {f.column.lower() for f in table.foreign_keys}
        for r in self.incoming[i]:
            keys |= {
                f.ref_column.lower() for f in self.tables[r].foreign_keys if f.ref_table.lower() == table.name.lower()
            }
        return keys

    def with_columns(self, i: int, names: Sequence[str]) -> Table:
        table, keep = self.tables[i], {n.lower() for n in names}
        return replace(table, columns=tuple(c for c in table.columns if c.name.lower() in keep))

    def _matched(self, i: int, exclude: set[str]) -> list[str]:
        scores = self.col_scores[i]
        cols = [c.name for c in self.tables[i].columns if scores[c.name] > 0 and c.name.lower() not in exclude]
        return sorted(cols, key=lambda n: -scores[n])  # stable: ties keep declared order

    def trimmed(self, i: int, kept: dict[int, Table]) -> Table | None:
        """Table i cut to its key columns and the best-matching others, if that fits beside `kept`."""
        table = self.tables[i]
        keys = self.key_columns(i)
        key_cols = [c.name for c in table.columns if c.name.lower() in keys]
        order = key_cols + self._matched(i, keys)
        if not order or len(order) >= len(table.columns):
            return None

        def fits(k: int) -> bool:
            return self.cost({**kept, i: self.with_columns(i, order[:k])}) <= self.budget

        # All keys or nothing: a table that cannot be joined is no use beside the others.
        k = _largest_prefix(len(order), max(len(key_cols), 1), fits)
        return None if k is None else self.with_columns(i, order[:k])

    def trimmed_alone(self, i: int) -> Table:
        """The best table when even it alone overflows: PK, best-matching, key columns, then the rest, as they fit."""
        table, scores = self.tables[i], self.col_scores[i]
        pk = [c.name for c in table.columns if c.primary_key]
        keys = self.key_columns(i) - {n.lower() for n in pk}
        matched = self._matched(i, {n.lower() for n in pk})
        essential = pk + matched + [c.name for c in table.columns if c.name.lower() in keys and scores[c.name] <= 0]
        taken = {n.lower() for n in essential}
        rest = [c.name for c in table.columns if c.name.lower() not in taken]

        order = essential + rest

        def within(limit: float) -> Callable[[int], bool]:
            return lambda k: self.cost({i: self.with_columns(i, order[:k])}) <= limit

        k = _largest_prefix(len(essential), 1, within(self.budget)) if essential else 0
        if k is None:
            k = 1  # not even one column fits; it still names the table, and an empty schema helps nobody
        elif k == len(essential):
            k = _largest_prefix(len(order), max(k, 1), within(PAD_SHARE * self.budget)) or max(k, 1)
        return self.with_columns(i, order[:k])

    def run(self) -> Schema:
        n = len(self.tables)
        indegree = [len(r) for r in self.incoming]
        best = min(range(n), key=lambda i: (-self.own[i], -indegree[i], i))
        cutoff = RELATIVE_CUTOFF * self.own[best]
        prio = {i: s for i, s in enumerate(self.own) if s > 0 and s >= cutoff}
        prio[best] = max(prio.get(best, 0.0), 1e-9)  # kept even when no word matched anything
        heap = [(-p, -indegree[i], i) for i, p in prio.items()]
        heapq.heapify(heap)

        def raise_to(i: int, p: float) -> None:
            if p > prio.get(i, 0.0):
                prio[i] = p
                heapq.heappush(heap, (-p, -indegree[i], i))

        kept: dict[int, Table] = {}
        added: list[int] = []
        done: set[int] = set()
        while heap:
            neg, _, i = heapq.heappop(heap)
            if i in done or -neg != prio[i]:
                continue  # already decided, or a stale entry superseded by a higher priority
            done.add(i)
            version: Table | None = self.tables[i]
            if not kept:
                if self.cost({i: version}) > self.budget:
                    version = self.trimmed_alone(i)
            elif self.cost({**kept, i: version}) > self.budget:
                version = self.trimmed(i, kept)
            if version is None:
                continue
            kept[i] = version
            added.append(i)
            for j in self.refs[i]:
                if j not in done:
                    raise_to(j, DECAY * prio[i])
            for b in self.incoming[i]:  # a junction table joining i to another kept table
                others = [prio[j] for j in self.refs[b] if j in kept and j != i]
                if b not in done and others:
                    raise_to(b, DECAY * min(prio[i], max(others)))

        linked = self._schema(kept)
        # The line-by-line estimate can miss a token merged across a line break: drop the latest additions if so.
        while len(added) > 1 and self._count(format_schema(linked)) > self.budget:
            del kept[added.pop()]
            linked = self._schema(kept)
        return linked

    def _schema(self, kept: dict[int, Table]) -> Schema:
        return replace(self.schema, tables=tuple(self.render(i, kept) for i in sorted(kept)))


def link_schema(
    schema: Schema,
    question: str,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    *,
    total_tokens: int | None = None,
) -> Schema:
    """`schema` itself when its text fits `budget_tokens`, else the tables (and columns) `question` needs.

    Kept tables keep their original order; foreign keys to tables left out are dropped. `total_tokens` is the token
    count of `format_schema(schema)` when the caller already has it (the catalog caches it).
    """
    if not schema.tables:
        return schema
    total = count_tokens(format_schema(schema)) if total_tokens is None else total_tokens
    if total <= budget_tokens:
        return schema
    return _Linker(schema, question, budget_tokens, count_tokens).run()
