"""The demo business database: a retail/wholesale company's two years of trading, generated from a seed.

Defined once with SQLAlchemy Core, so the very same rows load into SQLite (`build/demo.sqlite`, what the service
queries by default) and into PostgreSQL. Everything comes from one `random.Random(seed)`: no Faker, no network,
and the same seed always gives the same database, which the evaluation suite (`models/scenarios`) relies on.

    python -m app.db.demo                                  # build/demo.sqlite (no-op if it exists)
    python -m app.db.demo --out /tmp/demo.sqlite --force   # rebuild elsewhere
    python -m app.db.demo --url postgresql://user@host/db  # load into PostgreSQL (--force drops the tables first)
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import tempfile
from datetime import date, datetime, time, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from app.core.config import DEMO_DB_PATH

DEFAULT_PATH = DEMO_DB_PATH
START, END = date(2024, 1, 1), date(2025, 12, 31)

# --- schema --------------------------------------------------------------------------------------------------

Money = sa.Numeric(10, 2)
# SQLite's default DATETIME text carries microseconds; plain seconds read better in answers and in prompts.
Timestamp = sa.DateTime().with_variant(
    sqlite.DATETIME(storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"),
    "sqlite",
)

metadata = sa.MetaData()
# Foreign-key columns and order_date are indexed: nearly every business question joins or filters on them.

regions = sa.Table(
    "regions",
    metadata,
    sa.Column("region_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(40), nullable=False, unique=True),
)

categories = sa.Table(
    "categories",
    metadata,
    sa.Column("category_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(40), nullable=False, unique=True),
    sa.Column("description", sa.String(200)),
)

suppliers = sa.Table(
    "suppliers",
    metadata,
    sa.Column("supplier_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("contact_name", sa.String(80)),
    sa.Column("email", sa.String(120)),
    sa.Column("city", sa.String(40)),
    sa.Column("country", sa.String(40)),
    sa.Column("rating", sa.Float),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("segment", sa.String(20), nullable=False),
    sa.Column("email", sa.String(120)),
    sa.Column("city", sa.String(40)),
    sa.Column("country", sa.String(40)),
    sa.Column("region_id", sa.Integer, sa.ForeignKey("regions.region_id"), nullable=False),
    sa.Column("signup_date", sa.Date, nullable=False),
)

employees = sa.Table(
    "employees",
    metadata,
    sa.Column("employee_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_name", sa.String(40), nullable=False),
    sa.Column("last_name", sa.String(40), nullable=False),
    sa.Column("email", sa.String(120)),
    sa.Column("title", sa.String(60), nullable=False),
    sa.Column("department", sa.String(40), nullable=False),
    sa.Column("manager_id", sa.Integer, sa.ForeignKey("employees.employee_id")),
    sa.Column("region_id", sa.Integer, sa.ForeignKey("regions.region_id")),
    sa.Column("hire_date", sa.Date, nullable=False),
    sa.Column("salary", Money, nullable=False),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("sku", sa.String(20), nullable=False, unique=True),
    sa.Column("category_id", sa.Integer, sa.ForeignKey("categories.category_id"), nullable=False),
    sa.Column("supplier_id", sa.Integer, sa.ForeignKey("suppliers.supplier_id"), nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("unit_cost", Money, nullable=False),
    sa.Column("stock_quantity", sa.Integer, nullable=False),
    sa.Column("reorder_level", sa.Integer, nullable=False),
    sa.Column("discontinued", sa.Boolean, nullable=False),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.customer_id"), nullable=False, index=True),
    sa.Column("employee_id", sa.Integer, sa.ForeignKey("employees.employee_id"), nullable=False, index=True),
    sa.Column("order_date", sa.Date, nullable=False, index=True),
    sa.Column("shipped_date", sa.Date),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
)

order_items = sa.Table(
    "order_items",
    metadata,
    sa.Column("order_item_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.order_id"), nullable=False, index=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.product_id"), nullable=False, index=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("discount", sa.Numeric(4, 2), nullable=False),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.order_id"), nullable=False, index=True),
    sa.Column("method", sa.String(20), nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("paid_at", Timestamp),
    sa.Column("status", sa.String(20), nullable=False),
)

# --- vocabulary ------------------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Sandra Steven Ashley Paul "
    "Emily Andrew Donna Joshua Michelle Kevin Emma Brian Olivia George Sophia Oliver Amelia Lucas Chloe Liam Mia "
    "Noah Grace Ethan Hannah Samuel Laura Henry Julia Leo Clara Hugo Elena"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Wilson Anderson "
    "Thomas Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young Allen King "
    "Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Evans Turner Parker "
    "Collins Edwards Stewart Morris Murphy Cook Rogers Morgan Bell Murray Fischer Dubois Rossi Jansen Novak"
)
COMPANY_WORDS = _words(
    "North Blue Summit Green Silver Oak River Pine Harbor Bright Golden Red Eagle Metro Prime Urban Coastal "
    "Granite Maple Cedar Lakeside Sunrise Keystone Pioneer Liberty Heritage Crescent Evergreen Falcon Beacon"
)
COMPANY_KINDS = _words(
    "Trading Supply Goods Retail Market Outfitters Stores Mart Wholesale Distributors Provisions Emporium"
)
COMPANY_SUFFIXES = ("Co.", "Inc.", "Ltd.", "LLC", "Group", "")


def _places(text: str, country: str = "") -> tuple[tuple[str, str], ...]:
    """Parse `City, City:Country, ...`; a city without its own country gets `country`."""
    return tuple((c.split(":")[0].strip(), c.split(":")[1].strip() if ":" in c else country) for c in text.split(","))


def _items(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(","))


US = "United States"
# region -> (city, country); the US regions are the home market and sell the most
REGIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "Northeast": _places("New York, Boston, Philadelphia, Pittsburgh, Hartford", US),
    "Southeast": _places("Atlanta, Miami, Charlotte, Orlando, Nashville", US),
    "Midwest": _places("Chicago, Detroit, Minneapolis, Columbus, St. Louis", US),
    "Southwest": _places("Dallas, Houston, Phoenix, Austin, Albuquerque", US),
    "West Coast": _places("Los Angeles, San Francisco, Seattle, Portland, San Diego", US),
    "Canada": _places("Toronto, Montreal, Vancouver, Calgary, Ottawa", "Canada"),
    "United Kingdom": _places("London, Manchester, Birmingham, Leeds, Glasgow", "United Kingdom"),
    "Western Europe": _places("Paris:France, Berlin:Germany, Amsterdam:Netherlands, Madrid:Spain, Milan:Italy"),
}
REGION_WEIGHTS = (18, 14, 15, 13, 16, 9, 8, 7)

# category -> (description, product nouns, list price range)
CATEGORIES: dict[str, tuple[str, tuple[str, ...], tuple[int, int]]] = {
    "Electronics": (
        "Audio, wearables and smart home devices",
        _items(
            "Wireless Earbuds, Bluetooth Speaker, Smart Watch, Noise-Cancelling Headphones, Smart Plug, "
            "Action Camera, E-Reader, Soundbar"
        ),
        (19, 349),
    ),
    "Computers": (
        "Laptops, monitors and accessories",
        _items(
            "Laptop Stand, 27-inch Monitor, Mechanical Keyboard, Wireless Mouse, USB-C Hub, External SSD, "
            "Webcam, Docking Station"
        ),
        (15, 499),
    ),
    "Home & Kitchen": (
        "Cookware, small appliances and kitchen tools",
        _items(
            "Chef Knife, Nonstick Skillet, Blender, Coffee Grinder, Electric Kettle, Cutting Board, Air Fryer, "
            "Food Storage Set"
        ),
        (12, 189),
    ),
    "Furniture": (
        "Home and office furniture",
        _items(
            "Office Chair, Standing Desk, Bookshelf, Side Table, Filing Cabinet, Bar Stool, Floor Lamp, Storage Bench"
        ),
        (49, 599),
    ),
    "Office Supplies": (
        "Paper, pens and everyday office consumables",
        _items(
            "Printer Paper, Gel Pens, Sticky Notes, Stapler, Desk Organizer, Whiteboard Markers, "
            "Spiral Notebook, Label Maker"
        ),
        (3, 45),
    ),
    "Sports & Outdoors": (
        "Fitness gear, camping and cycling",
        _items(
            "Yoga Mat, Camping Tent, Hiking Backpack, Water Bottle, Dumbbell Set, Bike Helmet, Sleeping Bag, "
            "Trekking Poles"
        ),
        (9, 259),
    ),
    "Toys & Games": (
        "Toys, puzzles and board games",
        _items("Building Blocks, Board Game, Jigsaw Puzzle, Plush Bear, RC Car, Art Kit, Card Game, Science Kit"),
        (8, 89),
    ),
    "Health & Beauty": (
        "Personal care and wellness",
        _items(
            "Electric Toothbrush, Hair Dryer, Face Serum, Shampoo, Sunscreen, Massage Gun, Body Lotion, Beard Trimmer"
        ),
        (6, 149),
    ),
    "Clothing": (
        "Apparel and footwear",
        _items(
            "Rain Jacket, Running Shoes, Wool Sweater, Denim Jeans, Cotton T-Shirt, Fleece Hoodie, "
            "Leather Belt, Winter Gloves"
        ),
        (12, 179),
    ),
    "Tools & Hardware": (
        "Power tools, hand tools and fasteners",
        _items(
            "Cordless Drill, Socket Set, Tape Measure, Screwdriver Set, Work Light, Tool Box, Circular Saw, "
            "Utility Knife"
        ),
        (7, 229),
    ),
    "Garden": (
        "Garden tools, planters and outdoor living",
        _items(
            "Garden Hose, Pruning Shears, Raised Planter, Lawn Sprinkler, Patio Chair, Compost Bin, "
            "Solar Lights, Watering Can"
        ),
        (9, 199),
    ),
    "Grocery": (
        "Coffee, tea and pantry staples",
        _items("Espresso Beans, Green Tea, Olive Oil, Dark Chocolate, Granola, Maple Syrup, Sea Salt, Mixed Nuts"),
        (4, 39),
    ),
}
BRANDS = _words("Aurora Vertex Nimbus Apex Orion Zenith Solace Ember Polar Cobalt Vista Nova Summit Terra Lumen Atlas")
SUPPLIER_CITIES = _places(
    "Shenzhen:China, Shanghai:China, Ho Chi Minh City:Vietnam, Hamburg:Germany, Chicago:United States, "
    "Los Angeles:United States, Monterrey:Mexico, Milan:Italy, Taipei:Taiwan, Bangalore:India, Wroclaw:Poland, "
    "Osaka:Japan"
)

# (title, department, manager index or None, region index or None, salary range, hire years)
EXECUTIVES = (
    ("Chief Executive Officer", "Executive", None, (235_000, 260_000), (2012, 2013)),
    ("Vice President of Sales", "Sales", 1, (165_000, 185_000), (2013, 2016)),
    ("Chief Financial Officer", "Finance", 1, (170_000, 190_000), (2013, 2016)),
    ("Marketing Director", "Marketing", 1, (130_000, 150_000), (2014, 2018)),
    ("Operations Director", "Operations", 1, (125_000, 145_000), (2014, 2018)),
    ("IT Manager", "IT", 1, (115_000, 135_000), (2015, 2019)),
    ("HR Manager", "Human Resources", 1, (95_000, 110_000), (2015, 2019)),
    ("Customer Service Manager", "Customer Service", 1, (80_000, 95_000), (2015, 2019)),
)
# staff outside sales: (title, department, manager id, salary range, hire years)
STAFF = (
    ("Accountant", "Finance", 3, (62_000, 78_000), (2016, 2023)),
    ("Accountant", "Finance", 3, (62_000, 78_000), (2019, 2025)),
    ("Financial Analyst", "Finance", 3, (72_000, 90_000), (2018, 2024)),
    ("Marketing Specialist", "Marketing", 4, (55_000, 72_000), (2017, 2023)),
    ("Marketing Specialist", "Marketing", 4, (55_000, 72_000), (2021, 2025)),
    ("Content Manager", "Marketing", 4, (60_000, 76_000), (2018, 2024)),
    ("Warehouse Associate", "Operations", 5, (38_000, 46_000), (2016, 2022)),
    ("Warehouse Associate", "Operations", 5, (38_000, 46_000), (2020, 2025)),
    ("Warehouse Associate", "Operations", 5, (38_000, 46_000), (2024, 2025)),
    ("Logistics Coordinator", "Operations", 5, (48_000, 60_000), (2017, 2023)),
    ("Logistics Coordinator", "Operations", 5, (48_000, 60_000), (2022, 2025)),
    ("Software Engineer", "IT", 6, (95_000, 125_000), (2018, 2024)),
    ("Systems Administrator", "IT", 6, (70_000, 88_000), (2016, 2022)),
    ("HR Specialist", "Human Resources", 7, (52_000, 66_000), (2017, 2023)),
    ("Recruiter", "Human Resources", 7, (50_000, 64_000), (2023, 2025)),
    ("Customer Service Representative", "Customer Service", 8, (36_000, 44_000), (2018, 2024)),
    ("Customer Service Representative", "Customer Service", 8, (36_000, 44_000), (2024, 2025)),
)

SEASON = {1: 0.8, 2: 0.8, 3: 0.95, 4: 0.95, 5: 1.0, 6: 1.0, 7: 0.9, 8: 0.95, 9: 1.0, 10: 1.1, 11: 1.45, 12: 1.6}
WEEKDAY = (1.0, 1.0, 1.0, 1.0, 1.05, 0.75, 0.55)

N_CUSTOMERS = 500
N_SUPPLIERS = 40
N_PRODUCTS = 200
N_ORDERS = 5000

# --- generation --------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower().replace(" ", ".") if ch.isalnum() or ch == ".").strip(".")


def _rand_date(rng: random.Random, lo: date, hi: date) -> date:
    return lo + timedelta(days=rng.randint(0, (hi - lo).days))


def _person_names(rng: random.Random, n: int, taken: set[str]) -> list[tuple[str, str]]:
    out = []
    while len(out) < n:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        if f"{first} {last}" not in taken:
            taken.add(f"{first} {last}")
            out.append((first, last))
    return out


def _company_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        parts = [rng.choice(COMPANY_WORDS), rng.choice(COMPANY_KINDS), rng.choice(COMPANY_SUFFIXES)]
        name = " ".join(p for p in parts if p)
        if name not in taken:
            taken.add(name)
            return name


def _money(x: float) -> float:
    return round(x + 1e-9, 2)


def _gen_regions() -> list[dict]:
    return [{"region_id": i, "name": name} for i, name in enumerate(REGIONS, 1)]


def _gen_categories() -> list[dict]:
    return [{"category_id": i, "name": n, "description": d[0]} for i, (n, d) in enumerate(CATEGORIES.items(), 1)]


def _gen_suppliers(rng: random.Random, taken: set[str]) -> list[dict]:
    rows = []
    for sid in range(1, N_SUPPLIERS + 1):
        name = _company_name(rng, taken)
        first, last = _person_names(rng, 1, taken)[0]
        city, country = rng.choice(SUPPLIER_CITIES)
        rows.append(
            {
                "supplier_id": sid,
                "name": name,
                "contact_name": f"{first} {last}",
                "email": f"{_slug(first)}.{_slug(last)}@{_slug(name).replace('.', '')}.example.com",
                "city": city,
                "country": country,
                "rating": round(rng.uniform(2.5, 5.0), 1),
            }
        )
    return rows


def _gen_products(rng: random.Random, suppliers_rows: list[dict]) -> list[dict]:
    # Each supplier has one main category, so every category is served by three or four suppliers.
    by_category = {cid: [] for cid in range(1, len(CATEGORIES) + 1)}
    for s in suppliers_rows:
        by_category[(s["supplier_id"] - 1) % len(CATEGORIES) + 1].append(s["supplier_id"])
    rows: list[dict] = []
    per_category = [N_PRODUCTS // len(CATEGORIES) + (i < N_PRODUCTS % len(CATEGORIES)) for i in range(len(CATEGORIES))]
    for cid, ((cname, (_, nouns, (lo, hi))), count) in enumerate(zip(CATEGORIES.items(), per_category, strict=True), 1):
        combos = [(b, n) for n in nouns for b in BRANDS]
        for brand, noun in rng.sample(combos, count):
            price = int(rng.uniform(lo, hi)) + 0.99
            stock = rng.choices((0, rng.randint(1, 25), rng.randint(20, 200), rng.randint(100, 600)), (2, 5, 10, 8))[0]
            pid = len(rows) + 1
            rows.append(
                {
                    "product_id": pid,
                    "name": f"{brand} {noun}",
                    "sku": f"{cname[:3].upper()}-{pid:04d}",
                    "category_id": cid,
                    "supplier_id": rng.choice(by_category[cid]),
                    "unit_price": _money(price),
                    "unit_cost": _money(price * rng.uniform(0.45, 0.72)),
                    "stock_quantity": stock,
                    "reorder_level": rng.choice((10, 20, 25, 50)),
                    "discontinued": rng.random() < 0.08,
                }
            )
    return rows


def _gen_employees(rng: random.Random, taken: set[str]) -> list[dict]:
    specs: list[tuple[str, str, int | None, int | None, tuple[int, int], tuple[int, int]]] = []
    specs += [(t, d, m, None, s, h) for t, d, m, s, h in EXECUTIVES]
    n_regions = len(REGIONS)
    # regional sales managers (ids 9..16) report to the VP of Sales (id 2)
    specs += [
        ("Regional Sales Manager", "Sales", 2, r, (98_000, 118_000), (2014, 2020)) for r in range(1, n_regions + 1)
    ]
    # two representatives per region (the first hired early, so every region always has someone), one extra
    for r in [*range(1, n_regions + 1), *range(1, n_regions + 1), 1]:
        first_of_region = sum(1 for s in specs if s[3] == r and s[0] != "Regional Sales Manager") == 0
        years = (2016, 2022) if first_of_region else (2019, 2025)
        senior = first_of_region and rng.random() < 0.6
        title = "Senior Sales Representative" if senior else "Sales Representative"
        salary = (72_000, 88_000) if senior else (52_000, 68_000)
        specs.append((title, "Sales", 8 + r, r, salary, years))
    specs += [(t, d, m, None, s, h) for t, d, m, s, h in STAFF]
    names = _person_names(rng, len(specs), taken)
    rows = []
    for eid, ((title, dept, manager, region, (slo, shi), (hlo, hhi)), (first, last)) in enumerate(
        zip(specs, names, strict=True), 1
    ):
        hire = _rand_date(rng, date(hlo, 1, 1), min(date(hhi, 12, 31), date(2025, 11, 30)))
        rows.append(
            {
                "employee_id": eid,
                "first_name": first,
                "last_name": last,
                "email": f"{_slug(first)}.{_slug(last)}@querywise-demo.com",
                "title": title,
                "department": dept,
                "manager_id": manager,
                "region_id": region,
                "hire_date": hire,
                "salary": float(round(rng.uniform(slo, shi) / 500) * 500),
            }
        )
    return rows


def _gen_customers(rng: random.Random, taken: set[str]) -> tuple[list[dict], list[float]]:
    region_ids = list(range(1, len(REGIONS) + 1))
    cities = list(REGIONS.values())
    rows, weights = [], []
    for cid in range(1, N_CUSTOMERS + 1):
        segment = "wholesale" if rng.random() < 0.35 else "retail"
        if segment == "retail":
            first, last = _person_names(rng, 1, taken)[0]
            name, email = f"{first} {last}", f"{_slug(first)}.{_slug(last)}@example.com"
        else:
            name = _company_name(rng, taken)
            email = f"orders@{_slug(name).replace('.', '')}.example.com"
        region = rng.choices(region_ids, REGION_WEIGHTS)[0]
        city, country = rng.choice(cities[region - 1])
        rows.append(
            {
                "customer_id": cid,
                "name": name,
                "segment": segment,
                "email": email,
                "city": city,
                "country": country,
                "region_id": region,
                "signup_date": None,  # set once the first order is known
            }
        )
        # heavy-tailed activity so "top customers" questions have clear answers; a few never order at all
        weight = 0.0 if rng.random() < 0.05 else min(rng.paretovariate(1.6), 12.0)
        weights.append(weight * (1.6 if segment == "wholesale" else 1.0))
    return rows, weights


def _order_dates(rng: random.Random) -> list[date]:
    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    # seasonality (holiday peak), a weekly cycle and ~25% growth over the two years
    weights = [SEASON[d.month] * WEEKDAY[d.weekday()] * (1 + 0.25 * i / len(days)) for i, d in enumerate(days)]
    return sorted(rng.choices(days, weights, k=N_ORDERS))


def _wholesale_lot(price: float) -> tuple[int, ...]:
    """Quantities a trade customer orders: cases of cheap goods, a few units of expensive ones."""
    if price >= 150:
        return (2, 3, 4, 5, 6, 8, 10)
    if price >= 40:
        return (4, 5, 6, 8, 10, 12, 15, 20)
    return (10, 12, 20, 24, 25, 30, 40, 50)


def _status(rng: random.Random, order_date: date) -> str:
    age = (END - order_date).days
    if age <= 3:
        return rng.choices(("processing", "shipped"), (7, 3))[0]
    if age <= 14:
        return rng.choices(("processing", "shipped", "delivered", "cancelled"), (10, 50, 35, 5))[0]
    return rng.choices(("delivered", "cancelled", "returned"), (90, 5, 5))[0]


def _pool(items, weights) -> tuple[list, list[float]]:
    """Population and cumulative weights, computed once for the thousands of draws from it."""
    return list(items), list(itertools.accumulate(weights))


def _sellers(employees_rows: list[dict]) -> dict[int, list[tuple[dict, float]]]:
    """Sales staff by region, each with how many orders they take relative to the others."""
    sellers: dict[int, list[tuple[dict, float]]] = {}
    for e in employees_rows:
        if e["department"] == "Sales" and e["region_id"] is not None:
            w = {"Senior Sales Representative": 1.3, "Sales Representative": 1.0}.get(e["title"], 0.4)
            sellers.setdefault(e["region_id"], []).append((e, w))
    return sellers


def _order(rng: random.Random, oid: int, odate: date, cust: dict, sellers: dict) -> dict:
    """One order's row: the rep (hired by then) of the customer's region, status, shipping date and channel."""
    wholesale = cust["segment"] == "wholesale"
    team = [(e, w) for e, w in sellers[cust["region_id"]] if e["hire_date"] <= odate]
    rep = rng.choices([e for e, _ in team], [w for _, w in team])[0]
    status = _status(rng, odate)
    shipped = None
    if status not in ("processing", "cancelled"):
        shipped = odate + timedelta(days=rng.randint(2, 6) if wholesale else rng.randint(1, 4))
        if shipped > END:
            status, shipped = "processing", None
    if wholesale:
        channel = rng.choices(("online", "phone"), (5, 5))[0]
    else:
        channel = rng.choices(("online", "in store", "phone"), (60, 28, 12))[0]
    return {
        "order_id": oid,
        "customer_id": cust["customer_id"],
        "employee_id": rep["employee_id"],
        "order_date": odate,
        "shipped_date": shipped,
        "status": status,
        "channel": channel,
    }


def _order_items(rng: random.Random, order: dict, wholesale: bool, pool, items_rows: list[dict]) -> float:
    """Appends the order's lines to `items_rows`; returns what the customer pays (after discounts)."""
    odate = order["order_date"]
    n_lines = (
        rng.choices((2, 3, 4, 5, 6, 7), (15, 25, 25, 18, 10, 7))[0]
        if wholesale
        else (rng.choices((1, 2, 3, 4, 5), (34, 30, 20, 10, 6))[0])
    )
    chosen: list[dict] = []
    while len(chosen) < n_lines:
        p = rng.choices(pool[0], cum_weights=pool[1])[0]
        if p not in chosen:
            chosen.append(p)
    black_friday = odate.month == 11 and 22 <= odate.day <= 30
    total = 0.0
    for p in chosen:
        qty = rng.choice(_wholesale_lot(p["unit_price"])) if wholesale else rng.choices((1, 2, 3), (70, 22, 8))[0]
        # list prices went up ~4% at the start of 2025; products.unit_price is today's price
        price = _money(p["unit_price"] * (0.96 if odate.year == 2024 else 1.0))
        if wholesale:
            big = qty >= 20 or qty * price >= 2000
            discount = rng.choice((0.1, 0.15)) if big else rng.choice((0.0, 0.05))
        elif black_friday:
            discount = rng.choice((0.15, 0.2, 0.25))
        else:
            discount = rng.choices((0.0, 0.05, 0.1, 0.15, 0.2), (82, 6, 6, 3, 3))[0]
        items_rows.append(
            {
                "order_item_id": len(items_rows) + 1,
                "order_id": order["order_id"],
                "product_id": p["product_id"],
                "quantity": qty,
                "unit_price": price,
                "discount": discount,
            }
        )
        total += qty * price * (1 - discount)
    return total


