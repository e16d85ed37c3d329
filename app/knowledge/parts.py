"""What editing the business knowledge needs, in one place: the glossary and verified examples (`Knowledge`), the
schema they are checked against, the query log that feedback marks, and the limits corrected SQL is guarded with.

Built by the app factory; the knowledge routes and feedback take it instead of reaching through the query service.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.db.catalog import SchemaCatalog
from app.knowledge.context import Knowledge
from app.querylog.store import QueryLog


@dataclass(frozen=True)
class KnowledgeParts:
    knowledge: Knowledge
    catalog: SchemaCatalog
    querylog: QueryLog
    dialect: str  # the user's database, for guarding corrected SQL
    row_limit: int
    question_max_chars: int
