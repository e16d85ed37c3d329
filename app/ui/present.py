"""How an answer reads in the browser: plain headers for expressions, numbers with separators, SQL laid out, parse
errors in one sentence with the detail folded away.

Nothing here changes what ran: the SQL shown is the guarded query pretty-printed (same tree), cells keep their values
in a `title` when the display rounds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Number

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

# Integer columns whose numbers are names, not amounts: no thousands separator in a year or an id.
_CODE_COLUMN = re.compile(r"(^|_|\b)(id|year|yr|code|zip|postcode|phone|number|no)$", re.I)
_AGGREGATES = {
    exp.Sum: "Sum of {}",
    exp.Avg: "Average {}",
    exp.Min: "Lowest {}",
    exp.Max: "Highest {}",
    exp.Count: "Number of {}",
}
_OPERATORS = {exp.Mul: "×", exp.Div: "/", exp.Add: "+", exp.Sub: "−"}
_SYNTAX_SENTENCE = (
    "The SQL could not be read: it has a syntax error. Edit it below, or ask the question in other words."
)


@dataclass(frozen=True)
class Column:
    label: str  # what the header shows
    name: str  # what the database called it (the header's tooltip when they differ)
    numeric: bool
    code: bool  # integers that are identifiers or years: shown without separators


def _is_num(v: object) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _describe(node: exp.Expression) -> str | None:
    """Words for an expression, or None when there are none better than the SQL itself."""
    if isinstance(node, exp.Paren | exp.Alias):
        return _describe(node.this)
    if isinstance(node, exp.Round | exp.Cast | exp.TryCast | exp.Abs | exp.Coalesce):
        return _describe(node.this)
    if isinstance(node, exp.Column):
        return node.name.replace("_", " ")
    if isinstance(node, exp.Star):
        return None
    if isinstance(node, exp.Distinct):
        inner = [_describe(e) for e in node.expressions]
        return "distinct " + ", ".join(inner) if inner and all(inner) else None
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Star | type(None)):
        return "Count"
    for kind, words in _AGGREGATES.items():
        if isinstance(node, kind):
            inner = _describe(node.this)
            return words.format(inner) if inner else None
    for kind, sign in _OPERATORS.items():
        if isinstance(node, kind):
            left, right = _describe(node.left), _describe(node.right)
            return f"{left} {sign} {right}" if left and right else None
    if isinstance(node, exp.Literal):
        return node.this
    return None


def readable_header(name: str) -> str:
    """`SUM(o.amount)` → "Sum of amount", `COUNT(*)` → "Count"; a plain column name stays as it is."""
    if not re.search(r"[()*+/\-]", name) or len(name) > 300:
        return name
    try:
        node = sqlglot.parse_one(name, read="sqlite")
    except (SqlglotError, RecursionError, ValueError):
        return name
    words = _describe(node)
    return words[:1].upper() + words[1:] if words else name


def columns_of(names: list[str], rows: list[list]) -> list[Column]:
    out = []
    for i, name in enumerate(names):
        values = [r[i] for r in rows if r[i] is not None]
        numeric = bool(values) and all(_is_num(v) for v in values)
        code = numeric and all(isinstance(v, int) for v in values) and bool(_CODE_COLUMN.search(name.strip('"')))
        out.append(Column(readable_header(name), name, numeric, code))
    return out


def cell(value: object, column: Column) -> str:
    """A value as shown: integers with thousands separators, other numbers with two decimals, NULL as empty."""
    if value is None:
        return ""
    if not _is_num(value) or column.code:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.2f}"


# Past this the layout helps nobody (a 3,000-value IN list becomes 3,000 lines) and the laid-out text could outgrow
# the guard's length cap, so the editor would hold SQL that no longer runs when re-submitted: shown as it ran.
PRETTY_MAX_CHARS = 4_000


def pretty_sql(sql: str, dialect: str) -> str:
    """The query laid out one clause per line (sqlglot's printer, same tree); as it was when it does not parse or
    is long."""
    if len(sql) > PRETTY_MAX_CHARS:
        return sql
    try:
        trees = sqlglot.parse(sql, read=dialect)
        if len(trees) != 1 or trees[0] is None:
            return sql
        return trees[0].sql(dialect=dialect, pretty=True, comments=False)
    except (SqlglotError, RecursionError, ValueError):
        return sql


def plain_message(category: str, message: str | None) -> tuple[str | None, str | None]:
    """(sentence, detail): a parse error reads as one plain sentence; the parser's words go in the detail."""
    if category == "syntax_error" and message:
        return _SYNTAX_SENTENCE, message
    return message, None