def _payments(rng: random.Random, order: dict, wholesale: bool, total: float) -> list[dict]:
    """The order's payment attempts (none for a cancelled order: cancelled before payment was taken)."""
    oid, status, channel = order["order_id"], order["status"], order["channel"]
    if status == "cancelled":
        return []
    if wholesale:
        method = rng.choices(("invoice", "bank transfer", "card"), (55, 35, 10))[0]
    elif channel == "in store":
        method = "card"
    else:
        method = rng.choices(("card", "paypal"), (62, 38))[0]
    placed = datetime.combine(order["order_date"], time(rng.randint(8, 21), rng.randint(0, 59), rng.randint(0, 59)))
    rows = []
    if method in ("card", "paypal"):
        if rng.random() < 0.04:  # a declined attempt before the one that went through
            rows.append(
                {"order_id": oid, "method": method, "amount": _money(total), "paid_at": placed, "status": "failed"}
            )
            placed += timedelta(minutes=rng.randint(2, 30))
        paid_at = placed
    else:
        paid_at = placed + timedelta(days=rng.randint(14, 60) if method == "invoice" else rng.randint(1, 10))
    pay_status = "refunded" if status == "returned" else "completed"
    if paid_at.date() > END:
        paid_at, pay_status = None, "pending"
    rows.append({"order_id": oid, "method": method, "amount": _money(total), "paid_at": paid_at, "status": pay_status})
    return rows


