"""Synthetic training pairs for the demo database: question/SQL templates filled with values from its rows.

Spider never shows the model this schema, so these pairs teach it the demo's tables and the way business users
phrase questions. Every pair's SQL is run on an in-memory copy of the demo database and kept only if it returns
a non-empty answer.

The evaluation suite (`models/scenarios`) must measure generalization, not template recall, so no pair may share
a structure with any of its cases: a pair is dropped when its SQL skeleton (`sql_skeleton`: literals masked) or
its question shape (`question_shape`: values masked) equals a suite case's. "Top 3 customers by revenue in 2025"
is out when the suite asks for the top 5 of 2024. Templates whose SQL structure the suite uses are left out.

    python -m models.synth --out build/data/synth_demo.json           # Spider-format list: db_id, question, query
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from app.core.config import BUILD_DIR
from app.db import demo
from models.scenarios import load_suite

DB_ID = "demo"
DEMO_SEED = 0  # the demo database the service and the suite use; `seed` below only drives the sampling
DRAWS_PER_TEMPLATE = 60
REV = "oi.quantity * oi.unit_price * (1 - oi.discount)"
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
ORDINALS = ("first", "second", "third", "fourth")
LAST_DAY = {1: 31, 2: 28, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


@dataclass(frozen=True)
class Template:
    slots: tuple[str, ...]  # value samplers, see `_samplers`
    sql: str
    questions: tuple[str, ...]


def T(slots: str, sql: str, *questions: str) -> Template:
    return Template(tuple(slots.split()), " ".join(sql.split()), questions)


TEMPLATES: tuple[Template, ...] = (
    # --- orders and revenue -------------------------------------------------------------------------------------
    T(
        "month",
        f"SELECT SUM({REV}) FROM orders o JOIN order_items oi ON oi.order_id = o.order_id "
        "WHERE strftime('%Y-%m', o.order_date) = '{ym}'",
        "What was revenue in {month_name} {year}?",
        "Total sales for {month_name} {year}",
        "How much did we sell in {mon} {year}?",
        "revenue {ym}",
    ),
    T(
        "year",
        f"SELECT c.name, SUM({REV}) AS revenue FROM categories c JOIN products p ON p.category_id = c.category_id "
        "JOIN order_items oi ON oi.product_id = p.product_id JOIN orders o ON o.order_id = oi.order_id "
        "WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY c.name ORDER BY revenue DESC",
        "Revenue per category in {year}",
        "Sales by product category for {year}",
        "Break down {year} revenue by category",
    ),
    T(
        "n category",
        f"SELECT p.name, SUM({REV}) AS revenue FROM products p JOIN categories c ON c.category_id = p.category_id "
        "JOIN order_items oi ON oi.product_id = p.product_id WHERE c.name = '{category}' "
        "GROUP BY p.product_id, p.name ORDER BY revenue DESC LIMIT {n}",
        "Top {n} {category} products by revenue",
        "Which {n} {category} products brought in the most money?",
        "best {n} sellers in {category} by revenue",
    ),
    T(
        "year",
        "SELECT channel, COUNT(*) FROM orders WHERE strftime('%Y', order_date) = '{year}' GROUP BY channel",
        "How many orders came through each channel in {year}?",
        "Orders by sales channel for {year}",
        "{year} order count per channel",
    ),
    T(
        "channel month",
        "SELECT COUNT(*) FROM orders WHERE channel = '{channel}' AND strftime('%Y-%m', order_date) = '{ym}'",
        "How many {channel} orders were placed in {month_name} {year}?",
        "Number of orders through the {channel} channel in {mon} {year}",
        "count of {channel} orders in {ym}",
    ),
    T(
        "channel year",
        f"SELECT SUM({REV}) FROM orders o JOIN order_items oi ON oi.order_id = o.order_id "
        "WHERE o.channel = '{channel}' AND strftime('%Y', o.order_date) = '{year}'",
        "How much revenue came from {channel} orders in {year}?",
        "Total {channel} sales in {year}",
        "{year} revenue through the {channel} channel",
    ),
    T(
        "segment year",
        f"SELECT AVG(total) FROM (SELECT o.order_id, SUM({REV}) AS total FROM orders o "
        "JOIN order_items oi ON oi.order_id = o.order_id JOIN customers c ON c.customer_id = o.customer_id "
        "WHERE c.segment = '{segment}' AND strftime('%Y', o.order_date) = '{year}' GROUP BY o.order_id)",
        "Average order value for {segment} customers in {year}",
        "What was the average {segment} order worth in {year}?",
        "mean order size of {segment} customers, {year}",
    ),
    T(
        "year",
        f"SELECT c.country, SUM({REV}) AS revenue FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id WHERE strftime('%Y', o.order_date) = '{year}' "
        "GROUP BY c.country ORDER BY revenue DESC",
        "Revenue by customer country in {year}",
        "Which countries did our {year} revenue come from?",
        "Sales per country for {year}",
    ),
    T(
        "country year",
        f"SELECT SUM({REV}) FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id WHERE c.country = '{country}' "
        "AND strftime('%Y', o.order_date) = '{year}'",
        "Total revenue from customers in {country} in {year}",
        "How much did {country} customers spend in {year}?",
        "{country} sales in {year}",
    ),
    T(
        "quarter",
        "SELECT r.name, COUNT(*) AS orders FROM regions r JOIN customers c ON c.region_id = r.region_id "
        "JOIN orders o ON o.customer_id = c.customer_id WHERE o.order_date BETWEEN '{q_start}' AND '{q_end}' "
        "GROUP BY r.name ORDER BY orders DESC",
        "Number of orders per region in Q{q} {year}",
        "How many orders did each region place in the {q_ord} quarter of {year}?",
        "orders by region, Q{q} {year}",
    ),
    T(
        "region year",
        f"SELECT strftime('%m', o.order_date) AS month, SUM({REV}) AS revenue FROM regions r "
        "JOIN customers c ON c.region_id = r.region_id JOIN orders o ON o.customer_id = c.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id WHERE r.name = '{region}' "
        "AND strftime('%Y', o.order_date) = '{year}' GROUP BY month ORDER BY month",
        "Monthly revenue from the {region} region in {year}",
        "Show {region} revenue month by month for {year}",
        "How did {region} sales develop over {year}, per month?",
    ),
    T(
        "amount year",
        f"SELECT c.name, SUM({REV}) AS revenue FROM categories c JOIN products p ON p.category_id = c.category_id "
        "JOIN order_items oi ON oi.product_id = p.product_id JOIN orders o ON o.order_id = oi.order_id "
        "WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY c.name HAVING SUM({rev}) > {amount}",
        "Which categories had more than {amount_text} in revenue in {year}?",
        "Categories with {year} sales above {amount_text}",
        "list product categories that sold over {amount} in {year}",
    ),
    T(
        "k year",
        "SELECT c.name, COUNT(*) AS orders FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
        "WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY c.customer_id, c.name HAVING COUNT(*) > {k}",
        "Which customers placed more than {k} orders in {year}?",
        "Customers with over {k} orders in {year}",
        "who ordered more than {k} times in {year}",
    ),
    T(
        "year",
        "SELECT AVG(julianday(shipped_date) - julianday(order_date)) FROM orders "
        "WHERE shipped_date IS NOT NULL AND strftime('%Y', order_date) = '{year}'",
        "Average shipping time in days for {year} orders",
        "How long did it take on average to ship an order in {year}?",
        "mean days between order and shipment in {year}",
    ),
    # --- customers ------------------------------------------------------------------------------------------------
    T(
        "customer",
        "SELECT COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id WHERE c.name = '{customer}'",
        "How many orders has {customer} placed?",
        "Number of orders from {customer}",
        "order count for customer {customer}",
    ),
    T(
        "customer year",
        f"SELECT SUM({REV}) FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id WHERE c.name = '{customer}' "
        "AND strftime('%Y', o.order_date) = '{year}'",
        "How much did {customer} spend in {year}?",
        "Total revenue from {customer} in {year}",
        "What was {customer}'s total spend in {year}?",
    ),
    T(
        "customer",
        "SELECT MAX(o.order_date) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "WHERE c.name = '{customer}'",
        "When did {customer} last place an order?",
        "Most recent order date for {customer}",
        "What is the date of {customer}'s latest order?",
    ),
    T(
        "customer",
        "SELECT o.order_id, o.order_date, o.status FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "WHERE c.name = '{customer}' ORDER BY o.order_date",
        "List all orders of {customer}",
        "Show {customer}'s orders with dates and status",
        "what orders did {customer} place",
    ),
    T(
        "debtor",
        "SELECT SUM(p.amount) FROM payments p JOIN orders o ON o.order_id = p.order_id "
        "JOIN customers c ON c.customer_id = o.customer_id WHERE p.status = 'pending' AND c.name = '{customer}'",
        "How much does {customer} still owe us?",
        "Pending payment total for {customer}",
        "outstanding amount of {customer}",
    ),
    T(
        "city",
        "SELECT name FROM customers WHERE city = '{city}'",
        "Which customers are in {city}?",
        "List customers from {city}",
        "Show me all customers located in {city}",
    ),
    T(
        "city year",
        "SELECT COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "WHERE c.city = '{city}' AND strftime('%Y', o.order_date) = '{year}'",
        "How many orders came from {city} in {year}?",
        "Number of {year} orders by customers in {city}",
        "{city} order count for {year}",
    ),
    T(
        "segment region",
        "SELECT COUNT(*) FROM customers c JOIN regions r ON r.region_id = c.region_id "
        "WHERE c.segment = '{segment}' AND r.name = '{region}'",
        "How many {segment} customers are in the {region} region?",
        "Number of {segment} customers in {region}",
        "count {segment} accounts in region {region}",
    ),
    T(
        "region year",
        "SELECT COUNT(*) FROM customers c JOIN regions r ON r.region_id = c.region_id "
        "WHERE r.name = '{region}' AND strftime('%Y', c.signup_date) = '{year}'",
        "How many customers in {region} signed up in {year}?",
        "New {region} customers in {year}",
        "number of {year} signups from the {region} region",
    ),
    # --- products, stock and suppliers ------------------------------------------------------------------------------
    T(
        "category",
        "SELECT p.name, p.unit_price FROM products p JOIN categories c ON c.category_id = p.category_id "
        "WHERE c.name = '{category}' ORDER BY p.name",
        "List all products in the {category} category",
        "What do we sell in {category}?",
        "Show {category} products with their prices",
    ),
    T(
        "category",
        "SELECT COUNT(*) FROM products p JOIN categories c ON c.category_id = p.category_id "
        "WHERE c.name = '{category}'",
        "How many {category} products do we carry?",
        "Number of products in {category}",
        "count of products in the {category} category",
    ),
    T(
        "price",
        "SELECT name, unit_price FROM products WHERE unit_price > {price} ORDER BY unit_price DESC",
        "Which products cost more than {price}?",
        "List products priced above {price}",
        "Products with a list price over {price}",
    ),
    T(
        "category",
        "SELECT p.name, p.stock_quantity, p.reorder_level FROM products p "
        "JOIN categories c ON c.category_id = p.category_id "
        "WHERE c.name = '{category}' AND p.stock_quantity < p.reorder_level",
        "Which {category} products need reordering?",
        "{category} items below their reorder level",
        "Are any {category} products running low on stock?",
    ),
    T(
        "category year",
        "SELECT p.name, SUM(oi.quantity) AS units FROM products p JOIN categories c ON c.category_id = p.category_id "
        "JOIN order_items oi ON oi.product_id = p.product_id JOIN orders o ON o.order_id = oi.order_id "
        "WHERE c.name = '{category}' AND strftime('%Y', o.order_date) = '{year}' "
        "GROUP BY p.product_id, p.name ORDER BY units DESC LIMIT 1",
        "What was the best-selling {category} product in {year}?",
        "Which {category} item sold the most units in {year}?",
        "top {category} product of {year} by quantity",
    ),
    T(
        "category month",
        "SELECT SUM(oi.quantity) FROM order_items oi JOIN products p ON p.product_id = oi.product_id "
        "JOIN categories c ON c.category_id = p.category_id JOIN orders o ON o.order_id = oi.order_id "
        "WHERE c.name = '{category}' AND strftime('%Y-%m', o.order_date) = '{ym}'",
        "How many {category} units did we sell in {month_name} {year}?",
        "Units of {category} sold in {mon} {year}",
        "{category} quantity sold in {ym}",
    ),
    T(
        "supplier",
        "SELECT p.name FROM products p JOIN suppliers s ON s.supplier_id = p.supplier_id WHERE s.name = '{supplier}'",
        "What products does {supplier} supply?",
        "List the products we buy from {supplier}",
        "Which items come from supplier {supplier}?",
    ),
    T(
        "supplier",
        "SELECT rating, city, country FROM suppliers WHERE name = '{supplier}'",
        "What is the rating of {supplier} and where are they based?",
        "Show rating and location of supplier {supplier}",
        "how is {supplier} rated",
    ),
    T(
        "product",
        "SELECT s.name FROM suppliers s JOIN products p ON p.supplier_id = s.supplier_id WHERE p.name = '{product}'",
        "Who supplies the {product}?",
        "Which supplier do we get the {product} from?",
        "supplier of {product}",
    ),
    T(
        "product",
        "SELECT unit_price FROM products WHERE name = '{product}'",
        "What is the price of the {product}?",
        "How much does the {product} cost?",
        "list price of {product}",
    ),
    T(
        "product",
        "SELECT stock_quantity FROM products WHERE name = '{product}'",
        "How many {product} do we have in stock?",
        "Current stock level of {product}",
        "stock on hand for the {product}",
    ),
    T(
        "scountry",
        "SELECT name, city FROM suppliers WHERE country = '{scountry}'",
        "List suppliers based in {scountry}",
        "Which suppliers are located in {scountry}?",
        "suppliers from {scountry}",
    ),
    # --- employees ------------------------------------------------------------------------------------------------
    T(
        "department",
        "SELECT first_name, last_name, title FROM employees WHERE department = '{department}'",
        "Who works in {department}?",
        "List the {department} team",
        "Show all employees in the {department} department",
    ),
    T(
        "hyear",
        "SELECT COUNT(*) FROM employees WHERE strftime('%Y', hire_date) = '{hyear}'",
        "How many employees were hired in {hyear}?",
        "Number of hires in {hyear}",
        "How many people joined the company in {hyear}?",
    ),
    T(
        "department hyear",
        "SELECT first_name, last_name, hire_date FROM employees WHERE department = '{department}' "
        "AND hire_date > '{hyear}-12-31'",
        "Which {department} employees were hired after {hyear}?",
        "{department} staff who joined after {hyear}",
        "list people in {department} hired since the end of {hyear}",
    ),
    T(
        "title",
        "SELECT AVG(salary) FROM employees WHERE title = '{title}'",
        "What is the average {title} salary?",
        "Average pay for the {title} role",
        "mean salary for title {title}",
    ),
    T(
        "salary",
        "SELECT first_name, last_name, salary FROM employees WHERE salary > {salary} ORDER BY salary DESC",
        "Which employees earn more than {salary_text}?",
        "List staff with a salary above {salary}",
        "Who makes over {salary_text} a year?",
    ),
    T(
        "employee",
        "SELECT m.first_name, m.last_name FROM employees e JOIN employees m ON m.employee_id = e.manager_id "
        "WHERE e.first_name = '{first}' AND e.last_name = '{last}'",
        "Who is {employee}'s manager?",
        "Who does {employee} report to?",
        "Name the manager of {employee}",
    ),
    T(
        "manager",
        "SELECT e.first_name, e.last_name, e.title FROM employees e JOIN employees m ON m.employee_id = e.manager_id "
        "WHERE m.first_name = '{first}' AND m.last_name = '{last}'",
        "Who reports to {employee}?",
        "List {employee}'s direct reports",
        "Which employees does {employee} manage?",
    ),
    T(
        "rep year",
        "SELECT COUNT(*) FROM orders o JOIN employees e ON e.employee_id = o.employee_id "
        "WHERE e.first_name = '{first}' AND e.last_name = '{last}' AND strftime('%Y', o.order_date) = '{year}'",
        "How many orders did {employee} handle in {year}?",
        "Number of {year} orders managed by {employee}",
        "{employee}'s order count in {year}",
    ),
    T(
        "rep year",
        f"SELECT SUM({REV}) FROM orders o JOIN employees e ON e.employee_id = o.employee_id "
        "JOIN order_items oi ON oi.order_id = o.order_id "
        "WHERE e.first_name = '{first}' AND e.last_name = '{last}' AND strftime('%Y', o.order_date) = '{year}'",
        "How much revenue did {employee} bring in during {year}?",
        "Total sales by {employee} in {year}",
        "{employee}'s revenue for {year}",
    ),
    T(
        "region year",
        f"SELECT e.first_name, e.last_name, SUM({REV}) AS revenue FROM employees e "
        "JOIN regions r ON r.region_id = e.region_id JOIN orders o ON o.employee_id = e.employee_id "
        "JOIN order_items oi ON oi.order_id = o.order_id WHERE r.name = '{region}' "
        "AND strftime('%Y', o.order_date) = '{year}' GROUP BY e.employee_id, e.first_name, e.last_name "
        "ORDER BY revenue DESC",
        "Revenue per sales rep in the {region} region in {year}",
        "How much did each {region} salesperson sell in {year}?",
        "{year} sales by rep for {region}",
    ),
    T(
        "region",
        "SELECT e.first_name, e.last_name, e.title FROM employees e JOIN regions r ON r.region_id = e.region_id "
        "WHERE r.name = '{region}' ORDER BY e.last_name",
        "Which sales people cover the {region} region?",
        "List the sales team for {region}",
        "who sells in {region}",
    ),
    # --- payments -------------------------------------------------------------------------------------------------
    T(
        "method year",
        "SELECT SUM(amount) FROM payments WHERE method = '{method}' AND status = 'completed' "
        "AND strftime('%Y', paid_at) = '{year}'",
        "Total {method} payments received in {year}",
        "How much was paid by {method} in {year}?",
        "Sum of completed {method} payments in {year}",
    ),
    T(
        "pstatus method",
        "SELECT COUNT(*) FROM payments WHERE status = '{pstatus}' AND method = '{method}'",
        "How many {pstatus} {method} payments are there?",
        "Number of {method} payments with status {pstatus}",
        "count {pstatus} payments made by {method}",
    ),
    T(
        "year",
        "SELECT strftime('%m', o.order_date) AS month, SUM(p.amount) FROM payments p "
        "JOIN orders o ON o.order_id = p.order_id WHERE p.status = 'refunded' "
        "AND strftime('%Y', o.order_date) = '{year}' GROUP BY month ORDER BY month",
        "Refunded amount per month for {year} orders",
        "How much did we refund each month in {year}?",
        "monthly refunds {year}",
    ),
    T(
        "method",
        "SELECT c.segment, COUNT(*) FROM payments p JOIN orders o ON o.order_id = p.order_id "
        "JOIN customers c ON c.customer_id = o.customer_id WHERE p.method = '{method}' GROUP BY c.segment",
        "How many {method} payments came from each customer segment?",
        "Split {method} payments by segment",
        "{method} payments per segment",
    ),
)


# --- value pools and samplers ---------------------------------------------------------------------------------


def _pools(rows: dict[str, list[dict]]) -> dict[str, list]:
    """The values questions are asked about, taken from the demo rows (sorted: sets have no stable order)."""
    ordered = {o["customer_id"] for o in rows["orders"]}
    pending = {p["order_id"] for p in rows["payments"] if p["status"] == "pending"}
    debtors = {o["customer_id"] for o in rows["orders"] if o["order_id"] in pending}
    managers = {e["manager_id"] for e in rows["employees"] if e["manager_id"]}
    by_id = {e["employee_id"]: e for e in rows["employees"]}
    reps = {o["employee_id"] for o in rows["orders"]}
    return {
        "customer": sorted(c["name"] for c in rows["customers"] if c["customer_id"] in ordered),
        "debtor": sorted(c["name"] for c in rows["customers"] if c["customer_id"] in debtors),
        "city": sorted({c["city"] for c in rows["customers"]}),
        "country": sorted({c["country"] for c in rows["customers"]}),
        "scountry": sorted({s["country"] for s in rows["suppliers"]}),
        "region": [r["name"] for r in rows["regions"]],
        "category": [c["name"] for c in rows["categories"]],
        "product": sorted(p["name"] for p in rows["products"]),
        "supplier": sorted(s["name"] for s in rows["suppliers"]),
        "department": sorted({e["department"] for e in rows["employees"]}),
        "title": sorted({e["title"] for e in rows["employees"]}),
        "hyear": sorted({e["hire_date"].year for e in rows["employees"]}),
        "employee": [(e["first_name"], e["last_name"]) for e in rows["employees"] if e["manager_id"]],
        "manager": [(by_id[i]["first_name"], by_id[i]["last_name"]) for i in sorted(managers)],
        "rep": [(by_id[i]["first_name"], by_id[i]["last_name"]) for i in sorted(reps)],
    }


def _month(rng: random.Random) -> dict:
    year, m = rng.choice((2024, 2025)), rng.randint(1, 12)
    return {"year": year, "month_name": MONTHS[m - 1], "mon": MONTHS[m - 1][:3], "ym": f"{year}-{m:02d}"}


def _quarter(rng: random.Random) -> dict:
    year, q = rng.choice((2024, 2025)), rng.randint(1, 4)
    end = 3 * q
    return {
        "year": year,
        "q": q,
        "q_ord": ORDINALS[q - 1],
        "q_start": f"{year}-{end - 2:02d}-01",
        "q_end": f"{year}-{end:02d}-{LAST_DAY[end]}",
    }


def _person(pool: str) -> Callable[[random.Random, dict], dict]:
    def draw(rng: random.Random, pools: dict) -> dict:
        first, last = rng.choice(pools[pool])
        return {"first": first, "last": last, "employee": f"{first} {last}"}

    return draw


def _pick(pool: str, key: str | None = None) -> Callable[[random.Random, dict], dict]:
    return lambda rng, pools: {key or pool: rng.choice(pools[pool])}


def _const(key: str, values: tuple) -> Callable[[random.Random, dict], dict]:
    return lambda rng, pools: {key: rng.choice(values)}


def _amount(rng: random.Random, pools: dict) -> dict:
    amount = rng.choice((100_000, 200_000, 300_000, 400_000, 500_000))
    return {"amount": amount, "amount_text": rng.choice((f"{amount:,}", f"{amount // 1000}k", f"${amount:,}"))}


def _salary(rng: random.Random, pools: dict) -> dict:
    salary = rng.choice((50_000, 60_000, 70_000, 80_000, 90_000, 100_000, 120_000, 150_000))
    return {"salary": salary, "salary_text": rng.choice((f"{salary:,}", f"{salary // 1000}k", f"${salary:,}"))}


SAMPLERS: dict[str, Callable[[random.Random, dict], dict]] = {
    "year": _const("year", (2024, 2025)),
    "month": lambda rng, pools: _month(rng),
    "quarter": lambda rng, pools: _quarter(rng),
    "channel": _const("channel", ("online", "phone", "in store")),
    "segment": _const("segment", ("retail", "wholesale")),
    "method": _const("method", ("card", "bank transfer", "paypal", "invoice")),
    "pstatus": _const("pstatus", ("completed", "pending", "failed", "refunded")),
    "n": _const("n", (3, 5, 10)),
    "k": _const("k", (10, 15, 20, 25, 30)),
    "price": _const("price", (50, 100, 150, 200, 250, 300, 400, 500)),
    "amount": _amount,
    "salary": _salary,
    "customer": _pick("customer"),
    "debtor": _pick("debtor", "customer"),
    "employee": _person("employee"),
    "manager": _person("manager"),
    "rep": _person("rep"),
    **{
        k: _pick(k)
        for k in ("city", "country", "scountry", "region", "category", "product", "supplier", "department", "title")
    },
    "hyear": _pick("hyear"),
}


# --- generation -------------------------------------------------------------------------------------------------


def normalize_question(text: str) -> str:
    """Lowercase, punctuation and runs of whitespace collapsed to one space."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


