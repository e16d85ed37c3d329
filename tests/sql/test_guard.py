"""The SQL guard: what it refuses (each case its own test id), what it lets through, the LIMIT, transpiling."""

from __future__ import annotations

import sqlite3

import pytest
import sqlglot
from sqlglot import exp

from app.sql.guard import GuardedSQL, GuardError, guard_sql, is_denied_function

PG = {"source_dialect": "postgres", "dialect": "postgres"}

# (sql, guard_sql keyword arguments, expected words in the message)
REFUSED = [
    # Stacked statements, including a second one behind comments.
    pytest.param("SELECT 1; SELECT 2", {}, "one statement", id="stacked-selects"),
    pytest.param("SELECT * FROM customers; DROP TABLE customers", {}, "one statement", id="stacked-drop"),
    pytest.param("SELECT 1; -- x\n DROP TABLE t", {}, "one statement", id="line-comment-hides-drop"),
    pytest.param("SELECT 1 /* ; */; DELETE FROM t", {}, "one statement", id="block-comment-semicolon-delete"),
    pytest.param("SELECT 1 -- harmless\n; UPDATE t SET a = 1", {}, "one statement", id="comment-then-update"),
    # Writes, directly or inside a read.
    pytest.param("WITH d AS (SELECT 1) DELETE FROM t", {}, "DELETE", id="with-delete"),
    pytest.param("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", PG, "DELETE", id="writable-cte-delete-pg"),
    pytest.param(
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", PG, "INSERT", id="writable-cte-insert-pg"
    ),
    pytest.param("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {}, "DELETE", id="writable-cte-sqlite"),
    pytest.param("SELECT * INTO backup FROM customers", {}, "INTO", id="select-into"),
    pytest.param("SELECT * INTO TEMP backup FROM customers", PG, "INTO", id="select-into-temp-pg"),
    pytest.param("INSERT INTO t VALUES (1)", {}, "INSERT", id="insert"),
    pytest.param("INSERT INTO t SELECT * FROM customers", {}, "INSERT", id="insert-select"),
    pytest.param("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", {}, "INSERT", id="upsert"),
    pytest.param("REPLACE INTO t VALUES (1)", {}, "REPLACE", id="replace"),
    pytest.param("UPDATE customers SET name = 'x'", {}, "UPDATE", id="update"),
    pytest.param("DELETE FROM customers", {}, "DELETE", id="delete"),
    pytest.param("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", PG, "MERGE", id="merge"),
    pytest.param("CREATE TABLE x (a INT)", {}, "CREATE", id="create-table"),
    pytest.param("CREATE TABLE x AS SELECT * FROM customers", {}, "CREATE", id="create-table-as"),
    pytest.param("CREATE TEMP VIEW v AS SELECT 1", {}, "CREATE", id="create-temp-view"),
    pytest.param("DROP TABLE customers", {}, "DROP", id="drop"),
    pytest.param("ALTER TABLE customers ADD COLUMN z INT", {}, "ALTER", id="alter"),
    pytest.param("TRUNCATE customers", PG, "TRUNCATE", id="truncate"),
    # SQLite administration.
    pytest.param("ATTACH DATABASE '/tmp/evil.db' AS evil", {}, "ATTACH", id="attach"),
    pytest.param("DETACH DATABASE evil", {}, "DETACH", id="detach"),
    pytest.param("PRAGMA writable_schema=1", {}, "PRAGMA", id="pragma-writable-schema"),
    pytest.param("PRAGMA table_info(customers)", {}, "PRAGMA", id="pragma-table-info"),
    pytest.param("VACUUM", {}, "VACUUM", id="vacuum"),
    pytest.param("VACUUM INTO '/tmp/copy.db'", {}, "VACUUM", id="vacuum-into"),
    pytest.param("REINDEX customers", {}, "REINDEX", id="reindex"),
    pytest.param("ANALYZE customers", {}, "ANALYZE", id="analyze"),
    pytest.param("EXPLAIN SELECT 1", {}, "EXPLAIN", id="explain"),
    pytest.param("EXPLAIN ANALYZE DELETE FROM t", PG, "EXPLAIN", id="explain-analyze-delete-pg"),
    # PostgreSQL administration and server access.
    pytest.param("COPY t TO PROGRAM 'rm -rf /'", PG, "COPY", id="copy-to-program"),
    pytest.param("COPY t FROM '/etc/passwd'", PG, "COPY", id="copy-from-file"),
    pytest.param("COPY t TO PROGRAM 'id'", {}, "COPY", id="copy-read-as-sqlite"),
    pytest.param("SET ROLE postgres", {}, "SET", id="set-role"),
    pytest.param("SET search_path TO evil", PG, "SET", id="set-search-path"),
    pytest.param("RESET ALL", PG, "RESET", id="reset"),
    pytest.param("GRANT SELECT ON t TO someone", {}, "GRANT", id="grant"),
    pytest.param("REVOKE SELECT ON t FROM someone", PG, "REVOKE", id="revoke"),
    pytest.param("CALL do_things()", {}, "CALL", id="call"),
    pytest.param("EXECUTE prepared_plan", PG, "EXECUTE", id="execute"),
    pytest.param("DO $$ BEGIN PERFORM 1; END $$", PG, "DO", id="do-block"),
    pytest.param("LOCK TABLE customers", PG, "LOCK", id="lock-table"),
    pytest.param("NOTIFY channel", PG, "NOTIFY", id="notify"),
    pytest.param("SHOW search_path", PG, "SHOW", id="show"),
    # Transaction control.
    pytest.param("BEGIN", {}, "BEGIN", id="begin"),
    pytest.param("COMMIT", {}, "COMMIT", id="commit"),
    pytest.param("ROLLBACK", {}, "ROLLBACK", id="rollback"),
    pytest.param("SAVEPOINT a", {}, "SAVEPOINT", id="savepoint"),
    pytest.param("RELEASE a", {}, "RELEASE", id="release"),
    # Locking reads.
    pytest.param("SELECT * FROM customers FOR UPDATE", {}, "FOR UPDATE", id="for-update"),
    pytest.param("SELECT * FROM customers FOR SHARE", PG, "FOR SHARE", id="for-share-pg"),
    # Dangerous functions.
    pytest.param("SELECT load_extension('/tmp/evil.so')", {}, "load_extension", id="load-extension"),
    pytest.param("SELECT \"LOAD_EXTENSION\"('/tmp/evil.so')", {}, "load_extension", id="load-extension-quoted"),
    pytest.param("SELECT readfile('/etc/passwd')", {}, "readfile", id="readfile"),
    pytest.param("SELECT writefile('/tmp/x', 'y')", {}, "writefile", id="writefile"),
    pytest.param("SELECT edit('x')", {}, "edit", id="edit"),
    pytest.param("SELECT fts3_tokenizer('simple')", {}, "fts3_tokenizer", id="fts3-tokenizer"),
    pytest.param("SELECT pg_read_file('/etc/passwd')", PG, "pg_read_file", id="pg-read-file"),
    pytest.param("SELECT pg_catalog.pg_read_file('/etc/passwd')", PG, "pg_read_file", id="pg-read-file-qualified"),
    pytest.param("SELECT pg_read_binary_file('/etc/passwd')", PG, "pg_read_binary_file", id="pg-read-binary-file"),
    pytest.param("SELECT * FROM pg_ls_dir('.')", PG, "pg_ls_dir", id="pg-ls-dir"),
    pytest.param("SELECT * FROM customers, LATERAL pg_ls_dir('.') AS f", PG, "pg_ls_dir", id="pg-ls-dir-lateral"),
    pytest.param("SELECT pg_sleep(10)", {}, "pg_sleep", id="pg-sleep"),
    pytest.param("SELECT pg_sleep_for('1 hour')", PG, "pg_sleep_for", id="pg-sleep-for"),
    pytest.param("SELECT lo_export(1, '/tmp/x')", PG, "lo_export", id="lo-export"),
    pytest.param("SELECT lo_import('/etc/passwd')", PG, "lo_import", id="lo-import"),
    pytest.param("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", PG, "dblink", id="dblink"),
    pytest.param("SELECT dblink_exec('host=x', 'drop table t')", PG, "dblink_exec", id="dblink-exec"),
    pytest.param("SELECT pg_terminate_backend(1)", PG, "pg_terminate_backend", id="pg-terminate-backend"),
    pytest.param("SELECT pg_reload_conf()", PG, "pg_reload_conf", id="pg-reload-conf"),
    pytest.param("SELECT set_config('role', 'x', false)", PG, "set_config", id="set-config"),
    pytest.param("SELECT current_setting('data_directory')", PG, "current_setting", id="current-setting"),
    pytest.param("SELECT nextval('s')", PG, "nextval", id="nextval"),
    pytest.param("SELECT setval('s', 1)", PG, "setval", id="setval"),
    pytest.param("SELECT txid_current()", PG, "txid_current", id="txid-current"),
    pytest.param("SELECT pg_advisory_xact_lock(1)", {}, "pg_advisory_xact_lock", id="pg-advisory-lock"),
    pytest.param("SELECT query_to_xml('delete from t', true, true, '')", PG, "query_to_xml", id="query-to-xml"),
    pytest.param(
        "SELECT name FROM customers WHERE id IN (SELECT pg_sleep(5))", {}, "pg_sleep", id="function-in-subquery"
    ),
    pytest.param("SELECT * FROM pragma_table_info('customers')", {}, "pragma_table_info", id="pragma-function"),
    # System catalogs (a product choice: the schema page shows the schema).
    pytest.param("SELECT * FROM sqlite_master", {}, "sqlite_master", id="sqlite-master"),
    pytest.param("SELECT sql FROM sqlite_schema", {}, "sqlite_schema", id="sqlite-schema"),
    pytest.param("SELECT * FROM sqlite_temp_master", {}, "sqlite_temp_master", id="sqlite-temp-master"),
    pytest.param("SELECT * FROM main.sqlite_master", {}, "sqlite_master", id="main-sqlite-master"),
    pytest.param(
        "SELECT name FROM customers WHERE name IN (SELECT name FROM sqlite_master)",
        {},
        "sqlite_master",
        id="sqlite-master-in-subquery",
    ),
    pytest.param("SELECT * FROM pragma_database_list", {}, "pragma_database_list", id="pragma-table"),
    pytest.param("SELECT usename FROM pg_catalog.pg_user", PG, "pg_catalog", id="pg-catalog"),
    pytest.param("SELECT * FROM information_schema.tables", {}, "information_schema", id="information-schema"),
    pytest.param("SELECT * FROM pg_shadow", PG, "pg_shadow", id="pg-shadow"),
    pytest.param("SELECT rolpassword FROM pg_authid", {}, "pg_authid", id="pg-authid"),
    pytest.param("SELECT * FROM pg_stat_activity", PG, "pg_stat_activity", id="pg-stat-activity"),
    # Not a query at all.
    pytest.param("VALUES (1)", {}, "VALUES", id="bare-values"),
]


@pytest.mark.parametrize(("sql", "kwargs", "words"), REFUSED)
def test_refused(sql: str, kwargs: dict, words: str) -> None:
    with pytest.raises(GuardError) as info:
        guard_sql(sql, **kwargs)
    assert info.value.category == "refused"
    assert words.lower() in info.value.message.lower()


ALLOWED_TABLES = {"allowed_tables": ["customers", "orders"]}


@pytest.mark.parametrize(
    ("sql", "kwargs"),
    [
        pytest.param("SELECT * FROM secrets", ALLOWED_TABLES, id="unlisted-table"),
        pytest.param("SELECT * FROM customers JOIN secrets ON secrets.id = customers.id", ALLOWED_TABLES, id="join"),
        pytest.param(
            "SELECT name FROM customers WHERE id IN (SELECT id FROM secrets)", ALLOWED_TABLES, id="in-subquery"
        ),
        pytest.param("WITH s AS (SELECT * FROM secrets) SELECT * FROM s", ALLOWED_TABLES, id="inside-cte"),
        # An inner CTE named like a real table must not hide the real table read outside its scope.
        pytest.param(
            "SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) AS s",
            ALLOWED_TABLES,
            id="cte-name-out-of-scope",
        ),
        # In PostgreSQL a non-recursive CTE's own name inside its body is the real table.
        pytest.param(
            "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
            {**ALLOWED_TABLES, **PG},
            id="pg-cte-self-reference",
        ),
        pytest.param("SELECT * FROM other.customers", ALLOWED_TABLES, id="other-schema"),
    ],
)
def test_allowed_tables_enforced(sql: str, kwargs: dict) -> None:
    with pytest.raises(GuardError) as info:
        guard_sql(sql, **kwargs)
    assert info.value.category == "refused"
    assert "cannot use (or that do not exist)" in info.value.message


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("", id="empty"),
        pytest.param("   \n\t ", id="whitespace"),
        pytest.param("-- just a comment", id="line-comment"),
        pytest.param("/* nothing */ ;", id="block-comment-semicolon"),
        pytest.param(";", id="semicolon"),
    ],
)
def test_empty_input(sql: str) -> None:
    with pytest.raises(GuardError) as info:
        guard_sql(sql)
    assert info.value.category == "syntax_error"
    assert "empty" in info.value.message


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELEC name FROM customers", id="typo"),
        pytest.param("SELECT name FROM customers WHERE", id="dangling-where"),
        pytest.param("SELECT 'unterminated FROM customers", id="unterminated-string"),
        pytest.param("SELECT (1 + FROM customers", id="unbalanced-parenthesis"),
    ],
)
def test_syntax_error(sql: str) -> None:
    with pytest.raises(GuardError) as info:
        guard_sql(sql)
    assert info.value.category == "syntax_error"
    assert info.value.message.startswith("The SQL could not be parsed")
    assert "\x1b" not in info.value.message  # sqlglot's terminal underlining stays out


