"""Spider hardness on known Spider queries (one per level and each way to reach it), and SQL feature counts."""

import json
from collections import Counter

import pytest

from models.data import SPIDER_DIR
from models.hardness import LEVELS, hardness, sql_features


@pytest.mark.parametrize(
    ("sql", "level"),
    [
        # component1 0, others 0 (one aggregate is not "more than one")
        ("SELECT count(*) FROM singer", "easy"),
        ("SELECT name FROM singer WHERE age > 20", "easy"),
        # component1 1, others 1 (several select columns)
        ("SELECT name, country, age FROM singer ORDER BY age DESC", "medium"),
        # component1 1, others 2 (three aggregates, three columns)
        ("SELECT avg(age), min(age), max(age) FROM singer WHERE country = 'France'", "medium"),
        # component1 2 (join, group), others 1
        (
            "SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
            "GROUP BY T1.stadium_id",
            "medium",
        ),
        # component1 3 (group, order, limit), others 0
        ("SELECT country FROM singer GROUP BY country ORDER BY count(*) DESC LIMIT 1", "hard"),
        # component1 1, others 3 (aggregates, columns, where conditions)
        ("SELECT a, max(b), min(b) FROM t WHERE x = 1 AND y = 2", "hard"),
        # component2 1 (a set operation), the left query simple
        ("SELECT country FROM singer WHERE age > 40 INTERSECT SELECT country FROM singer WHERE age < 30", "hard"),
        # component2 1 (nested query); the right side of a set operation is not scored either
        ("SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)", "hard"),
        (
            "SELECT name FROM stadium EXCEPT SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 "
            "ON T1.stadium_id = T2.stadium_id WHERE T1.year = 2014",
            "hard",
        ),
        # component1 5: where, group, order, limit, join
        (
            "SELECT T2.name, T2.capacity FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
            "WHERE T1.year >= 2014 GROUP BY T2.stadium_id ORDER BY count(*) DESC LIMIT 1",
            "extra",
        ),
        # component1 2 (join, where), component2 2 (nested IN, EXCEPT)
        (
            "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
            "WHERE T2.concert_id IN (SELECT concert_id FROM concert WHERE year = 2014) "
            "EXCEPT SELECT name FROM singer WHERE age > 40",
            "extra",
        ),
    ],
)
def test_levels(sql: str, level: str) -> None:
    assert hardness(sql) == level


def test_each_extra_table_and_or_like_counts() -> None:
    # three tables = 2 joins, plus where: component1 3 -> hard; an OR and a LIKE make it 5 -> extra
    three = "SELECT a FROM t JOIN u ON t.id = u.id JOIN v ON u.id = v.id WHERE t.x = 1"
    assert hardness(three) == "hard"
    assert hardness(three + " OR t.y LIKE '%z%'") == "extra"


def test_spider_not_flag_counts_as_an_aggregate() -> None:
    # Spider's count_agg reads the NOT flag of a WHERE condition: count(*) + NOT IN are "two aggregates"
    assert hardness("SELECT count(*) FROM t WHERE a NOT IN (SELECT b FROM u)") == "extra"
    assert hardness("SELECT count(*) FROM t WHERE a IN (SELECT b FROM u)") == "hard"


def test_unparseable_is_extra() -> None:
    for sql in ("SELEC name FROM singer", "SELECT * FROM", "", "SELECT 1; SELECT 2"):
        assert hardness(sql) == "extra"
        assert set(sql_features(sql).values()) == {0}


def test_features() -> None:
    sql = (
        "SELECT T1.name, count(*) FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T1.x IN "
        "(SELECT x FROM c WHERE y > 1) GROUP BY T1.name UNION SELECT name, 0 FROM d ORDER BY 2 DESC LIMIT 3"
    )
    assert sql_features(sql) == {
        "joins": 1,
        "where": 2,
        "group_by": 1,
        "order_by": 1,
        "limit": 1,
        "aggregates": 1,
        "nesting": 1,
        "set_ops": 1,
    }
    assert sql_features("SELECT count(*) FROM (SELECT a FROM t)")["nesting"] == 1
    assert sql_features("SELECT a, row_number() OVER (ORDER BY a) FROM t")["order_by"] == 0


def test_spider_dev_distribution_matches_the_published_one() -> None:
    # Yu et al. (2018) and the official evaluation: dev has 248 easy, 446 medium, 174 hard, 166 extra
    rows = json.loads((SPIDER_DIR / "dev.json").read_text())
    counts = Counter(hardness(r["query"]) for r in rows)
    assert [counts[lvl] for lvl in LEVELS] == [248, 446, 174, 166]
