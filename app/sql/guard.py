"""The SQL guard: turn one untrusted query from the model into one bounded, read-only query for the target database.

The model writes SQLite; its output is untrusted input. The guard parses it with sqlglot, accepts only a single read
query (SELECT, WITH … SELECT, UNION/INTERSECT/EXCEPT, subqueries), refuses anything that writes, changes session
state or reaches outside the data (see `_WRITE_NODES` and `is_denied_function`), bounds the result with a LIMIT and
transpiles it to the target dialect. The transpiled text is parsed again and re-checked, so what runs is what was
checked. This is one layer: the executor (`app.sql.executor`) still opens the database read-only.

System catalogs (`sqlite_master`/`sqlite_schema`, any `sqlite_*`, `pragma_*` or `pg_*` relation, the `pg_catalog`,
`information_schema` and `pg_toast` schemas) are refused on purpose: they leak server details (users, settings,
other schemas) and the product shows the schema on its own schema page instead.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError

# The model emits ~160 tokens; anything far longer is not a question's answer and only costs parse time.
MAX_SQL_CHARS = 20_000
# Parse-tree nodes (identifiers, literals, operators…): the model's SQL has a few hundred, a person's long report a
# thousand or two, an IN list of 3,000 ids ~3,000. Checking, transpiling and re-parsing cost grows with the tree;
# 20,000 characters of `1+1+…` would be ~10,000 nodes and a third of a second of CPU per request.
MAX_SQL_NODES = 5_000

_DIALECTS = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres"}
# Schema names that mean "the user's tables" when written out: `main.t` in SQLite, `public.t` in PostgreSQL.
_DEFAULT_SCHEMAS = {"sqlite": "main", "postgres": "public"}

_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery)

# Statement kinds refused anywhere in the tree (a writable CTE hides a DELETE inside a SELECT).
_WRITE_NODES = tuple(
    cls
    for cls in (
        getattr(exp, name, None)
        for name in (
            "DML", "DDL", "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable",
            "Copy", "Into", "Lock", "Returning", "Command", "Pragma", "Attach", "Detach", "Transaction", "Commit",
            "Rollback", "Grant", "Revoke", "Set", "Use", "Analyze", "Describe", "Show", "Kill", "Cache", "Uncache",
            "Refresh", "LoadData", "Comment", "Declare", "Execute", "Summarize", "Put", "Get", "Export",
        )
    )
    if cls is not None
)  # fmt: skip

_DENIED_FUNCTIONS = frozenset(
    {
        # SQLite: extensions and the CLI's file helpers.
        "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "fsdir", "zipfile",
        "dbstat",  # the table-valued form `dbstat('main')` reads page statistics of every table
        "sqlar_compress", "sqlar_uncompress",
        # PostgreSQL: session state, sequences (writes), transaction ids, large objects, other servers.
        "set_config", "current_setting", "nextval", "setval", "currval", "lastval", "copy", "dblink",
        "dblink_exec", "loread", "lowrite", "ts_stat", "ts_rewrite",
        # Server details, refused like the catalogs: the version, addresses, the role the service connects as.
        "version", "inet_server_addr", "inet_server_port", "inet_client_addr", "inet_client_port",
        "current_user", "session_user", "current_role", "system_user", "user", "current_database",
        "current_catalog",
    }
)  # fmt: skip
# Prefixes cover whole families: every pg_* function (files, sleeps, advisory locks, backends, config, catalog
# helpers); pragma_* table-valued functions; large objects; txid_* (assigns a transaction id); dblink_*; sqlite_*
# (version, source id, compile options).
_DENIED_PREFIXES = ("pg_", "pragma_", "lo_", "txid_", "dblink_", "sqlite_")
# query_to_xml and friends run an arbitrary SQL string (or dump a whole table) out of the guard's sight. Catalog
# helpers that take a relation's name as text (to_regclass('t'), has_table_privilege('t', …), obj_description)
# answer differently for a table that exists: a key limited to some tables would learn which others exist.
_DENIED_PATTERN = re.compile(r"_to_xml|^to_reg|^has_\w*_privilege$|_description$")

# SQLite's printf pads `%.Nc` one character at a time, for any N and even once the result is too large to keep: one
# call takes seconds that no deadline can interrupt. So printf/format need a literal format without a %c precision.
_FORMAT_FUNCTIONS = frozenset({"printf", "format"})
_SLOW_FORMAT = re.compile(r"%[-+ 0#,!*\d]*\.[*\d]*c")

# String searches compare the search text at every position of the subject, in one call no deadline can interrupt
# (SQLite's instr/replace/trim and PostgreSQL's strpos/replace/split_part alike): with both texts large, minutes. The
# search text (or trim's character set) must be a literal of at most _MAX_NEEDLE_CHARS characters.
_MAX_NEEDLE_CHARS = 64
_NEEDLE_ARGS: dict[type, tuple[str, ...]] = {
    exp.StrPosition: ("substr",),
    exp.Replace: ("expression",),
    exp.Trim: ("expression",),
    exp.SplitPart: ("delimiter",),
    exp.Translate: ("from_",),
    exp.StringToArray: ("expression",),
}
_SEARCH_FUNCTIONS = frozenset({"instr", "strpos", "position", "replace", "split_part", "translate", "btrim", "ltrim",
                               "rtrim", "trim", "string_to_array"})  # fmt: skip

# Unquoted, these are not columns in PostgreSQL but the role: `SELECT user FROM t` (a column in SQLite) names it.
_ROLE_KEYWORDS = frozenset({"user", "current_user", "session_user", "current_role", "system_user"})

_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
# `pragma_*` also works as a bare table name in SQLite (`FROM pragma_database_list` shows file paths); dbstat shows pages.
_SYSTEM_PREFIXES = ("sqlite_", "pg_", "pragma_")
_SYSTEM_TABLES = frozenset({"dbstat"})

# First words that start a statement the guard never runs: used to say "refused" rather than "syntax error" when
# sqlglot cannot even parse such a statement (e.g. `DO $$ … $$` or `LOCK TABLE` read as SQLite).
_NON_READ_KEYWORDS = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "CREATE", "DROP", "ALTER", "TRUNCATE",
        "PRAGMA", "ATTACH", "DETACH", "VACUUM", "REINDEX", "ANALYZE", "COPY", "BEGIN", "START", "COMMIT", "END",
        "ROLLBACK", "SAVEPOINT", "RELEASE", "ABORT", "SET", "RESET", "GRANT", "REVOKE", "CALL", "EXEC", "EXECUTE",
        "DO", "LOCK", "UNLOCK", "LISTEN", "NOTIFY", "UNLISTEN", "LOAD", "PREPARE", "DEALLOCATE", "DISCARD",
        "CLUSTER", "REFRESH", "COMMENT", "SECURITY", "IMPORT", "CHECKPOINT", "EXPLAIN", "SHOW", "DECLARE",
        "FETCH", "MOVE", "CLOSE", "USE", "DESCRIBE", "KILL",
    }
)  # fmt: skip

_LEADING_WORD = re.compile(r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*([A-Za-z_]+)", re.S)


class GuardError(Exception):
    """A query the guard will not run. `category` is "refused" or "syntax_error"; `message` is for the user."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category
        self.message = message


