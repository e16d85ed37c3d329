"""Schema-constrained decoding: which tokens the identifier lexer refuses, on the real tokenizer's tokens."""

import numpy as np
import pytest
from tests_support import MODEL_DIR
from tokenizers import Tokenizer

from app.nl2sql.constrain import IdentifierConstraint, SchemaNames, pick_allowed, token_texts
from app.nl2sql.engine import pick_token
from app.nl2sql.generator import GREEDY

NAMES = SchemaNames.of(
    [
        ("customers", ["customer_id", "name", "email", "city", "country", "segment", "region_id", "signup_date"]),
        ("orders", ["order_id", "customer_id", "order_date", "status"]),
        ("order_items", ["order_id", "product_id", "quantity", "unit_price", "discount"]),
        ("regions", ["region_id", "name"]),
        ("Odd Table", ["x"]),  # needs quoting: not a name the lexer can check, so not listed
    ]
)


@pytest.fixture(scope="module")
def tokenizer():
    """The served export's tokenizer (build/onnx, built with the model): the tests that take it are marked slow."""
    return Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def texts(tokenizer):
    return token_texts(tokenizer)


def refused_at(sql: str, tokenizer, texts) -> list[tuple[int, str]]:
    """Feed `sql` token by token; (character offset, text) of each token the constraint would have refused."""
    c = IdentifierConstraint(NAMES, texts)
    out, offset = [], 0
    for t in tokenizer.encode(sql, add_special_tokens=False).ids:
        if not c.allows(t):
            out.append((offset, texts[t]))
        c.advance(t)
        offset += len(texts[t])
    return out


def refused(sql: str, tokenizer, texts) -> list[str]:
    return [text for _, text in refused_at(sql, tokenizer, texts)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT segment, COUNT(*) FROM customers GROUP BY segment",
        "SELECT c.name, COUNT(*) AS orders FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
        "GROUP BY c.customer_id, c.name ORDER BY orders DESC LIMIT 10",
        "SELECT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
        "WHERE T2.status = 'shipped' AND T2.order_date >= '2024-01-01'",
        "WITH per AS (SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id) SELECT avg(n) FROM per",
        "SELECT name FROM customers WHERE customer_id NOT IN (SELECT customer_id FROM orders)",
        "SELECT strftime('%Y', order_date) AS year, SUM(oi.quantity * oi.unit_price * (1 - oi.discount)) "
        "FROM orders JOIN order_items oi ON oi.order_id = orders.order_id GROUP BY year ORDER BY year",
        'SELECT "first name", `weird col`, [other col] FROM "Odd Table" WHERE x = \'any words at all, inside\'',
        "SELECT CAST(COUNT(*) AS REAL) / 3.5e2, ROUND(AVG(1.0 * quantity), 2) FROM order_items LIMIT 5 OFFSET 10",
        "select NAME from CUSTOMERS where City = 'Chicago' order by Name",
        # a subquery names its own tables after its own SELECT list; outer tables stay in scope inside it
        "SELECT name FROM customers WHERE customer_id IN (SELECT customer_id FROM orders WHERE status = 'paid')",
        "SELECT name FROM customers AS c WHERE EXISTS (SELECT 1 FROM orders AS o WHERE o.customer_id = c.customer_id)",
        "SELECT name FROM customers UNION SELECT status FROM orders",
        "SELECT r.name, COUNT(*) FROM regions r, customers c WHERE c.region_id = r.region_id GROUP BY r.name",
        "SELECT T1.name, T2.status FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id",
        "SELECT count(T2.order_id), T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
        "GROUP BY T1.customer_id",
        "SELECT name, status FROM customers JOIN orders ON orders.customer_id = customers.customer_id",
        "SELECT customer_id FROM (SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY customer_id) AS t "
        "WHERE t.n > 2 ORDER BY n",
        # a joined table whose alias the SELECT list never used (it was refused, and the row stopped after `JOIN x`)
        "SELECT r.name, SUM(oi.quantity * oi.unit_price) AS revenue FROM regions r JOIN customers c "
        "ON c.region_id = r.region_id JOIN orders o ON o.customer_id = c.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id GROUP BY r.name",
        "SELECT oi.quantity FROM orders o JOIN order_items AS oi ON oi.order_id = o.order_id",
    ],
)
def test_valid_sql_is_never_refused(sql, tokenizer, texts):
    assert refused(sql, tokenizer, texts) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sql", "bad_name"),
    [
        ("SELECT name FROM customers WHERE first_name = 'Ann'", "first_name"),  # no such column
        ("SELECT name FROM customers ORDER BY revenue DESC", "revenue"),
        ("SELECT COUNT(*) FROM invoices", "invoices"),  # no such table
        ("SELECT quantity FROM order_items oi WHERE oi.customer_id = 1", "customer_id"),  # not of that table
        ("SELECT T1.bogus FROM customers AS T1", "bogus"),
        ("SELECT name FROM customers AS T1 WHERE T1. status = 1", "status"),  # of orders, not of customers
        ("SELECT c.name FROM customers c WHERE c.signup = 1", "signup"),  # a prefix of a column is not a column
        # once FROM has named the tables, an unqualified column must be one of theirs (order_date is in orders)
        ("SELECT name FROM customers WHERE strftime('%Y', order_date) = '2024'", "order_date"),
        # ... and `x.` must be an alias the query defined
        ("SELECT COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id ORDER BY oi.quantity", "oi"),
        ("SELECT name FROM customers UNION SELECT status FROM orders WHERE quantity > 1", "quantity"),
        ("SELECT name FROM customers WHERE strftime('%Y', orders) = '2024'", "orders"),  # a table is no column
        # the tables FROM names must provide what the SELECT list used: T1/T2 bind in order, bare columns somewhere
        ("SELECT T2.status FROM orders AS T1 JOIN customers AS T2 ON T1.customer_id = T2.customer_id", "customers"),
        ("SELECT discount, quantity FROM products", "products"),
        # a keyword is no table: `Order` for Northwind's "Order Details" (the 0.5B wrote `JOIN Order AS T2`)
        ("SELECT COUNT(*) FROM customers c JOIN Order AS o ON o.customer_id = c.customer_id", "Order"),
        ("SELECT name FROM customers, Odd", "Odd"),  # a table needing quotes is written quoted
    ],
)
def test_names_outside_the_schema_are_refused(sql, bad_name, tokenizer, texts):
    bad = refused_at(sql, tokenizer, texts)
    assert bad, f"nothing refused in {sql!r}"
    # the first refusal is the token that starts the bad name (with its leading space), one inside it, or its end
    start = sql.index(bad_name) - 1
    assert start <= bad[0][0] <= start + 1 + len(bad_name), (bad, start)


