"""A small Okapi BM25 ranker over short texts (questions, glossary entries).

Written here rather than taken from a package or replaced by an embedding model: it needs no model download (the
service runs offline on a CPU that is busy decoding), it is deterministic (the same question always gets the same
examples, so an answer can be reproduced and a test can rely on it), and ranking a few thousand short texts takes
well under a millisecond per question. Business paraphrases share their content words ("revenue", "region",
"2025"), which is what BM25 scores; words are lowercased, singularized and stripped of stop words the way schema
linking does it (`app.nl2sql.linking`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from app.nl2sql.linking import STOPWORDS, singular

K1, B = 1.2, 0.75  # the usual Okapi constants
_WORD = re.compile(r"[a-z0-9]+")
# Words that matter in business questions but linking treats as noise for table names.
_KEEP = frozenset({"count", "number", "many", "much"})


def tokenize(text: str) -> list[str]:
    words = _WORD.findall(text.lower().replace("_", " "))
    return [singular(w) for w in words if w not in STOPWORDS or w in _KEEP]


class BM25:
    """Index `docs` once; `scores(query)` ranks them. Empty documents and queries score 0 everywhere."""

    def __init__(self, docs: Sequence[str]):
        self.docs = [Counter(tokenize(d)) for d in docs]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lengths) / len(self.docs)) if self.docs else 0.0
        df: Counter = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}

    def scores(self, query: str) -> list[float]:
        terms = set(tokenize(query))
        out = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            s = 0.0
            for w in terms:
                tf = doc.get(w)
                if tf:
                    s += self.idf[w] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / (self.avg or 1.0)))
            out.append(s)
        return out

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """The `k` best (index, score) pairs with a positive score, best first; ties keep document order."""
        ranked = sorted(((i, s) for i, s in enumerate(self.scores(query)) if s > 0), key=lambda p: (-p[1], p[0]))
        return ranked[:k]