@dataclass(frozen=True)
class GuardedSQL:
    """A checked query: `sql` is in the target dialect, with its LIMIT; it is both shown to the user and run."""

    sql: str
    tables: frozenset[str]  # lowercased; `schema.name` only for a schema other than main/public; no CTE names
    limit: int  # the effective LIMIT of the outermost query
    capped: bool = False  # True when the guard added or tightened the LIMIT (the row cap, not the user, bounds it)
    allowed: frozenset[str] | None = None  # the key's allow-list it was checked against; the executor enforces it again


def is_denied_function(name: str) -> bool:
    """True for functions the guard refuses (case-insensitive); also used by the executor's SQLite authorizer."""
    lowered = name.lower().rsplit(".", 1)[-1]
    return lowered in _DENIED_FUNCTIONS or lowered.startswith(_DENIED_PREFIXES) or bool(_DENIED_PATTERN.search(lowered))


def sqlglot_dialect(name: str) -> str:
    """sqlglot's name for a database dialect (`postgresql` → `postgres`)."""
    return _dialect(name)


def _dialect(name: str) -> str:
    try:
        return _DIALECTS[name.lower()]
    except KeyError:
        raise ValueError(f"unsupported SQL dialect {name!r} (use sqlite or postgresql)") from None


def _refuse(found: str) -> GuardError:
    return GuardError("refused", f"Only read-only queries are allowed: found {found}.")


