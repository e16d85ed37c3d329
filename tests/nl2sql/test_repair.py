"""A table the model's SQL uses but never reads (`app.nl2sql.repair`): joined in on its one key, or the alias it
meant, on the demo database's real schema; and everything with more than one reading, or none, left as written."""

import sqlite3

import pytest
import sqlalchemy as sa

from app.db.schema import Column, ForeignKey, Schema, Table, introspect
from app.nl2sql.extract import sql_of
from app.nl2sql.joins import KeyLinks
from app.nl2sql.repair import repair_missing_tables


@pytest.fixture(scope="module")
def links(demo_db) -> KeyLinks:
    engine = sa.create_engine(f"sqlite:///{demo_db}")
    try:
        return KeyLinks(introspect(engine))
    finally:
        engine.dispose()


def rows(demo_db, sql: str) -> list[tuple]:
    with sqlite3.connect(demo_db) as con:
        return con.execute(sql).fetchall()


def test_a_table_used_but_never_read_is_joined_on_its_key(demo_db, links):
    """Revenue by region, written over `orders o` without `order_items oi`: SQLite refuses it; repaired, it is the
    query a person would have written, and returns the same rows."""
    sql = (
        "SELECT r.name, SUM(oi.quantity * oi.unit_price * (1 - oi.discount)) AS revenue FROM regions r "
        "JOIN customers c ON c.region_id = r.region_id JOIN orders o ON o.customer_id = c.customer_id "
        "WHERE strftime('%Y', o.order_date) = '2025' GROUP BY r.name ORDER BY revenue DESC"
    )
    with pytest.raises(sqlite3.OperationalError, match="no such column: oi.quantity"):
        rows(demo_db, sql)
    fixed = repair_missing_tables(sql, links)
    assert "JOIN order_items AS oi ON oi.order_id = o.order_id" in fixed
    intended = sql.replace("WHERE", "JOIN order_items oi ON oi.order_id = o.order_id WHERE")
    assert rows(demo_db, fixed) == rows(demo_db, intended) != []


def test_a_table_named_but_never_read_is_joined_under_its_name(demo_db, links):
    sql = (
        "SELECT SUM(oi.quantity * (oi.unit_price * (1 - oi.discount) - products.unit_cost)) FROM order_items oi "
        "JOIN orders o ON o.order_id = oi.order_id WHERE strftime('%Y', o.order_date) = '2025'"
    )
    fixed = repair_missing_tables(sql, links)
    assert "JOIN products AS products ON products.product_id = oi.product_id" in fixed
    assert rows(demo_db, fixed)[0][0] > 0


def test_a_misspelt_alias_becomes_the_alias_of_the_one_table_that_has_its_columns(demo_db, links):
    sql = (
        "SELECT c.segment, COUNT(*) FROM customers AS cu JOIN orders AS o ON o.customer_id = cu.customer_id GROUP BY 1"
    )
    fixed = repair_missing_tables(sql, links)
    assert fixed.startswith("SELECT cu.segment, COUNT(*)") and fixed.count("JOIN") == 1
    assert len(rows(demo_db, fixed)) > 1
    # `name`: customers, regions, products... have one; with several readings, the alias stays as written
    assert repair_missing_tables(sql.replace("c.segment", "c.name"), links) == sql.replace("c.segment", "c.name")


@pytest.mark.parametrize(
    "sql",
    [
        # two readings: order_items (read as oi) and products both have unit_price
        "SELECT SUM(p.unit_price * oi.quantity) FROM orders o JOIN order_items oi ON oi.order_id = o.order_id",
        # no table has every column written with the qualifier
        "SELECT x.name, x.quantity FROM orders o",
        # a self-join: which of the two readings is meant is a guess
        "SELECT boss.first_name FROM employees e JOIN employees m ON m.employee_id = e.manager_id",
        # an outer query's alias, a derived table's, a CTE's: all in scope
        "SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)",
        "SELECT t.n FROM (SELECT COUNT(*) AS n FROM orders) AS t",
        "WITH per AS (SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY customer_id) SELECT per.n FROM per",
        # right as it is, and SQL that does not parse
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.customer_id",
        "SELECT FROM WHERE (",
    ],
)
def test_anything_with_no_single_reading_is_left_as_written(links, sql):
    assert repair_missing_tables(sql, links) == sql


def test_no_key_linking_the_table_leaves_it_alone():
    """Two tables, no declared key and no column named after the other: nothing says how to join them."""
    loose = KeyLinks(
        Schema(
            "sqlite",
            (
                Table("a", (Column("id", "int", True), Column("x", "int"))),
                Table("b", (Column("id", "int", True), Column("y", "int"))),
                Table("c", (Column("c_id", "int", True), Column("a_ref", "int"), Column("z", "int")),
                      (ForeignKey("a_ref", "a", "id"),)),
            ),
        )
    )  # fmt: skip
    assert repair_missing_tables("SELECT b.y FROM a", loose) == "SELECT b.y FROM a"
    assert "JOIN c AS c ON c.a_ref = a.id" in repair_missing_tables("SELECT a.x, c.z FROM a", loose)