def _gen_trading(
    rng: random.Random, customers_rows: list[dict], weights: list[float], employees_rows: list[dict], products_rows
) -> tuple[list[dict], list[dict], list[dict]]:
    """Orders, their lines and payments over the trading period; customers' signup dates follow their first order.
    The order of random draws is part of the data: the business suite's gold answers were computed on seed 0."""
    sellers = _sellers(employees_rows)
    cutoff = date(2025, 3, 1)  # discontinued products stopped selling in early 2025
    popularity = [min(rng.paretovariate(1.2), 25.0) for _ in products_rows]
    all_products = _pool(products_rows, popularity)
    selling = [i for i, p in enumerate(products_rows) if not p["discontinued"]]
    late_products = _pool([products_rows[i] for i in selling], [popularity[i] for i in selling])
    customer_pool = _pool(customers_rows, weights)

    orders_rows, items_rows, payments_rows = [], [], []
    first_order: dict[int, date] = {}
    for oid, odate in enumerate(_order_dates(rng), 1):
        cust = rng.choices(customer_pool[0], cum_weights=customer_pool[1])[0]
        wholesale = cust["segment"] == "wholesale"
        first_order.setdefault(cust["customer_id"], odate)
        order = _order(rng, oid, odate, cust, sellers)
        orders_rows.append(order)
        total = _order_items(rng, order, wholesale, all_products if odate < cutoff else late_products, items_rows)
        payments_rows += _payments(rng, order, wholesale, total)
    payments_rows = [{"payment_id": i, **r} for i, r in enumerate(payments_rows, 1)]

    for c in customers_rows:
        first = first_order.get(c["customer_id"])
        if first is None:
            c["signup_date"] = _rand_date(rng, date(2022, 1, 1), date(2025, 11, 30))
        else:
            c["signup_date"] = max(date(2021, 1, 1), first - timedelta(days=rng.randint(0, 300)))
    return orders_rows, items_rows, payments_rows


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """Rows per table (in foreign-key order), the same for the same seed."""
    rng = random.Random(seed)
    taken: set[str] = set()
    suppliers_rows = _gen_suppliers(rng, taken)
    products_rows = _gen_products(rng, suppliers_rows)
    employees_rows = _gen_employees(rng, taken)
    customers_rows, weights = _gen_customers(rng, taken)
    orders_rows, items_rows, payments_rows = _gen_trading(rng, customers_rows, weights, employees_rows, products_rows)
    rows = {
        "regions": _gen_regions(),
        "categories": _gen_categories(),
        "suppliers": suppliers_rows,
        "customers": customers_rows,
        "employees": employees_rows,
        "products": products_rows,
        "orders": orders_rows,
        "order_items": items_rows,
        "payments": payments_rows,
    }
    return {t.name: rows[t.name] for t in metadata.sorted_tables}