def _leading_word(sql: str) -> str:
    m = _LEADING_WORD.match(sql)
    return m.group(1).upper() if m else ""


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.Into):
        return "SELECT … INTO"
    if isinstance(node, exp.Lock):
        return "FOR UPDATE" if node.args.get("update") else "FOR SHARE"
    if isinstance(node, exp.Transaction):
        return "BEGIN"
    if isinstance(node, exp.TruncateTable):
        return "TRUNCATE"
    return node.key.upper()


def _parse(sql: str, dialect: str) -> exp.Expr:
    """Parse exactly one statement; a trailing semicolon or comment is not a second statement."""
    try:
        parsed = sqlglot.parse(sql, read=dialect)
    except ParseError as e:
        word = _leading_word(sql)
        if word in _NON_READ_KEYWORDS:
            raise _refuse(word) from None
        first = e.errors[0] if e.errors else {}
        where = f" (line {first['line']}, column {first['col']})" if first.get("line") else ""
        detail = first.get("description") or "invalid syntax"
        raise GuardError("syntax_error", f"The SQL could not be parsed: {detail}{where}.") from None
    except SqlglotError:  # tokenizer errors
        raise GuardError("syntax_error", "The SQL could not be parsed: an unterminated string or bad token.") from None
    except RecursionError:
        raise GuardError("syntax_error", "The SQL is nested too deeply to check.") from None
    # sqlglot keeps a comment after the last `;` as a Semicolon node: it holds no SQL.
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if not statements:
        raise GuardError("syntax_error", "The query is empty: there is no SQL statement to run.")
    if len(statements) > 1:
        raise GuardError("refused", f"Only one statement at a time is allowed; found {len(statements)}.")
    return statements[0]


def _normalize_sqlite(tree: exp.Expr, target: str) -> None:
    """Make SQLite's implicit meanings explicit so they survive transpiling."""
    # SQLite treats a CTE that names itself as recursive without the keyword; PostgreSQL needs `RECURSIVE`.
    for with_ in tree.find_all(exp.With):
        if with_.args.get("recursive"):
            continue
        for cte in with_.expressions:
            name = cte.alias.lower()
            if any(not t.db and t.name.lower() == name for t in cte.this.find_all(exp.Table)):
                with_.set("recursive", True)
                break
    if target == "sqlite":
        _sqlite_date_parts(tree)
    # `main.t` is SQLite's name for the file's own tables; elsewhere it is just `t`.
    if target != "sqlite":
        for table in tree.find_all(exp.Table):
            if table.db.lower() == "main" and not table.catalog:
                table.set("db", None)


_DATE_PART_FUNCS = {exp.Year: "%Y", exp.Month: "%m", exp.Day: "%d"}
_EXTRACT_FORMATS = {"YEAR": "%Y", "MONTH": "%m", "DAY": "%d", "HOUR": "%H", "MINUTE": "%M", "SECOND": "%S"}


