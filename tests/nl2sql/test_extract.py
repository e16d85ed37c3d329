"""SQL extraction from model output: bare SQL, fenced blocks, prose around it, statement ends."""

import pytest

from app.nl2sql.extract import extract_sql


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
        ("SELECT name FROM t;", "SELECT name FROM t"),
        ("```sql\nSELECT a FROM b\n```\nThis returns a.", "SELECT a FROM b"),
        ("Here is the query:\n\nSELECT a FROM b WHERE c = 'x;y'; DROP TABLE b", "SELECT a FROM b WHERE c = 'x;y'"),
        ("WITH t AS (SELECT 1 AS x) SELECT x FROM t", "WITH t AS (SELECT 1 AS x) SELECT x FROM t"),
        ("SELECT a\nFROM b\n\nExplanation: ...", "SELECT a\nFROM b"),
        ("I cannot answer that.", ""),
        ("", ""),
    ],
)
def test_extract_sql(text, sql):
    assert extract_sql(text) == sql
