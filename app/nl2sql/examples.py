"""Example questions shown in the UI for whatever database is connected.

For the demo database a hand-picked list; for any other schema, questions made from its tables, numeric columns
and foreign keys, so a newcomer pointing Querywise at their own database sees something sensible to try.
"""

from __future__ import annotations

from app.db.schema import Schema, Table

DEMO_TABLES = {"customers", "orders", "order_items", "products", "payments", "employees"}
DEMO_EXAMPLES = [
    "How many customers are there in each region?",
    "Top 5 products by revenue in 2025",
    "Total payments by payment method",
    "How many orders were cancelled in 2024?",
    "Average salary per department",
    "Monthly number of orders in 2025",
]


def _label(name: str) -> str:
    return name.replace("_", " ").lower()


def _name_column(t: Table) -> str | None:
    return next((c.name for c in t.columns if c.type == "text" and "name" in c.name.lower()), None)


def example_questions(schema: Schema, limit: int = 6) -> list[str]:
    names = {t.name.lower() for t in schema.tables}
    if names >= DEMO_TABLES:
        return DEMO_EXAMPLES[:limit]
    out: list[str] = []
    by_name = {t.name: t for t in schema.tables}
    for t in sorted(schema.tables, key=lambda t: -len(t.foreign_keys)):
        out.append(f"How many {_label(t.name)} are there?")
        num = next(
            (
                c
                for c in t.columns
                if c.type in ("num", "int") and not c.primary_key and not c.name.lower().endswith("id")
            ),
            None,
        )
        name = _name_column(t)
        if num and name:
            out.append(f"Top 5 {_label(t.name)} by {_label(num.name)}")
        for fk in t.foreign_keys:
            parent = by_name.get(fk.ref_table)
            pname = _name_column(parent) if parent else None
            if pname:
                out.append(f"Number of {_label(t.name)} per {_label(fk.ref_table)} {_label(pname)}")
                break
    seen, unique = set(), []
    for q in out:
        if q not in seen:
            seen.add(q)
            unique.append(q)
    # interleave kinds of question rather than listing every count first
    return sorted(unique, key=lambda q: (not q.startswith("Top"), not q.startswith("Number")))[:limit]