def _sqlite_date_parts(tree: exp.Expr) -> None:
    """YEAR(x), MONTH(x), DAY(x) and EXTRACT(part FROM x) do not exist in SQLite (a common model error that would
    fail the whole answer): written as the same number with strftime, `CAST(STRFTIME('%Y', x) AS INTEGER)`."""
    for node in list(tree.find_all(exp.Year, exp.Month, exp.Day, exp.Extract)):
        if isinstance(node, exp.Extract):
            fmt, arg = _EXTRACT_FORMATS.get(node.this.name.upper()), node.expression
        else:
            fmt, arg = _DATE_PART_FUNCS[type(node)], node.this
        if fmt is None or arg is None:
            continue
        call = exp.Anonymous(this="STRFTIME", expressions=[exp.Literal.string(fmt), arg.copy()])
        node.replace(exp.cast(call, "INTEGER"))


def _visible_ctes(table: exp.Table) -> set[str]:
    """CTE names in scope at `table`; anything else with that name is a real table."""
    names: set[str] = set()
    child, parent = table, table.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = parent.expressions
            idx = next((i for i, c in enumerate(ctes) if c is child), None)
            # A non-recursive CTE sees only the ones before it; in PostgreSQL its own name means the real table.
            seen = ctes if parent.args.get("recursive") else ctes[: idx or 0]
            names.update(c.alias.lower() for c in seen)
        elif isinstance(parent, exp.Query):
            with_ = parent.args.get("with_")
            if with_ is not None and with_ is not child:
                names.update(c.alias.lower() for c in with_.expressions)
        child, parent = parent, parent.parent
    return names


def _function_name(node: exp.Func) -> str:
    return node.name if isinstance(node, exp.Anonymous) else node.sql_name()


_CALL_NAME = re.compile(r"\s*([A-Za-z_][\w.]*)\s*\(")


def _function_names(node: exp.Func, dialect: str) -> list[str]:
    """Every name a call goes by, lowercased: sqlglot's own for a known function (CURRENT_VERSION) and how SQLite and
    the target write it (sqlite_version, version), so a deny-listed name cannot hide behind sqlglot's canonical one."""
    names = [_function_name(node).lower()]
    if isinstance(node, exp.Anonymous):
        return names
    # The call with placeholder arguments: how it is written, without rendering (maybe large) argument subtrees.
    args = {
        k: exp.var("x") if isinstance(v, exp.Expr) else [exp.var("x") for _ in v] if isinstance(v, list) else v
        for k, v in node.args.items()
    }
    for d in dict.fromkeys(("sqlite", dialect)):
        try:
            written = type(node)(**args).sql(dialect=d)
        except Exception:  # a generator that needs real arguments: render the call itself
            try:
                written = node.sql(dialect=d)
            except SqlglotError:
                continue
        m = _CALL_NAME.match(written)
        if m and m.group(1).lower() not in names:
            names.append(m.group(1).lower())
    return names


def _check_search(node: exp.Func, name: str) -> None:
    if isinstance(node, exp.Anonymous):
        needles = node.expressions[1:]
    else:
        needles = [node.args.get(k) for k in _NEEDLE_ARGS.get(type(node), ())]
    for needle in needles:
        if needle is None or isinstance(needle, exp.Null):
            continue
        if not (isinstance(needle, exp.Literal) and len(needle.name) <= _MAX_NEEDLE_CHARS):
            raise GuardError(
                "refused",
                f"{name}() needs the text it searches for as a literal of at most {_MAX_NEEDLE_CHARS} characters.",
            )


def _check_format(node: exp.Func, name: str) -> None:
    fmt = node.this if isinstance(node, exp.Format) else next(iter(node.expressions), None)
    if not (isinstance(fmt, exp.Literal) and fmt.is_string):
        raise GuardError("refused", f"{name}() needs a literal format string.")
    if _SLOW_FORMAT.search(fmt.name.replace("%%", "")):
        raise GuardError("refused", f"{name}() may not repeat a character by precision (%.Nc).")


def _is_role_keyword(column: exp.Column) -> bool:
    ident = column.this
    return (
        not column.table
        and isinstance(ident, exp.Identifier)
        and not ident.quoted
        and ident.name.lower() in _ROLE_KEYWORDS
    )


