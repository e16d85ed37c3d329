"""Spider hardness levels (easy / medium / hard / extra) and SQL feature counts, on the sqlglot AST.

The levels reproduce `Evaluator.eval_hardness` of the official Spider evaluation (Yu et al., 2018;
github.com/taoyds/spider, evaluation.py: `count_component1`, `count_component2`, `count_others`), which reads
Spider's own parse of the query. Like the original, only the outermost query is scored: for `A UNION B` that is `A`
(Spider parses the right side as a nested query), and nested queries add to component 2 without being scored.
As in Spider, a subquery in FROM is one more table (component 1), not a nested query; a CTE, which Spider never
parses, counts as a nested query. On Spider dev this gives the published 248 / 446 / 174 / 166 examples per level.
SQL that does not parse as one SQLite query is "extra": it is at least as hard as anything the rules can name.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

LEVELS = ("easy", "medium", "hard", "extra")
# Spider's AGG_OPS: other functions are plain columns to its parser.
_SPIDER_AGGS = (exp.Max, exp.Min, exp.Count, exp.Sum, exp.Avg)
FEATURES = ("joins", "where", "group_by", "order_by", "limit", "aggregates", "nesting", "set_ops")


@lru_cache(maxsize=4096)
def parse_query(sql: str) -> exp.Query | None:
    """The one SQLite query in `sql`, or None. Cached (do not modify the tree): the data report and the evaluation
    ask several questions of the same SQL."""
    try:
        statements = [
            s for s in sqlglot.parse(sql, read="sqlite") if s is not None and not isinstance(s, exp.Semicolon)
        ]
    except (SqlglotError, RecursionError):
        return None
    # sqlglot reads free text as an expression (`hello world` is an alias), so insist on a query
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return None
    return statements[0]


def _unwrap(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Subquery):
        node = node.this
    return node


def _same_level(node: exp.Expr | None) -> Iterator[exp.Expr]:
    """`node` and its descendants down to (not into) nested queries, which Spider scores as separate SQL."""
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        yield n
        stack.extend(c for c in n.iter_expressions() if not isinstance(c, exp.Query))


def _nested_queries(node: exp.Expr | None) -> int:
    """Queries directly nested in a condition (`IN (SELECT …)`, `> (SELECT …)`, `EXISTS (…)`)."""
    return sum(isinstance(c, exp.Query) for n in _same_level(node) for c in n.iter_expressions())


def _condition_units(cond: exp.Expr | None) -> tuple[list[exp.Expr], int]:
    """Spider's flat condition list: the units between AND/OR, and how many AND/OR join them."""
    if cond is None:
        return [], 0
    cond = cond.unnest()
    if isinstance(cond, exp.And | exp.Or):
        left, n_left = _condition_units(cond.this)
        right, n_right = _condition_units(cond.expression)
        return left + right, n_left + n_right + 1
    return [cond], 0


def _has_agg(node: exp.Expr) -> bool:
    return any(isinstance(n, _SPIDER_AGGS) for n in _same_level(node))


def _counts(sql: str) -> tuple[int, int, int] | None:
    """(component1, component2, others) of the outermost query, as Spider counts them."""
    root = parse_query(sql)
    if root is None:
        return None
    root = _unwrap(root)
    comp2 = len(root.args["with_"].expressions) if root.args.get("with_") else 0
    select = root
    if isinstance(select, exp.SetOperation):
        comp2 += 1  # Spider nests the rest of a chain of set operations in this one: it counts once
        while isinstance(select, exp.SetOperation):
            select = _unwrap(select.this)
    if not isinstance(select, exp.Select):
        return None

    joins = select.args.get("joins") or []
    where = select.args.get("where")
    having = select.args.get("having")
    group = select.args.get("group")
    order = select.args.get("order")
    conditions = [j.args.get("on") for j in joins] + [where and where.this, having and having.this]

    comp1 = sum(bool(select.args.get(k)) for k in ("where", "group", "order", "limit"))
    n_tables = (1 if select.args.get("from_") else 0) + len(joins)
    comp1 += max(n_tables - 1, 0)
    comp1 += sum(isinstance(n, exp.Or | exp.Like) for c in conditions for n in _same_level(c))
    comp2 += sum(_nested_queries(c) for c in conditions)

    where_units, _ = _condition_units(where and where.this)
    having_units, having_joins = _condition_units(having and having.this)
    group_exprs = group.expressions if group else []
    aggs = sum(_has_agg(e) for e in select.expressions) + sum(_has_agg(e) for e in group_exprs)
    if order:
        aggs += sum(isinstance(n, _SPIDER_AGGS) for o in order.expressions for n in _same_level(o))
    # Spider's count_agg reads a condition unit's first field, which is its NOT flag, and on HAVING it also counts
    # every AND/OR; the real aggregates in WHERE/HAVING go uncounted. Kept so the levels match published numbers.
    aggs += sum(isinstance(u, exp.Not) for u in where_units + having_units) + having_joins
    others = (aggs > 1) + (len(select.expressions) > 1) + (len(where_units) > 1) + (len(group_exprs) > 1)
    return comp1, comp2, others


def hardness(sql: str) -> str:
    """Spider's level of `sql`: "easy", "medium", "hard" or "extra" ("extra" when it does not parse)."""
    counts = _counts(sql)
    if counts is None:
        return "extra"
    comp1, comp2, others = counts
    if comp1 <= 1 and others == 0 and comp2 == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and comp2 == 0) or (comp1 <= 2 and others < 2 and comp2 == 0):
        return "medium"
    if (
        (others > 2 and comp1 <= 2 and comp2 == 0)
        or (2 < comp1 <= 3 and others <= 2 and comp2 == 0)
        or (comp1 <= 1 and others == 0 and comp2 <= 1)
    ):
        return "hard"
    return "extra"


def sql_features(sql: str) -> dict[str, int]:
    """How often each construct occurs anywhere in `sql`, nested queries included (all zero when it does not parse).

    `nesting` counts queries inside another (subqueries, CTEs), not the branches of a set operation.
    """
    root = parse_query(sql)
    if root is None:
        return dict.fromkeys(FEATURES, 0)
    n_selects = sum(1 for _ in root.find_all(exp.Select))
    set_ops = sum(1 for _ in root.find_all(exp.SetOperation))
    return {
        "joins": sum(1 for _ in root.find_all(exp.Join)),
        "where": sum(1 for _ in root.find_all(exp.Where)),
        "group_by": sum(1 for _ in root.find_all(exp.Group)),
        "order_by": sum(not isinstance(o.parent, exp.Window) for o in root.find_all(exp.Order)),
        "limit": sum(1 for _ in root.find_all(exp.Limit)),
        "aggregates": sum(1 for _ in root.find_all(exp.AggFunc)),
        # a chain of k set operations has k + 1 branches; every other SELECT sits inside something
        "nesting": max(n_selects - set_ops - 1, 0),
        "set_ops": set_ops,
    }