def test_guard_error_is_an_exception_with_message() -> None:
    with pytest.raises(GuardError) as info:
        guard_sql("DELETE FROM customers")
    assert str(info.value) == info.value.message == "Only read-only queries are allowed: found DELETE."


def test_too_long() -> None:
    with pytest.raises(GuardError, match="too long"):
        guard_sql("SELECT 1 + " + " + ".join(["1"] * 10_000))


# A schema the allowed queries really run against, to prove the guard's output is valid SQLite.
SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), amount REAL, created_at TEXT);
INSERT INTO customers VALUES (1, 'Ann', 'Oslo'), (2, 'Bob', 'Rome'), (3, 'Cy', 'Oslo');
INSERT INTO orders VALUES (1, 1, 10.5, '2024-01-02'), (2, 1, 20, '2024-02-03'), (3, 2, 5, '2023-12-31');
"""

ALLOWED = [
    pytest.param("SELECT name FROM customers", {"customers"}, id="plain"),
    pytest.param("select name from customers where city = 'Oslo'", {"customers"}, id="lowercase-where"),
    pytest.param("SELECT name FROM customers WHERE name LIKE '%n%'", {"customers"}, id="like-percent"),
    pytest.param(
        "SELECT c.name, SUM(o.amount) AS total FROM customers AS c JOIN orders AS o ON o.customer_id = c.id "
        "GROUP BY c.name ORDER BY total DESC",
        {"customers", "orders"},
        id="join-group-order",
    ),
    pytest.param(
        "SELECT city, COUNT(*) FROM customers GROUP BY city HAVING COUNT(*) > 1", {"customers"}, id="group-having"
    ),
    pytest.param(
        "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE amount > 10)",
        {"customers", "orders"},
        id="in-subquery",
    ),
    pytest.param(
        "SELECT name FROM customers AS c WHERE EXISTS (SELECT 1 FROM orders AS o WHERE o.customer_id = c.id)",
        {"customers", "orders"},
        id="correlated-exists",
    ),
    pytest.param(
        "SELECT city, n FROM (SELECT city, COUNT(*) AS n FROM customers GROUP BY city) AS s",
        {"customers"},
        id="derived-table",
    ),
    pytest.param("WITH big AS (SELECT * FROM orders WHERE amount > 6) SELECT COUNT(*) FROM big", {"orders"}, id="cte"),
    pytest.param(
        "WITH a AS (SELECT id FROM customers), b AS (SELECT * FROM a WHERE id > 1) SELECT * FROM b",
        {"customers"},
        id="chained-ctes",
    ),
    pytest.param(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) SELECT x FROM n",
        set(),
        id="recursive-cte",
    ),
    pytest.param("SELECT city FROM customers UNION SELECT 'Paris'", {"customers"}, id="union"),
    pytest.param("SELECT id FROM customers UNION ALL SELECT id FROM orders", {"customers", "orders"}, id="union-all"),
    pytest.param(
        "SELECT id FROM customers INTERSECT SELECT customer_id FROM orders", {"customers", "orders"}, id="intersect"
    ),
    pytest.param(
        "SELECT id FROM customers EXCEPT SELECT customer_id FROM orders", {"customers", "orders"}, id="except"
    ),
    pytest.param(
        "SELECT id, amount, RANK() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS r FROM orders",
        {"orders"},
        id="window-function",
    ),
    pytest.param(
        "SELECT name FROM customers WHERE name = 'DROP TABLE customers'", {"customers"}, id="literal-drop-table"
    ),
    pytest.param(
        "SELECT name FROM customers WHERE name <> 'x; DELETE FROM orders; --'", {"customers"}, id="literal-semicolon"
    ),
    pytest.param("SELECT '/* not a comment */' AS a, '--' AS b FROM customers", {"customers"}, id="literal-comments"),
    pytest.param("SELECT 'it''s' AS quote FROM customers", {"customers"}, id="literal-escaped-quote"),
    pytest.param("SELECT strftime('%Y', created_at) AS y, COUNT(*) FROM orders GROUP BY y", {"orders"}, id="strftime"),
    pytest.param(
        "SELECT CASE WHEN amount > 10 THEN 'big' ELSE 'small' END, COALESCE(amount, 0) FROM orders",
        {"orders"},
        id="case-coalesce",
    ),
    pytest.param("SELECT hex(randomblob(16))", set(), id="randomblob"),
    pytest.param("SELECT name FROM customers;", {"customers"}, id="trailing-semicolon"),
    pytest.param("SELECT name FROM customers; -- done", {"customers"}, id="trailing-comment"),
    pytest.param("SELECT name FROM main.customers", {"customers"}, id="main-schema"),
    pytest.param("SELECT name FROM Customers", {"customers"}, id="table-case"),
    pytest.param("SELECT update_count FROM (SELECT 1 AS update_count)", set(), id="keyword-like-column"),
]


@pytest.mark.parametrize(("sql", "tables"), ALLOWED)
def test_allowed(sql: str, tables: set[str]) -> None:
    guarded = guard_sql(sql, allowed_tables=["customers", "orders"])
    assert isinstance(guarded, GuardedSQL)
    assert guarded.tables == frozenset(tables)
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    conn.execute(guarded.sql).fetchall()  # the guarded text is runnable SQLite


def _outer_limit(sql: str, dialect: str = "sqlite") -> int | None:
    limit = sqlglot.parse_one(sql, read=dialect).args.get("limit")
    return int(limit.expression.name) if limit is not None else None


def test_limit_added() -> None:
    guarded = guard_sql("SELECT name FROM customers")
    assert guarded.sql == "SELECT name FROM customers LIMIT 200"
    assert (guarded.limit, guarded.capped) == (200, True)


def test_limit_tightened() -> None:
    guarded = guard_sql("SELECT name FROM customers LIMIT 5000", row_limit=50)
    assert guarded.sql.endswith("LIMIT 50")
    assert (guarded.limit, guarded.capped) == (50, True)


@pytest.mark.parametrize("limit", [0, 5, 200])
def test_limit_kept_when_not_larger(limit: int) -> None:
    guarded = guard_sql(f"SELECT name FROM customers LIMIT {limit}")
    assert guarded.sql.endswith(f"LIMIT {limit}")
    assert (guarded.limit, guarded.capped) == (limit, False)


@pytest.mark.parametrize(
    "clause", ["LIMIT -1", "LIMIT (SELECT COUNT(*) FROM orders)", "LIMIT 10 * 1000", "LIMIT '5'", "LIMIT 2.5"]
)
def test_non_literal_limit_replaced(clause: str) -> None:
    guarded = guard_sql(f"SELECT name FROM customers {clause}")
    assert guarded.sql == "SELECT name FROM customers LIMIT 200"
    assert guarded.capped


def test_limit_keeps_offset() -> None:
    assert guard_sql("SELECT id FROM orders LIMIT 1000 OFFSET 10").sql == "SELECT id FROM orders LIMIT 200 OFFSET 10"
    # SQLite's `LIMIT offset, count`
    guarded = guard_sql("SELECT id FROM orders LIMIT 10, 5")
    assert guarded.sql == "SELECT id FROM orders LIMIT 5 OFFSET 10"
    assert guarded.limit == 5


def test_limit_on_outer_set_operation() -> None:
    guarded = guard_sql("SELECT id FROM customers UNION SELECT id FROM orders", row_limit=7)
    tree = sqlglot.parse_one(guarded.sql, read="sqlite")
    assert isinstance(tree, exp.Union)
    assert _outer_limit(guarded.sql) == 7
    assert tree.this.args.get("limit") is None and tree.expression.args.get("limit") is None


def test_limit_on_set_operation_tightened() -> None:
    guarded = guard_sql("SELECT id FROM customers EXCEPT SELECT id FROM orders LIMIT 900")
    assert _outer_limit(guarded.sql) == 200


def test_limit_on_with_query_not_inside_cte() -> None:
    guarded = guard_sql("WITH big AS (SELECT * FROM orders LIMIT 1000) SELECT * FROM big", row_limit=10)
    assert guarded.sql == "WITH big AS (SELECT * FROM orders LIMIT 1000) SELECT * FROM big LIMIT 10"


def test_limit_on_outer_query_not_subquery() -> None:
    guarded = guard_sql("SELECT * FROM (SELECT * FROM orders LIMIT 1000) AS s")
    assert guarded.sql == "SELECT * FROM (SELECT * FROM orders LIMIT 1000) AS s LIMIT 200"


def test_parenthesized_query_unwrapped() -> None:
    assert guard_sql("(SELECT name FROM customers)").sql == "SELECT name FROM customers LIMIT 200"


def test_fetch_first_on_postgres() -> None:
    guarded = guard_sql("SELECT * FROM orders FETCH FIRST 5000 ROWS ONLY", **PG)
    assert _outer_limit(guarded.sql, "postgres") == 200


def test_row_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        guard_sql("SELECT 1", row_limit=0)


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="dialect"):
        guard_sql("SELECT 1", dialect="oracle")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "SELECT strftime('%Y', created_at) FROM orders",
            "SELECT TO_CHAR(CAST(created_at AS TIMESTAMP), 'YYYY') FROM orders LIMIT 200",
            id="strftime",
        ),
        pytest.param(
            "SELECT group_concat(name, ', ') FROM customers",
            "SELECT STRING_AGG(name, ', ') FROM customers LIMIT 200",
            id="group-concat",
        ),
        pytest.param(
            "SELECT ifnull(city, '?') FROM customers",
            "SELECT COALESCE(city, '?') FROM customers LIMIT 200",
            id="ifnull",
        ),
        pytest.param(
            "SELECT `full name` FROM [my table]", 'SELECT "full name" FROM "my table" LIMIT 200', id="quoting"
        ),
        pytest.param(
            "SELECT CAST(amount AS REAL) FROM orders",
            "SELECT CAST(amount AS DOUBLE PRECISION) FROM orders LIMIT 200",
            id="cast-real",
        ),
        pytest.param("SELECT name FROM main.customers", "SELECT name FROM customers LIMIT 200", id="main-schema"),
        # SQLite needs no RECURSIVE keyword for a self-referencing CTE; PostgreSQL does.
        pytest.param(
            "WITH n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x FROM n",
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x FROM n LIMIT 200",
            id="implicit-recursive-cte",
        ),
    ],
)
def test_transpile_sqlite_to_postgres(sql: str, expected: str) -> None:
    assert guard_sql(sql, dialect="postgresql").sql == expected


def test_postgres_alias_for_dialect() -> None:
    assert guard_sql("SELECT 1", dialect="postgres") == guard_sql("SELECT 1", dialect="postgresql")


def test_comments_dropped_from_output() -> None:
    guarded = guard_sql("SELECT name /* who */ FROM customers -- */ ; DROP TABLE customers")
    assert guarded.sql == "SELECT name FROM customers LIMIT 200"


def test_tables_lowercased_without_ctes() -> None:
    guarded = guard_sql("WITH Recent AS (SELECT * FROM ORDERS) SELECT * FROM Recent JOIN Customers ON 1 = 1")
    assert guarded.tables == frozenset({"orders", "customers"})


def test_tables_schema_qualified() -> None:
    guarded = guard_sql("SELECT * FROM public.customers JOIN sales.orders ON 1 = 1", **PG)
    assert guarded.tables == frozenset({"customers", "sales.orders"})


def test_allowed_tables_case_insensitive_and_qualified() -> None:
    assert guard_sql("SELECT * FROM CUSTOMERS", allowed_tables=["Customers"]).tables == {"customers"}
    guarded = guard_sql("SELECT * FROM sales.orders", allowed_tables=["Sales.Orders"], **PG)
    assert guarded.tables == {"sales.orders"}


def test_cte_name_not_checked_against_allowed_tables() -> None:
    guarded = guard_sql("WITH totals AS (SELECT * FROM orders) SELECT * FROM totals", allowed_tables=["orders"])
    assert guarded.tables == {"orders"}


@pytest.mark.parametrize(
    ("name", "denied"),
    [
        ("LOAD_EXTENSION", True),
        ("pg_advisory_unlock_all", True),
        ("pg_catalog.pg_sleep", True),
        ("table_to_xml", True),
        ("lo_unlink", True),
        ("pg_rotate_logfile", True),
        ("pg_cancel_backend", True),
        ("pg_stat_file", True),
        ("pg_sleep_until", True),
        ("count", False),
        ("strftime", False),
        ("randomblob", False),
    ],
)
def test_is_denied_function(name: str, denied: bool) -> None:
    assert is_denied_function(name) is denied


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT YEAR(order_date) AS y, COUNT(*) FROM orders GROUP BY YEAR(order_date)",
            "SELECT CAST(STRFTIME('%Y', order_date) AS INTEGER) AS y, COUNT(*) FROM orders "
            "GROUP BY CAST(STRFTIME('%Y', order_date) AS INTEGER)",
        ),
        ("SELECT id FROM orders WHERE MONTH(order_date) = 3", "CAST(STRFTIME('%m', order_date) AS INTEGER) = 3"),
        ("SELECT DAY(order_date) FROM orders", "CAST(STRFTIME('%d', order_date) AS INTEGER)"),
        ("SELECT EXTRACT(YEAR FROM order_date) FROM orders", "CAST(STRFTIME('%Y', order_date) AS INTEGER)"),
    ],
)
def test_date_functions_sqlite_lacks_are_rewritten_and_run(sql, expected):
    import sqlite3

    out = guard_sql(sql, dialect="sqlite").sql
    assert expected in out and "YEAR(" not in out and "EXTRACT" not in out
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id INTEGER, order_date TEXT)")
    db.execute("INSERT INTO orders VALUES (1, '2025-03-09')")
    row = db.execute(out).fetchone()
    assert row is not None and all(v is not None for v in row)


def test_date_functions_stay_native_on_postgres():
    out = guard_sql("SELECT YEAR(order_date) FROM orders", dialect="postgres").sql
    assert "EXTRACT(YEAR FROM order_date)" in out and "STRFTIME" not in out


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM " + "(SELECT * FROM " * 110 + "customers" + ") AS t" * 110,
        "SELECT " + " + ".join(["x IS NULL"] * 500) + " FROM t",  # under the node cap: the depth refuses it
    ],
    ids=["nested-subqueries", "long-is-null-chain"],
)
def test_sql_nested_past_the_recursion_limit_is_refused_not_a_crash(sql):
    with pytest.raises(GuardError) as info:
        guard_sql(sql)
    assert "nested too deeply" in info.value.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT i, w FROM customers WHERE (customer_id, name) IN regions",
        "SELECT 1 IN payments",
        "SELECT 1 IN main.payments",
        "SELECT 1 IN sqlite_master",
        "SELECT name FROM customers WHERE customer_id IN nosuchtable",
    ],
)
def test_in_a_bare_table_name_is_refused_without_naming_tables(sql):
    with pytest.raises(GuardError) as info:
        guard_sql(sql, allowed_tables=["customers"])
    assert info.value.category == "refused" and "IN" in info.value.message
    assert "payments" not in info.value.message and "regions" not in info.value.message


def test_in_lists_and_subqueries_still_run():
    guard_sql("SELECT name FROM customers WHERE customer_id IN (1, 2)")
    guard_sql("SELECT name FROM customers WHERE customer_id IN (SELECT customer_id FROM orders)")


@pytest.mark.parametrize("sql", ["SELECT * FROM dbstat('main')", "SELECT name FROM DBSTAT('main') WHERE 1"])
def test_dbstat_as_a_table_valued_function_is_refused(sql):
    with pytest.raises(GuardError) as info:
        guard_sql(sql)
    assert info.value.category == "refused"


def test_parse_tree_size_is_capped_with_a_clear_refusal():
    """Past MAX_SQL_NODES parts the guard refuses before checking, transpiling and re-parsing a huge tree."""
    from app.sql.guard import MAX_SQL_CHARS, MAX_SQL_NODES

    huge = "SELECT " + "+".join(["1"] * (MAX_SQL_NODES + 100))
    assert len(huge) < MAX_SQL_CHARS  # the length cap alone lets it through
    with pytest.raises(GuardError) as info:
        guard_sql(huge)
    assert info.value.category == "refused" and f"at most {MAX_SQL_NODES}" in info.value.message
    # What people and the model write stays far below: a long report query and an IN list of 3,000 ids.
    ids = ", ".join(map(str, range(3000)))
    assert guard_sql(f"SELECT name FROM customers WHERE customer_id IN ({ids})").sql
    report = (
        "SELECT c.name, SUM(oi.quantity * oi.unit_price) AS revenue FROM customers c "
        "JOIN orders o ON o.customer_id = c.customer_id JOIN order_items oi ON oi.order_id = o.order_id "
        "WHERE o.order_date >= '2025-01-01' GROUP BY c.name HAVING SUM(oi.quantity) > 3 ORDER BY revenue DESC"
    )
    assert guard_sql(report, dialect="postgres").sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'regions'::regclass",
        "SELECT CAST('public.regions' AS REGCLASS)",
        "SELECT 'regions'::regclass::oid",
        "SELECT to_regclass('regions')",
        "SELECT has_table_privilege('regions', 'SELECT')",
        "SELECT has_column_privilege('regions', 'name', 'SELECT')",
        "SELECT obj_description(16384)",
        "SELECT col_description(16384, 1)",
        "SELECT current_database()",
        "SELECT name FROM customers WHERE to_regclass('payments') IS NOT NULL",
    ],
)
def test_catalog_lookups_that_reveal_which_tables_exist_are_refused(sql):
    """On PostgreSQL these answer (or fail) differently for a table that exists: a key limited to `customers`
    would learn the other tables' names. Refused like the catalogs, for every key."""
    with pytest.raises(GuardError) as info:
        guard_sql(sql, dialect="postgres", source_dialect="postgres", allowed_tables=["customers"])
    assert info.value.category == "refused"
    with pytest.raises(GuardError):  # written in SQLite and transpiled, too
        guard_sql(sql.replace("::regclass::oid", "::regclass"), dialect="postgres", allowed_tables=["customers"])


def test_forbidden_and_missing_tables_get_the_same_answer():
    def refusal(table: str) -> str:
        with pytest.raises(GuardError) as info:
            guard_sql(f"SELECT * FROM {table}", allowed_tables=["customers"])
        return info.value.message.replace(table, "<t>")

    assert refusal("payments") == refusal("no_such_table_at_all")