def _check(tree: exp.Expr, dialect: str, allowed: frozenset[str] | None, first_word: str) -> frozenset[str]:
    """Refuse what the guard does not run; return the real tables read."""
    # An allow-list at the root: whatever sqlglot does not know as a read query (Command, Alias, Pragma…) is refused.
    if not isinstance(tree, _READ_ROOTS):
        raise _refuse(_describe(tree) if isinstance(tree, _WRITE_NODES) else first_word or tree.key.upper())
    tables: set[str] = set()
    for node in tree.walk():
        if isinstance(node, _WRITE_NODES):
            raise _refuse(_describe(node))
        if isinstance(node, exp.In) and isinstance(node.args.get("field"), exp.Column):
            # SQLite's `x IN tablename` reads a table that sqlglot sees as a column: the allow-list would never see
            # it, and its error text would say which tables exist. Refused without naming anything.
            raise GuardError("refused", "`IN` takes a list or a subquery here: write `x IN (SELECT col FROM t)`.")
        if isinstance(node, exp.Func):
            names = _function_names(node, dialect)
            denied = next((n for n in names if is_denied_function(n)), None)
            if denied:
                raise GuardError("refused", f"The function {denied.rsplit('.', 1)[-1]}() is not allowed.")
            formats = [n for n in names if n in _FORMAT_FUNCTIONS]
            if formats:
                _check_format(node, formats[0])
            if type(node) in _NEEDLE_ARGS or (isinstance(node, exp.Anonymous) and names[0] in _SEARCH_FUNCTIONS):
                _check_search(node, names[1] if len(names) > 1 else names[0])  # as SQLite writes it
        if isinstance(node, exp.DataType) and node.sql(dialect=dialect).lower().startswith("reg"):
            # 'name'::regclass looks the name up in the catalog: its error says whether such a table exists.
            raise GuardError("refused", "Casts to catalog reference types (regclass, regtype, …) are not allowed.")
        if dialect == "postgres" and isinstance(node, exp.Column) and _is_role_keyword(node):
            raise GuardError(
                "refused",
                f"In PostgreSQL {node.name} is the database role, not a column: quote a column of that name "
                f'("{node.name}").',
            )
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            name = _table_name(node, dialect)
            if name:
                tables.add(name)
    if allowed is not None:
        unknown = sorted(t for t in tables if t not in allowed)
        if unknown:
            # The same words whether the table exists or not: a restricted key learns nothing about other tables.
            raise GuardError(
                "refused",
                f"The query reads tables this API key cannot use (or that do not exist): {', '.join(unknown)}.",
            )
    return frozenset(tables)


def _table_name(table: exp.Table, dialect: str) -> str:
    """The name `tables` reports; "" for a CTE reference."""
    name, schema, catalog = table.name.lower(), table.db.lower(), table.catalog.lower()
    if not schema and not catalog and name in _visible_ctes(table):
        return ""
    if schema in _SYSTEM_SCHEMAS or name.startswith(_SYSTEM_PREFIXES) or name in _SYSTEM_TABLES:
        shown = f"{schema}.{name}" if schema else name
        raise GuardError(
            "refused", f"System catalogs cannot be queried: found {shown}. The schema page lists the tables."
        )
    if catalog:
        return f"{catalog}.{schema}.{name}"
    if schema and schema != _DEFAULT_SCHEMAS[dialect]:
        return f"{schema}.{name}"
    return name


def _literal_int(node: exp.Expr | None) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and re.fullmatch(r"\d+", node.name):
        return int(node.name)
    return None


def _limit_value(node: exp.Expr | None) -> int | None:
    """The row count of a LIMIT or FETCH FIRST when it is a plain non-negative integer (SQLite: -1 = no limit)."""
    if isinstance(node, exp.Limit):
        return _literal_int(node.expression)
    if isinstance(node, exp.Fetch):
        options = node.args.get("limit_options")
        if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
            return None
        return _literal_int(node.args.get("count"))
    return None