# --- loading -----------------------------------------------------------------------------------------------------


def load(engine: sa.Engine, seed: int = 0) -> None:
    """Create the tables and insert the generated rows in one transaction (the tables must not hold rows yet)."""
    data = generate(seed)
    with engine.begin() as conn:
        metadata.create_all(conn)
        for table in metadata.sorted_tables:
            rows = data[table.name]
            # executemany: one round trip per batch (insertmanyvalues on PostgreSQL), not per row
            for i in range(0, len(rows), 5000):
                conn.execute(table.insert(), rows[i : i + 5000])


def build_sqlite(path: Path = DEFAULT_PATH, seed: int = 0, force: bool = False) -> Path:
    """Write the demo database to `path` unless it exists; built beside it and renamed, so never half-written."""
    path = Path(path)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide the database from a service user
    tmp = Path(tmp_name)
    try:
        engine = sa.create_engine(f"sqlite:///{tmp}")
        try:
            load(engine, seed)
        finally:
            engine.dispose()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def row_counts(path: Path) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{Path(path)}")
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables
            }
    finally:
        engine.dispose()


def engine_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here: SQLAlchemy would otherwise look for psycopg2, which is not installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _load_url(url: str, seed: int, force: bool) -> str:
    engine = sa.create_engine(engine_url(url))
    try:
        where = engine.url.render_as_string(hide_password=True)
        present = sorted(set(sa.inspect(engine).get_table_names()) & set(metadata.tables))
        if present and not force:
            return f"{where} already has demo tables ({', '.join(present)}); nothing done (use --force to reload)"
        if present:
            metadata.drop_all(engine)
        load(engine, seed)
        return f"loaded the demo database into {where}"
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.db.demo", description="Build the demo business database")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=DEFAULT_PATH, help=f"SQLite file to write (default {DEFAULT_PATH})")
    where.add_argument("--url", help="load into this database instead, e.g. postgresql://user@host/db")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0, what the evaluation suite expects)")
    p.add_argument("--force", action="store_true", help="rebuild / reload even if the database is already there")
    a = p.parse_args(argv)
    try:
        if a.url:
            print(_load_url(a.url, a.seed, a.force))
        else:
            existed = a.out.exists()
            if existed and a.out.is_dir():
                p.error(f"--out {a.out} is a directory")
            build_sqlite(a.out, a.seed, a.force)
            if existed and not a.force:
                print(f"{a.out} exists; nothing done (use --force to rebuild)")
            else:
                counts = ", ".join(f"{t} {n}" for t, n in row_counts(a.out).items())
                print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB): {counts}")
    except sa.exc.ArgumentError as e:
        print(f"error: bad database URL {a.url!r}: {e}", file=sys.stderr)
        return 2
    except (sa.exc.SQLAlchemyError, OSError) as e:
        cause = getattr(e, "orig", None) or e  # the driver's message, without SQLAlchemy's statement dump
        print(f"error: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
