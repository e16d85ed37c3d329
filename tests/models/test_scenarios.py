"""The business evaluation suite: its size and shape, and every gold query answering on a fresh demo database."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlglot
import yaml
from sqlglot import exp

from app.db import demo
from models.scenarios import SCENARIO_DIR, Case, load_suite
from models.synth import normalize_question

CASES = load_suite()
SCENARIOS = ("sales_reporting", "customer_analytics", "product_inventory", "employees_hr", "payments_finance",
             "time_trends")  # fmt: skip


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Iterator[sqlite3.Connection]:
    path = demo.build_sqlite(tmp_path_factory.mktemp("scenarios") / "demo.sqlite")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    yield conn
    conn.close()


def test_suite_size():
    assert len(CASES) >= 90
    per_scenario = Counter(c.scenario for c in CASES)
    assert set(SCENARIOS) <= set(per_scenario)
    assert min(per_scenario.values()) >= 12


def test_one_file_per_scenario():
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["scenario"] == path.stem
        assert doc["description"].strip()


def test_questions_unique():
    keys = Counter(normalize_question(c.question) for c in CASES)
    assert [q for q, n in keys.items() if n > 1] == []


def test_load_suite_rejects_bad_files(tmp_path):
    (tmp_path / "broken.yaml").write_text("scenario: x\ncases:\n  - question: only a question\n")
    with pytest.raises(ValueError, match="needs a question and an sql"):
        load_suite(tmp_path)
    (tmp_path / "broken.yaml").write_text("just text\n")
    with pytest.raises(ValueError, match="cases"):
        load_suite(tmp_path)


def test_load_suite_reads_a_directory(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("scenario: a\ndescription: d\ncases:\n  - question: Q?\n    sql: SELECT 1\n")
    assert load_suite(tmp_path) == [Case("a", "Q?", "SELECT 1")]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.scenario}-{i}" for i, c in enumerate(CASES)])
def test_gold_sql_answers(case: Case, demo_db: sqlite3.Connection):
    statements = sqlglot.parse(case.sql, read="sqlite")
    assert len(statements) == 1 and isinstance(statements[0], exp.Select), "one SELECT"
    rows = demo_db.execute(case.sql).fetchall()
    assert rows, "no rows"
    assert any(v is not None for v in rows[0]), "only NULLs"