def _apply_limit(tree: exp.Expr, row_limit: int) -> tuple[exp.Expr, int, bool]:
    """Bound the outermost query: add LIMIT, tighten a larger or non-literal one, keep a smaller one."""
    if isinstance(tree, exp.Subquery):
        # A bare parenthesized query is not a statement in SQLite: unwrap it, or select from it if it has modifiers.
        if all(v is None for k, v in tree.args.items() if k != "this"):
            return _apply_limit(tree.this, row_limit)
        tree = exp.select("*").from_(tree.as_("q"))
    current = tree.args.get("limit")
    value = _limit_value(current)
    if value is not None and value <= row_limit:
        return tree, value, False
    if isinstance(current, exp.Limit):
        current.set("expression", exp.Literal.number(row_limit))  # keeps an OFFSET that lives on the node
    else:
        tree.set("limit", exp.Limit(expression=exp.Literal.number(row_limit)))
    return tree, row_limit, True


def guard_sql(
    sql: str,
    dialect: str = "sqlite",
    row_limit: int = 200,
    source_dialect: str = "sqlite",
    allowed_tables: Collection[str] | None = None,
) -> GuardedSQL:
    """Check `sql` (written in `source_dialect`) and return it bounded and transpiled to `dialect`.

    Raises GuardError("syntax_error") when it does not parse and GuardError("refused") when it is not one read query
    on allowed tables. `allowed_tables` entries are matched case-insensitively, as `name` or `schema.name`.
    """
    if row_limit < 1:
        raise ValueError("row_limit must be at least 1")
    target, source = _dialect(dialect), _dialect(source_dialect)
    if not sql or not sql.strip():
        raise GuardError("syntax_error", "The query is empty: there is no SQL statement to run.")
    if "\x00" in sql:  # SQLite refuses it; libpq would cut the text there and run what comes before
        raise GuardError("syntax_error", "The SQL contains a NUL character (\\0); remove it.")
    if len(sql) > MAX_SQL_CHARS:
        raise GuardError("refused", f"The query is too long ({len(sql)} characters; at most {MAX_SQL_CHARS}).")
    allowed = None if allowed_tables is None else frozenset(t.lower() for t in allowed_tables)

    try:
        return _guard(sql, target, source, row_limit, allowed, dialect)
    except RecursionError:  # parsing passed, but checking or writing the tree recursed past Python's limit
        raise GuardError(
            "refused", "The SQL is nested too deeply to check; write it with fewer nested levels."
        ) from None


def _guard(
    sql: str, target: str, source: str, row_limit: int, allowed: frozenset[str] | None, dialect: str
) -> GuardedSQL:
    tree = _parse(sql, source)
    nodes = sum(1 for _ in tree.walk())  # iterative (breadth-first): safe on any depth
    if nodes > MAX_SQL_NODES:
        raise GuardError(
            "refused",
            f"The query is too large to check ({nodes} parts; at most {MAX_SQL_NODES}): use fewer values in lists "
            "and fewer columns or conditions.",
        )
    if source == "sqlite":
        _normalize_sqlite(tree, target)
    _check(tree, target, allowed, _leading_word(sql))
    tree, limit, capped = _apply_limit(tree, row_limit)
    try:
        # Comments are dropped: they are noise to the user and a place to smuggle text past a reader.
        out = tree.sql(dialect=target, comments=False, unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as e:
        raise GuardError("refused", f"The query cannot be translated to {dialect}: {e}") from None

    # Defence in depth: the text that will run must itself pass, and keep its LIMIT.
    try:
        final = _parse(out, target)
        tables = _check(final, target, allowed, _leading_word(out))
    except GuardError:
        raise GuardError("refused", f"The query could not be translated safely to {dialect}.") from None
    if _limit_value(final.args.get("limit")) != limit:
        raise GuardError("refused", f"The query could not be translated safely to {dialect}.")
    return GuardedSQL(sql=out, tables=tables, limit=limit, capped=capped, allowed=allowed)
