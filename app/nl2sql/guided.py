"""Execution-guided decoding: when the greedy SQL does not run (or returns nothing), draw sampled candidates and keep
the first that passes the guard and runs, preferring one that returns rows.

Shared by the service (candidates through the batching queue, run on the user's database) and by evaluation
(candidates run on each Spider database), so a measured EX gain is the gain the service delivers. The judge never
sees gold SQL: only whether a candidate runs and whether it returns rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from app.nl2sql.constrain import SchemaNames
from app.nl2sql.engine import Sampling

# Lower is better. "empty" ran but returned no rows: often a wrong filter, so a candidate with rows is preferred.
RANK = {"ok": 0, "empty": 1}
WORST = 2


def result_status(rows: Sequence[Sequence]) -> tuple[str, str]:
    """`ok` only for rows with something in them: no rows, or rows whose every cell is NULL (an aggregate over
    nothing, a misspelt filter value), are `empty` and never count as a success."""
    if not rows:
        return "empty", "empty_result"
    if all(v is None for row in rows for v in row):
        return "empty", "null_result"
    return "ok", "ok"


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