_SQL_STRING = re.compile(r"'((?:[^']|'')*)'")
_SQL_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def _mask_literal(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Literal) or (isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)):
        return exp.Placeholder()
    if isinstance(node, exp.Identifier):
        return exp.to_identifier(node.name.lower(), quoted=False)
    return node


@functools.cache
def _analyze(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql`'s skeleton and its string literals, longest first; read with regexes when sqlglot cannot parse it."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except sqlglot.errors.SqlglotError:
        statements = []
    if statements:
        values = {lit.this for s in statements for lit in s.find_all(exp.Literal) if lit.is_string}
        skeleton = "; ".join(s.transform(_mask_literal).sql(dialect="sqlite") for s in statements)
    else:
        values = {v.replace("''", "'") for v in _SQL_STRING.findall(sql)}
        skeleton = _SQL_NUMBER.sub("?", _SQL_STRING.sub("?", sql))
    skeleton = " ".join(skeleton.lower().split()).rstrip(";").strip()
    return skeleton, tuple(sorted(values, key=lambda v: (-len(v), v)))


def sql_skeleton(sql: str) -> str:
    """`sql`'s structure with its values aside: every literal (number, string, date, format) a `?`, lowercased,
    in sqlglot's SQLite spelling, single spaces. Two fills of one template have one skeleton."""
    return _analyze(sql)[0]


_MONTHS = sorted({m.lower() for m in MONTHS} | {m[:3].lower() for m in MONTHS} | {"sept"}, key=len, reverse=True)
_SHAPE_MASKS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|(?<!\w)'[^']*'(?!\w)",  # quoted strings; the apostrophe of "what's" opens none
        rf"(?<!\w)(?:{'|'.join(_MONTHS)})(?!\w)",  # month names and abbreviations
        r"(?<!\w)q[1-4](?!\w)|(?<!\w)(?:first|second|third|fourth|1st|2nd|3rd|4th)(?= quarter)",  # quarters
        r"(?<!\w)\d{4}(?!\w)",  # years
        r"\$?(?<![\w.])\d[\d,]*(?:\.\d+)?(?:k|st|nd|rd|th|%)?(?!\w)",  # numbers: 5, 4.5, 150,000, $150k, 2025-11-28
    )
)


def question_shape(question: str, sql: str = "") -> str:
    """`question`'s wording with its values aside: lowercased; numbers, years, months, quarters, quoted strings and
    every string literal of its `sql` (a customer, a city, a category) a `#`; punctuation and whitespace collapsed.
    Two fills of one phrasing have one shape."""
    text = question.lower()
    for value in _analyze(sql)[1] if sql else ():
        value = value.strip().strip("%").strip()  # LIKE '%Sales Representative%' names "sales representative"
        if len(value) > 1:
            text = re.sub(rf"(?<!\w){re.escape(value.lower())}(?!\w)", "#", text)
    for pattern in _SHAPE_MASKS:
        text = pattern.sub("#", text)
    return " ".join(re.sub(r"[^\w#]+", " ", text).split())


def _fill(template: Template, rng: random.Random, pools: dict) -> tuple[str, str]:
    values: dict = {"rev": REV}
    for slot in template.slots:
        values |= SAMPLERS[slot](rng, pools)
    question = rng.choice(template.questions).format(**values)
    # string literals are quoted SQL-style; the demo's names have no quotes today, but a seed change might
    literal = {k: v.replace("'", "''") if isinstance(v, str) else v for k, v in values.items()}
    sql = template.sql.format(**literal)
    if rng.random() < 0.15:  # some users type in lowercase
        question = question.lower()
    return question, sql


def _answers(engine: sa.Engine, sql: str) -> bool:
    """True when `sql` runs and its first row holds at least one non-NULL value."""
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(sql).first()
    except sa.exc.SQLAlchemyError:
        return False
    return row is not None and any(v is not None for v in row)


def generate_pairs(n: int | None = None, seed: int = 0) -> list[dict]:
    """Up to `n` (default: all) distinct pairs `{db_id, question, query}`, shuffled; the same for the same seed."""
    rows = demo.generate(DEMO_SEED)
    pools = _pools(rows)
    suite = load_suite()
    banned_q = {normalize_question(c.question) for c in suite}
    banned_shapes = {question_shape(c.question, c.sql) for c in suite}
    banned_skeletons = {sql_skeleton(c.sql) for c in suite}

    rng = random.Random(seed)
    seen: set[str] = set()
    candidates = []
    for template in TEMPLATES:
        for _ in range(DRAWS_PER_TEMPLATE):
            question, sql = _fill(template, rng, pools)
            key = normalize_question(question)
            if key in seen or key in banned_q or sql_skeleton(sql) in banned_skeletons:
                continue
            if question_shape(question, sql) in banned_shapes:
                continue
            seen.add(key)
            candidates.append({"db_id": DB_ID, "question": question, "query": sql})

    engine = sa.create_engine("sqlite://")  # one in-memory connection per thread (SingletonThreadPool)
    try:
        demo.load(engine, DEMO_SEED)
        verdict: dict[str, bool] = {}
        pairs = []
        for pair in candidates:
            if pair["query"] not in verdict:
                verdict[pair["query"]] = _answers(engine, pair["query"])
            if verdict[pair["query"]]:
                pairs.append(pair)
    finally:
        engine.dispose()
    rng.shuffle(pairs)
    return pairs if n is None else pairs[:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.synth", description="Synthetic question/SQL pairs for demo")
    p.add_argument("--out", type=Path, default=BUILD_DIR / "data" / "synth_demo.json")
    p.add_argument("--n", type=int, default=None, help="at most this many pairs (default: all)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.n is not None and a.n < 1:
        p.error("--n must be at least 1")
    pairs = generate_pairs(a.n, a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text(json.dumps(pairs, indent=1) + "\n")
    tmp.replace(a.out)
    print(f"wrote {len(pairs)} pairs (db_id={DB_ID!r}, {len(TEMPLATES)} templates) to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
