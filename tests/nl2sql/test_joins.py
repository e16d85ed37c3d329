"""Joins on columns that no key links (`app.nl2sql.joins`): what counts as keyed, and what the check leaves alone."""

from app.db.schema import Column, ForeignKey, Schema, Table
from app.nl2sql.joins import KeyLinks, unkeyed_joins

SHOP = Schema(
    "sqlite",
    (
        Table("customers", (Column("id", "int", True), Column("name", "text"), Column("city", "text"))),
        Table(
            "orders",
            (Column("order_id", "int", True), Column("customer_id", "int"), Column("total", "num")),
            (),  # customer_id -> customers.id is not declared: the name says it
        ),
        Table(
            "payments",
            (Column("payment_id", "int", True), Column("order_id", "int"), Column("amount", "num")),
            (ForeignKey("order_id", "orders", "order_id"),),
        ),
        Table(
            "employees",
            (Column("employee_id", "int", True), Column("manager_id", "int"), Column("name", "text")),
            (ForeignKey("manager_id", "employees", "employee_id"),),
        ),
    ),
)
KEYS = KeyLinks(SHOP)


def test_joins_on_declared_keys_same_names_and_names_after_a_table_are_keyed():
    keyed = [
        "SELECT * FROM payments p JOIN orders o ON o.order_id = p.order_id",  # declared, written either way round
        "SELECT * FROM orders o JOIN payments p ON p.order_id = o.order_id",
        "SELECT * FROM orders JOIN payments USING (order_id)",
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id",  # customer_id for customers.id
        "SELECT e.name, m.name FROM employees e JOIN employees m ON m.employee_id = e.manager_id",  # a self-join
        "SELECT name FROM customers JOIN orders ON customer_id = id",  # bare names, each in one table only
    ]
    for sql in keyed:
        assert unkeyed_joins(sql, KEYS) == [], sql


def test_a_join_on_unlinked_columns_is_named_with_its_tables():
    sql = "SELECT c.name FROM customers AS c JOIN payments AS p ON c.id = p.order_id WHERE p.amount > 10"
    assert unkeyed_joins(sql, KEYS) == ["customers.id = payments.order_id"]
    # in a subquery too, each SELECT with its own aliases
    nested = (
        "SELECT name FROM customers WHERE id IN "
        "(SELECT o.order_id FROM orders o JOIN payments p ON p.payment_id = o.order_id)"
    )
    assert unkeyed_joins(nested, KEYS) == ["payments.payment_id = orders.order_id"]
    # every unlinked equality of an ON, keyed ones left out
    two = "SELECT * FROM orders o JOIN payments p ON p.order_id = o.order_id AND p.payment_id = o.customer_id"
    assert unkeyed_joins(two, KEYS) == ["payments.payment_id = orders.customer_id"]


def test_what_the_check_cannot_judge_is_left_alone():
    unresolved = [
        "SELECT * FROM orders o JOIN (SELECT order_id AS x FROM payments) s ON s.x = o.total",  # a subquery's column
        "SELECT * FROM orders JOIN payments ON amount = total + 1",  # not column = column
        "SELECT * FROM orders o JOIN payments p ON o.order_id = p.amount OR",  # does not parse
        "SELECT * FROM orders o, payments p WHERE o.total = p.amount",  # no JOIN … ON: not a join the check reads
    ]
    for sql in unresolved:
        assert unkeyed_joins(sql, KEYS) == [], sql
    no_keys = Schema("sqlite", tuple(Table(t.name, t.columns) for t in SHOP.tables))  # nothing declared at all
    assert unkeyed_joins("SELECT * FROM customers c JOIN payments p ON c.id = p.order_id", KeyLinks(no_keys)) == []


def test_postgresql_queries_are_read_in_their_dialect():
    sql = "SELECT c.\"name\" FROM customers c JOIN payments p ON c.id = p.order_id WHERE c.city ILIKE '%a%'"
    assert unkeyed_joins(sql, KEYS, "postgres") == ["customers.id = payments.order_id"]


def test_an_on_that_reads_one_table_reference_on_both_sides_joins_nothing():
    """A tautology (the same column on both sides) or two columns of the joined table alone: every row of one table
    meets every row of the other. Beside a real join equality, such a condition is a filter and no sign."""
    assert unkeyed_joins("SELECT o.total FROM customers c JOIN orders o ON o.order_id = o.order_id", KEYS) == [
        "orders.order_id = orders.order_id"
    ]
    assert unkeyed_joins("SELECT * FROM customers c JOIN orders o ON o.customer_id = o.order_id", KEYS) == [
        "orders.customer_id = orders.order_id"
    ]
    keyed_and_filter = "SELECT * FROM orders o JOIN payments p ON p.order_id = o.order_id AND p.amount = p.order_id"
    assert unkeyed_joins(keyed_and_filter, KEYS) == []
    # a self-join reads one table through two references: still judged by its key
    assert unkeyed_joins("SELECT * FROM employees e JOIN employees m ON m.employee_id = e.manager_id", KEYS) == []
    assert unkeyed_joins("SELECT * FROM employees e JOIN employees m ON m.name = e.manager_id", KEYS) == [
        "employees.name = employees.manager_id"
    ]
