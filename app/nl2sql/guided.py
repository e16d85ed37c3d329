"""Execution-guided decoding: when the greedy SQL does not run, returns nothing, or joins tables on columns that no
key links (`app.nl2sql.joins`: such answers were wrong 9 times in 10), draw sampled candidates and keep the first that
passes the guard and runs with rows and keyed joins, else the best of them. Or, voting (self-consistency): draw
candidates for every question and answer with the result most of them agree on (`vote_index`).

Shared by the service (candidates through the batching queue, run on the user's database) and by evaluation
(candidates run on each Spider database), so a measured EX gain is the gain the service delivers. The judge never
sees gold SQL: only whether a candidate runs and whether it returns rows.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Sequence

from app.nl2sql.constrain import SchemaNames
from app.nl2sql.engine import Sampling

# Lower is better. "unkeyed" returned rows but joins on columns no key links; "empty" ran but returned no rows
# (often a wrong filter): a candidate with rows and keyed joins is preferred to either.
RANK = {"ok": 0, "unkeyed": 1, "empty": 2}
WORST = 3


def result_status(rows: Sequence[Sequence]) -> tuple[str, str]:
    """`ok` only for rows with something in them: no rows, or rows whose every cell is NULL (an aggregate over
    nothing, a misspelt filter value), are `empty` and never count as a success."""
    if not rows:
        return "empty", "empty_result"
    if all(v is None for row in rows for v in row):
        return "empty", "null_result"
    return "ok", "ok"


def judged(status: str, unkeyed: Sequence[str]) -> str:
    """The status execution-guided decoding ranks: an answer with rows is `unkeyed` when it joins on columns that no
    key links (`unkeyed`, from `app.nl2sql.joins.unkeyed_joins`)."""
    return "unkeyed" if status == "ok" and unkeyed else status


def rank(status: str) -> int:
    return RANK.get(status, WORST)


def wants_candidates(status: str) -> bool:
    return rank(status) > 0


def candidate_sampling(prompt: str, n: int, temperature: float, names: SchemaNames | None = None) -> list[Sampling]:
    """n seeded samplers; seeds derive from the prompt so the same question draws the same candidates. With `names`
    the candidates are schema-constrained like the greedy answer."""
    base = zlib.crc32(prompt.encode())
    return [Sampling(temperature=temperature, seed=base + i, names=names) for i in range(n)]


def best_index(statuses: Sequence[str]) -> int:
    """The first of the best-ranked statuses: index 0 (greedy) wins ties."""
    return min(range(len(statuses)), key=lambda i: (rank(statuses[i]), i))


def result_key(rows: Sequence[Sequence]) -> str:
    """A result's identity for voting: its rows as a multiset (order ignored), floats rounded so that the same sum
    computed in two orders agrees."""

    def norm(v):
        return round(v, 6) if isinstance(v, float) else v

    canon = sorted(repr(tuple(norm(v) for v in row)) for row in rows)
    return hashlib.sha1("\n".join(canon).encode()).hexdigest()[:16]


def vote_index(statuses: Sequence[str], keys: Sequence[str | None]) -> int:
    """Self-consistency over executed answers: among those that ran with rows, the one whose result the most
    answers share; ties go to the earliest (index 0, the greedy answer, first). With none that ran with rows, the
    usual ranking (`best_index`)."""
    ok = [i for i, s in enumerate(statuses) if s == "ok"]
    if not ok:
        return best_index(statuses)
    counts = Counter(keys[i] for i in ok)
    return max(ok, key=lambda i: (counts[keys[i]], -i))