def test_names_that_need_quoting_are_quoted_in_the_join():
    """PostgreSQL folds unquoted names to lower case: a mixed-case or spaced name is written quoted."""
    shop = KeyLinks(
        Schema(
            "postgresql",
            (
                Table("Orders", (Column("OrderID", "int", True), Column("CustomerID", "int"))),
                Table("Order Details", (Column("OrderID", "int"), Column("Quantity", "int")),
                      (ForeignKey("OrderID", "Orders", "OrderID"),)),
            ),
        )
    )  # fmt: skip
    fixed = repair_missing_tables('SELECT SUM(od.Quantity) FROM "Orders" o', shop, "postgres")
    assert 'JOIN "Order Details" AS od ON od."OrderID" = o."OrderID"' in fixed
    # aliases keep the model's spelling, unquoted: quoted, "OD" would no longer match the folded od
    fixed = repair_missing_tables('SELECT SUM(OD.Quantity), O."CustomerID" FROM "Orders" O', shop, "postgres")
    assert "SUM(OD.Quantity)" in fixed and 'JOIN "Order Details" AS OD ON OD."OrderID" = O."OrderID"' in fixed


def test_sql_of_repairs_only_with_the_keys_at_hand(links):
    text = "SELECT SUM(oi.quantity) FROM orders o"
    assert sql_of(text, None) == text
    assert "JOIN order_items AS oi ON oi.order_id = o.order_id" in sql_of(text, None, links)


CARS = KeyLinks(
    Schema(
        "sqlite",
        (
            Table("car_makers", (Column("Id", "int", True), Column("Maker", "text"), Column("FullName", "text"))),
            Table("car_names", (Column("MakeId", "int", True), Column("Model", "text"), Column("Make", "text")),
                  (ForeignKey("MakeId", "cars_data", "Id"),)),
            Table("cars_data", (Column("Id", "int", True), Column("Weight", "int"), Column("Year", "int"))),
        ),
    )
)  # fmt: skip


def test_a_column_under_the_wrong_alias_moves_to_the_one_table_read_that_has_it():
    """Spider's car_1 as the served model answered it: `T1.Model` over car_makers, which has no Model, beside
    car_names, which has; the other columns stay where they are."""
    sql = (
        "SELECT DISTINCT T1.Model FROM car_makers AS T1 JOIN car_names AS T2 ON T1.Id = T2.MakeId "
        "JOIN cars_data AS T3 ON T2.MakeId = T3.Id WHERE T1.FullName = 'General Motors' OR T3.Weight > 3500"
    )
    assert repair_missing_tables(sql, CARS) == sql.replace("T1.Model", "T2.Model")
    # both at once: a misspelt alias (c: car_makers is read as cm) and a column under the wrong one
    sql = "SELECT c.FullName, cd.Model FROM car_makers AS cm JOIN car_names AS cn ON cm.Id = cn.MakeId JOIN cars_data AS cd ON cn.MakeId = cd.Id"
    fixed = repair_missing_tables(sql, CARS)
    assert fixed.startswith("SELECT cm.FullName, cn.Model FROM")


def test_a_moved_column_gives_the_rows_the_model_meant(demo_db, links):
    sql = (
        "SELECT o.name, COUNT(*) AS n FROM customers AS c JOIN orders AS o ON o.customer_id = c.customer_id "
        "GROUP BY c.customer_id ORDER BY n DESC, c.customer_id LIMIT 5"
    )
    with pytest.raises(sqlite3.OperationalError, match="no such column: o.name"):
        rows(demo_db, sql)
    fixed = repair_missing_tables(sql, links)
    assert fixed.startswith("SELECT c.name, COUNT(*) AS n")
    assert rows(demo_db, fixed) == rows(demo_db, sql.replace("o.name", "c.name")) != []


@pytest.mark.parametrize(
    "sql",
    [
        # customers and products both have a name: two readings
        "SELECT o.name FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id JOIN products p ON p.product_id = oi.product_id",
        # no table read has it
        "SELECT o.nickname FROM orders o JOIN customers c ON c.customer_id = o.customer_id",
        # the one table that has it is read twice (a self-join)
        "SELECT o.first_name FROM orders o JOIN employees e ON e.employee_id = o.employee_id "
        "JOIN employees m ON m.employee_id = e.manager_id",
        # an outer query's alias inside a subquery: that SELECT's own tables only
        "SELECT c.name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE c.order_date > '2025')",
    ],
)
def test_a_column_under_the_wrong_alias_with_no_single_reading_is_left_as_written(links, sql):
    assert repair_missing_tables(sql, links) == sql
