"""The business evaluation suite: hand-written questions with gold SQL over the demo database (`app.db.demo`).

One YAML file per scenario (`scenario`, `description`, `cases: [{question, sql}]`). Gold SQL is SQLite, one
SELECT, and expects the demo database built with the default seed 0; `models/synth.py` keeps its training pairs
away from these cases so the suite stays unseen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

SCENARIO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    scenario: str
    question: str
    sql: str


def load_suite(dir: Path = SCENARIO_DIR) -> list[Case]:
    """Every case of every `*.yaml` under `dir`, files in name order, cases in file order."""
    cases = []
    for path in sorted(Path(dir).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
            raise ValueError(f"{path}: expected a mapping with a 'cases' list")
        name = doc.get("scenario") or path.stem
        for i, item in enumerate(doc["cases"]):
            if not isinstance(item, dict) or not item.get("question") or not item.get("sql"):
                raise ValueError(f"{path}: case {i} needs a question and an sql")
            cases.append(Case(name, str(item["question"]).strip(), str(item["sql"]).strip()))
    return cases