@pytest.mark.slow
def test_a_refused_token_taken_anyway_does_not_wedge_the_row(tokenizer, texts):
    c = IdentifierConstraint(NAMES, texts)
    for t in tokenizer.encode("SELECT bogus", add_special_tokens=False).ids:
        c.advance(t)  # taken unchecked: the lexer follows the text all the same
    after = tokenizer.encode(" FROM customers", add_special_tokens=False).ids
    assert c.allows(after[0])
    assert c.refused == 1  # the token that started `bogus`, taken anyway


@pytest.mark.slow
def test_a_word_taken_against_the_constraint_is_not_judged_again(tokenizer, texts):
    c = IdentifierConstraint(NAMES, texts)
    ids = tokenizer.encode("SELECT name FROM customers WHERE bogus = 1", add_special_tokens=False).ids
    verdicts = []
    for t in ids:
        verdicts.append(c.allows(t))
        c.advance(t)
    assert verdicts.count(False) == 1 and c.refused == 1  # only the token that started the unknown word


def after(prefix: str, tokenizer, texts) -> tuple[IdentifierConstraint, int]:
    """A constraint with `<|im_end|>` as its stop token, having taken `prefix`; and that token's id."""
    end = tokenizer.token_to_id("<|im_end|>")
    c = IdentifierConstraint(NAMES, texts, free_tokens=[end])
    for t in tokenizer.encode(prefix, add_special_tokens=False).ids:
        c.advance(t)
    return c, end


@pytest.mark.slow
def test_stop_tokens_are_always_allowed(tokenizer, texts):
    c, end = after("SELECT name FROM customers WHERE bog", tokenizer, texts)
    assert c.allows(end)


@pytest.mark.slow
def test_an_alias_is_never_refused_where_it_is_defined(tokenizer, texts):
    """The table was judged where FROM named it; a refused alias came back glued to the next word (`AS T1JOIN`)."""
    sql = "SELECT T1.name FROM orders AS T1 JOIN customers AS T2 ON T1.customer_id = T2.customer_id"
    bad = refused_at(sql, tokenizer, texts)
    assert [offset for offset, _ in bad] == [sql.index(" AS T1")], bad  # the token that ends `orders`, no other


@pytest.mark.slow
def test_a_refused_token_is_never_replaced_by_a_stop_token(tokenizer, texts):
    """Ending the SQL mid-clause is always wrong: the next allowed token, or the model's own choice, is taken."""
    c, end = after("SELECT name FROM customers WHERE", tokenizer, texts)
    bogus = tokenizer.encode(" elephant", add_special_tokens=False).ids[0]  # one token in both tokenizers
    assert not c.allows(bogus)
    logits = np.full(len(texts), -1e9, dtype=np.float32)
    logits[bogus], logits[end] = 10.0, 9.0  # the model's choice is refused; a stop is the next most likely
    assert pick_token(logits, GREEDY, None, c) != end


def test_pick_allowed_takes_the_most_likely_allowed_token():
    assert pick_allowed([5, 3, 9], lambda t: t != 5) == 3
    assert pick_allowed([5, 3], lambda t: False) is None


def test_names_come_from_a_schema(demo_db):
    import sqlalchemy as sa

    from app.db.catalog import SchemaCatalog

    schema = SchemaCatalog(sa.create_engine(f"sqlite:///{demo_db}")).schema
    names = SchemaNames.from_schema(schema)
    assert {"customers", "orders", "order_items"} <= names.tables
    assert "unit_price" in names.columns["order_items"] and "unit_price" not in names.columns["customers"]
    assert names.has_prefix("unit_") and names.has_prefix("sel") and not names.has_prefix("qqq")


def test_names_that_need_quoting_are_quoted_where_the_model_wrote_them_bare():
    names = SchemaNames.of([("Orders", ["OrderID"]), ("Order Details", ["OrderID", "Unit Price"])])
    assert names.quoted == ("Order Details", "Unit Price")  # longest first: `Order Details Extended` would win
    sql = "SELECT SUM(od.Unit Price) FROM Orders o JOIN order details od ON od.OrderID = o.OrderID"
    assert names.quote_bare(sql) == (
        'SELECT SUM(od."Unit Price") FROM Orders o JOIN "Order Details" od ON od.OrderID = o.OrderID'
    )
    # already quoted, or inside a string literal: left as written; a longer word is not the name
    for sql in ('SELECT * FROM "Order Details"', "SELECT 'Order Details'", "SELECT * FROM [Order Details]"):
        assert names.quote_bare(sql) == sql
    assert names.quote_bare("SELECT * FROM Order Detailsx") == "SELECT * FROM Order Detailsx"
    assert SchemaNames.of([("t", ["a"])]).quote_bare("SELECT a FROM t") == "SELECT a FROM t"
