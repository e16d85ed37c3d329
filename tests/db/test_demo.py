"""The demo business database: deterministic rows, sane sizes, consistent keys, and real SQLite/PostgreSQL loads."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db import demo
from app.db.schema import introspect

# (low, high) rows per table: "thousands of rows over two years", small enough for a < 5 MB file
SIZES = {
    "regions": (8, 8),
    "categories": (12, 12),
    "suppliers": (30, 50),
    "customers": (400, 600),
    "products": (150, 250),
    "employees": (40, 60),
    "orders": (4000, 6000),
    "order_items": (12000, 20000),
    "payments": (4000, 6000),
}


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    return demo.generate(0)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    return demo.build_sqlite(tmp_path_factory.mktemp("demo") / "demo.sqlite")


def test_generation_is_deterministic(data):
    assert demo.generate(0) == data
    assert demo.generate(1) != data


def test_tables_in_foreign_key_order(data):
    assert list(data) == [t.name for t in demo.metadata.sorted_tables]
    assert set(data) == set(SIZES)


@pytest.mark.parametrize("table", sorted(SIZES))
def test_row_counts(data, table):
    low, high = SIZES[table]
    assert low <= len(data[table]) <= high


def test_primary_keys_unique(data):
    for table in demo.metadata.sorted_tables:
        (pk,) = table.primary_key.columns
        ids = [r[pk.name] for r in data[table.name]]
        assert len(ids) == len(set(ids)), table.name


def test_foreign_keys_consistent(data):
    for table in demo.metadata.sorted_tables:
        for fk in table.foreign_keys:
            target = {r[fk.column.name] for r in data[fk.column.table.name]}
            values = [r[fk.parent.name] for r in data[table.name]]
            missing = [v for v in values if v is not None and v not in target]
            assert not missing, f"{table.name}.{fk.parent.name} -> {fk.target_fullname}: {missing[:5]}"
    # managers exist before their reports, so a row-by-row insert never points forward
    assert all(e["manager_id"] is None or e["manager_id"] < e["employee_id"] for e in data["employees"])
    assert sum(e["manager_id"] is None for e in data["employees"]) == 1


def test_orders_are_plausible(data):
    customers = {c["customer_id"]: c for c in data["customers"]}
    employees = {e["employee_id"]: e for e in data["employees"]}
    for o in data["orders"]:
        assert demo.START <= o["order_date"] <= demo.END
        assert (o["shipped_date"] is None) == (o["status"] in ("processing", "cancelled"))
        if o["shipped_date"]:
            assert o["order_date"] < o["shipped_date"] <= demo.END
        rep = employees[o["employee_id"]]
        assert rep["department"] == "Sales" and rep["hire_date"] <= o["order_date"]
        assert rep["region_id"] == customers[o["customer_id"]]["region_id"]
        assert customers[o["customer_id"]]["signup_date"] <= o["order_date"]
    statuses = Counter(o["status"] for o in data["orders"])
    assert set(statuses) == {"delivered", "shipped", "processing", "cancelled", "returned"}
    years = Counter(o["order_date"].year for o in data["orders"])
    assert years[2025] > years[2024]  # the business grows
    months = Counter(o["order_date"].month for o in data["orders"])
    assert months[12] > months[2]  # and peaks at the holidays


def test_payments_match_orders(data):
    totals: Counter = Counter()
    for i in data["order_items"]:
        totals[i["order_id"]] += i["quantity"] * i["unit_price"] * (1 - i["discount"])
    status = {o["order_id"]: o["status"] for o in data["orders"]}
    for p in data["payments"]:
        assert p["amount"] == pytest.approx(totals[p["order_id"]], abs=0.01)
        assert status[p["order_id"]] != "cancelled"
        assert (p["paid_at"] is None) == (p["status"] == "pending")
        assert p["method"] in ("card", "bank transfer", "paypal", "invoice")
    assert {p["status"] for p in data["payments"]} == {"completed", "pending", "failed", "refunded"}


def test_sqlite_file_small_and_complete(db_path, data):
    assert db_path.stat().st_size < 5_000_000
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        for table, rows in data.items():
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == len(rows)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # dates are ISO text, so strftime works on them; timestamps carry no microseconds
        assert conn.execute("SELECT MIN(order_date), MAX(order_date) FROM orders").fetchone() == (
            "2024-01-01",
            "2025-12-31",
        )
        paid_at = conn.execute("SELECT paid_at FROM payments WHERE paid_at IS NOT NULL LIMIT 1").fetchone()[0]
        assert len(paid_at) == len("2024-01-01 10:00:00")


def test_introspection_sees_keys_and_types(db_path):
    engine = sa.create_engine(f"sqlite:///{db_path}")
    try:
        schema = introspect(engine)
    finally:
        engine.dispose()
    assert {t.name for t in schema.tables} == set(SIZES)
    for table in demo.metadata.sorted_tables:
        seen = {(f.column, f.ref_table, f.ref_column) for f in schema.table(table.name).foreign_keys}
        declared = {(fk.parent.name, fk.column.table.name, fk.column.name) for fk in table.foreign_keys}
        assert seen == declared, table.name
        pk = [c.name for c in schema.table(table.name).columns if c.primary_key]
        assert pk == [c.name for c in table.primary_key.columns]
    assert ("manager_id", "employees", "employee_id") in {
        (f.column, f.ref_table, f.ref_column) for f in schema.table("employees").foreign_keys
    }
    types = {c.name: c.type for c in schema.table("orders").columns} | {
        c.name: c.type for c in schema.table("payments").columns
    }
    assert types["order_date"] == "date" and types["paid_at"] == "date" and types["amount"] == "num"
    assert {c.name: c.type for c in schema.table("products").columns}["discontinued"] == "bool"


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def test_build_sqlite_idempotent(tmp_path):
    path = tmp_path / "sub" / "demo.sqlite"
    assert demo.build_sqlite(path) == path
    before = path.stat()
    assert demo.build_sqlite(path) == path
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    first = _dump(path)
    demo.build_sqlite(path, force=True)
    assert path.stat().st_ino != before.st_ino  # replaced by rename, not rewritten in place
    assert _dump(path) == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.sqlite"]  # no temp file left behind


def test_build_sqlite_other_seed_differs(tmp_path):
    a = demo.build_sqlite(tmp_path / "a.sqlite", seed=0)
    b = demo.build_sqlite(tmp_path / "b.sqlite", seed=3)
    assert _dump(a) != _dump(b)


def test_default_path_is_in_build_dir():
    from app.core.config import BUILD_DIR

    assert demo.DEFAULT_PATH == BUILD_DIR / "demo.sqlite"


def test_cli_builds_then_skips(tmp_path, capsys):
    out = tmp_path / "cli.sqlite"
    assert demo.main(["--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.exists()
    assert demo.main(["--out", str(out)]) == 0
    assert "nothing done" in capsys.readouterr().out
    assert demo.main(["--out", str(out), "--force"]) == 0
    assert f"orders {demo.N_ORDERS}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["--bogus"], ["--seed", "x"], ["--out", "a.sqlite", "--url", "sqlite://"]],
    ids=["unknown-flag", "bad-seed", "out-and-url"],
)
def test_cli_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_bad_url(capsys):
    assert demo.main(["--url", "nosuchdialect://x"]) == 2
    assert "bad database URL" in capsys.readouterr().err


def test_cli_out_is_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "directory" in capsys.readouterr().err


def test_engine_url_uses_psycopg3():
    assert demo.engine_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert demo.engine_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert demo.engine_url("sqlite:///x.db") == "sqlite:///x.db"


def test_load_into_sqlite_memory(data):
    engine = sa.create_engine("sqlite://")
    try:
        demo.load(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM order_items")).scalar_one() == len(data["order_items"])
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_load_into_postgres(postgres_url, data):
    # A schema of its own: other tests may use the public schema of the same database.
    schema = "demo_load_test"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine = admin.execution_options(schema_translate_map={None: schema})
    try:
        demo.load(engine)
        with engine.connect() as conn:
            for table, rows in data.items():
                assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {schema}.{table}")).scalar_one() == len(rows)
            revenue = conn.execute(
                sa.text(
                    f"SELECT SUM(quantity * unit_price * (1 - discount)) FROM {schema}.order_items oi "
                    f"JOIN {schema}.orders o ON o.order_id = oi.order_id "
                    "WHERE o.order_date BETWEEN '2025-01-01' AND '2025-12-31'"
                )
            ).scalar_one()
            assert conn.execute(sa.text(f"SELECT MAX(paid_at) FROM {schema}.payments")).scalar_one().year == 2025
        order_date = {o["order_id"]: o["order_date"] for o in data["orders"]}
        expected = sum(
            i["quantity"] * i["unit_price"] * (1 - i["discount"])
            for i in data["order_items"]
            if order_date[i["order_id"]] >= date(2025, 1, 1)
        )
        assert float(revenue) == pytest.approx(expected, rel=1e-9)
        pg_schema = introspect(admin, schema=schema)
        fks = {(f.column, f.ref_table) for f in pg_schema.table("order_items").foreign_keys}
        assert fks == {("order_id", "orders"), ("product_id", "products")}
        assert ("manager_id", "employees") in {
            (f.column, f.ref_table) for f in pg_schema.table("employees").foreign_keys
        }
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
