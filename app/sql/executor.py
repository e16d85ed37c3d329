"""The read-only executor: run one guarded query on the user's database, with a time limit and a row cap.

The guard is one layer; the connection is the other, so a query that slipped past the guard still cannot write.
SQLite: the file is opened `mode=ro`, with `PRAGMA query_only`, and while a query runs an authorizer allows only
reads and a progress handler stops it at the deadline. PostgreSQL: each query runs in its own `READ ONLY` transaction
with a `SET LOCAL statement_timeout`, always rolled back; both settings are transaction-scoped, so they stay correct
behind a transaction-pooling proxy. Give the executor a role with SELECT grants only, too.

Size bound: an answer carries at most `MAX_RESULT_BYTES` of values. Rows are fetched in growing batches and the query
stops with an error once its values pass the budget, so `SELECT repeat(…)` or a `zeroblob` cannot fill the service's
memory or the browser. SQLite also caps every single value, read or built (`SQLITE_MAX_VALUE_BYTES`), and its heap
(`PRAGMA hard_heap_limit`): a function call is one VM step that the progress handler cannot interrupt, so without a
cap `s || s` or `instr`/`replace` on values near SQLite's 1 GB default run for minutes past any deadline. On
PostgreSQL each FETCH gets only the time left, so fetching in batches never stretches the statement timeout.

Truncation rule: the guard's LIMIT (`GuardedSQL.limit`) is what the user sees and what runs. `truncated` is True when
the service's cap, not the user's own LIMIT, may have cut the result: the executor saw more than `row_limit` rows
(it fetches `row_limit + 1`; exact), or the guard added or tightened the LIMIT and exactly `limit` rows came back
(conservative: a result of exactly `limit` rows is reported as truncated; the UI says "first N rows").
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, unquote
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import event

from app.core.cancel import CancelToken
from app.sql.guard import GuardedSQL, is_denied_function

CATEGORIES = (
    "timeout", "unknown_table", "unknown_column", "syntax_error", "execution_error", "db_unavailable", "cancelled"
)  # fmt: skip
CANCELLED = "The request was cancelled (the client went away) before the query finished."

# Short hex is readable; a whole image in a table cell is not.
_MAX_HEX_BYTES = 32
# VM instructions between deadline checks: frequent enough to stop within milliseconds, rare enough to cost ~nothing.
_PROGRESS_STEPS = 1000
_PING_TIMEOUT_MS = 2000
# The readiness probe's own connections: slow user queries holding every pooled connection must not make it wait.
_PROBE_POOL = {"pool_size": 1, "max_overflow": 1, "pool_timeout": _PING_TIMEOUT_MS / 1000}
# All the values of one answer together (text and bytes; other values count 8): far above any useful table of
# 200 rows, far below what would hurt the service or a browser.
MAX_RESULT_BYTES = 16 * 1024 * 1024
# SQLite: the largest value a query may read or build. String searches (instr, replace, trim) cost up to the product
# of their inputs in one uninterruptible call: ~0.5 s at this size, ~15 s at 1 MB (the guard also keeps search texts
# short). The price: a larger stored value cannot be selected either.
SQLITE_MAX_VALUE_BYTES = 256 * 1024
# SQLite's heap, process-wide (SQLite has one): a row of 2,000 columns of maximal values must fail, not swap.
_SQLITE_HEAP_LIMIT = 256 * 1024 * 1024
# Rows per fetch, growing by this factor from 1: the first oversized row stops the query before many more arrive.
_FETCH_GROWTH = 4

_SQLITE_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})

_PG_STATES = {
    "57014": "timeout",  # query_canceled (statement_timeout)
    "42P01": "unknown_table",  # undefined_table
    "3F000": "unknown_table",  # invalid_schema_name
    "42703": "unknown_column",  # undefined_column
    "42601": "syntax_error",
}
# Connection exceptions, server shutdown, missing database, bad login, out of connections.
_PG_UNAVAILABLE_PREFIXES = ("08", "57P", "3D", "28", "53")

_SQLITE_MESSAGES = (
    ("interrupted", "timeout"),
    ("no such table", "unknown_table"),
    ("no such column", "unknown_column"),
    ("syntax error", "syntax_error"),
    ("incomplete input", "syntax_error"),
    ("unrecognized token", "syntax_error"),
    ("unable to open database", "db_unavailable"),
    ("database is locked", "db_unavailable"),
    ("disk i/o error", "db_unavailable"),
    ("file is not a database", "db_unavailable"),
)


# How SQLite words "this is not a read": the authorizer, `mode=ro` and `query_only`.
_WRITE_REFUSALS = ("not authorized", "authorization denied", "prohibited", "readonly database", "query_only")


class ExecutionError(Exception):
    """A query that failed to run; `category` is one of CATEGORIES, `message` is safe to show (no URL, no trace)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category
        self.message = message


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list]  # JSON-friendly values only (see `json_value`)
    row_count: int
    truncated: bool
    execute_ms: float


def json_value(value: object) -> object:
    """A value JSON can carry: NaN/Infinity become None (strict JSON has no such numbers)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.hex() if len(data) <= _MAX_HEX_BYTES else f"<{len(data)} bytes>"
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def _driver_error(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def categorize(exc: BaseException) -> str:
    """The error category of an exception from running SQL (SQLAlchemy-wrapped or raw driver errors)."""
    category = getattr(exc, "category", None)
    if isinstance(category, str):
        return category  # ExecutionError, GuardError
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return "db_unavailable"
    if isinstance(exc, sa.exc.TimeoutError | ConnectionError):  # pool exhausted, socket errors
        return "db_unavailable"
    if isinstance(exc, TimeoutError):
        return "timeout"
    orig = _driver_error(exc)
    state = getattr(orig, "sqlstate", None)
    if state:
        if state in _PG_STATES:
            return _PG_STATES[state]
        if state.startswith(_PG_UNAVAILABLE_PREFIXES):
            return "db_unavailable"
        return "execution_error"
    text = str(orig).lower()
    for needle, name in _SQLITE_MESSAGES:
        if needle in text:
            return name
    # psycopg raises OperationalError without a SQLSTATE when it cannot connect at all.
    if type(orig).__module__.startswith("psycopg") and type(orig).__name__ == "OperationalError":
        return "db_unavailable"
    return "execution_error"


def _message(exc: BaseException | None, category: str, timeout_s: float) -> str:
    if category == "timeout":
        return f"The query took longer than {timeout_s:g} s and was stopped."
    if category == "db_unavailable":
        # Driver text here names hosts, ports and users: keep it in the server log, not in the answer.
        return "The database is not reachable right now."
    orig = _driver_error(exc)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        hint = getattr(diag, "message_hint", None)
        return f"{primary} ({hint})" if hint else primary
    if isinstance(orig, MemoryError):  # SQLite's hard heap limit
        return "The query needs more memory than the service allows; select fewer or smaller values."
    lines = str(orig).strip().splitlines()
    text = lines[0] if lines else type(orig).__name__
    if "too big" in text.lower():  # SQLITE_LIMIT_LENGTH
        return f"A value is too large for the service (at most {SQLITE_MAX_VALUE_BYTES // 1024} KB): {text}."
    if any(k in text.lower() for k in _WRITE_REFUSALS):
        return f"Only reading data is allowed; the database refused the query ({text})."
    return text


def _reveals_a_table(exc: BaseException, category: str) -> bool:
    """An error that says whether some table exists: unknown, refused by the allow-list authorizer, or not granted."""
    orig = _driver_error(exc)
    return category == "unknown_table" or "prohibited" in str(orig) or getattr(orig, "sqlstate", None) == "42501"


def _sqlite_path(url: sa.URL) -> Path:
    database = url.database or ""
    if url.query.get("mode") == "memory" or database in ("", ":memory:") or database.startswith("file::memory:"):
        raise ValueError("An in-memory SQLite database cannot be the user's database: give the path of a file.")
    if database.startswith("file:"):
        database = unquote(database[len("file:") :].split("?", 1)[0])
        if database.startswith("//"):  # file://host/path: SQLite accepts only an empty host or localhost
            database = "/" + database[2:].split("/", 1)[-1]
    path = Path(database).expanduser().resolve()
    if not path.is_file():
        raise ExecutionError("db_unavailable", f"The SQLite database file {path} does not exist.")
    return path


# For a key with an allow-list, one answer for a table that is forbidden and one that does not exist (and a role
# without the grant): the key learns nothing about the tables it cannot use.
NOT_ALLOWED = "The query reads a table this API key cannot use (or that does not exist)."

# Read-only table-valued functions: SQLite reports their columns as reads of a "table" of that name.
_TABLE_FUNCTIONS = frozenset({"json_each", "json_tree"})
# The first use of an eponymous virtual table (json_each, json_tree) on a connection registers it in the schema:
# SQLite authorizes that as an update of these sqlite_master columns, in this order, then a read of its ROWID.
_VTAB_INIT = tuple(
    (sqlite3.SQLITE_UPDATE, "sqlite_master", col) for col in ("type", "name", "tbl_name", "rootpage", "sql")
) + ((sqlite3.SQLITE_READ, "sqlite_master", "ROWID"),)


class _SqliteAuthorizer:
    """Allow reads only, while one user query is prepared; a third line of defence after the guard and `mode=ro`.

    With an allow-list (`allowed`), every table read must be on it: SQLite names the table of every column it reads,
    so a form the guard did not recognise as a table read is still refused. The one write it lets through is the
    catalog registration a read-only table-valued function triggers (`_VTAB_INIT`): only inside a SELECT, only in
    that exact sequence, nothing else on sqlite_master.
    """

    def __init__(self, allowed: frozenset[str] | None = None) -> None:
        self.allowed = allowed
        self._in_select = False
        self._vtab_step = 0  # how far into `_VTAB_INIT` the callbacks so far have come

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT:
            self._in_select = True
        if self._vtab_init_step(action, arg1, arg2, db, trigger):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if arg2 and is_denied_function(arg2) else sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and arg1:
            table = arg1.lower()
            if table.startswith("sqlite_"):
                return sqlite3.SQLITE_DENY  # the catalog, as in the guard
            restricted = self.allowed is not None and table not in _TABLE_FUNCTIONS
            if restricted and not {table, f"{db}.{table}".lower()} & self.allowed:
                return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK if action in _SQLITE_READ_ACTIONS else sqlite3.SQLITE_DENY

    def _vtab_init_step(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None):
        expected = _VTAB_INIT[self._vtab_step]
        if not self._in_select or trigger is not None or db != "main" or (action, arg1, arg2) != expected:
            self._vtab_step = 0
            return False
        self._vtab_step = (self._vtab_step + 1) % len(_VTAB_INIT)
        return True


def _in_thread(fn: Callable[[], object]) -> None:
    """Run `fn` in a thread of its own: a PostgreSQL cancel request opens a connection, and the token may be
    cancelled from the event loop."""
    threading.Thread(target=fn, daemon=True, name="cancel-query").start()


def _value_size(value: object) -> int:
    """Bytes a fetched value holds, roughly: its length for text and bytes, 8 for a number or a date."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, list | tuple):
        return 8 + sum(_value_size(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(_value_size(k) + _value_size(v) for k, v in value.items())
    return 8


def _too_large() -> ExecutionError:
    return ExecutionError(
        "execution_error",
        f"The result is too large to return (over {MAX_RESULT_BYTES // 2**20} MB of values): "
        "select fewer or narrower columns, or fewer rows.",
    )


class Executor:
    """Runs guarded queries on the user's database (SQLite file or PostgreSQL), read-only."""

    def __init__(self, url: str, timeout_s: float = 5.0, row_limit: int = 200) -> None:
        if timeout_s <= 0 or row_limit < 1:
            raise ValueError("timeout_s must be positive and row_limit at least 1")
        self.timeout_s = timeout_s
        self.row_limit = row_limit
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise ValueError("The database URL is not valid.") from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            path = _sqlite_path(parsed)
            self._dialect, self._display = "sqlite", str(path)
            self._engine = self._sqlite_engine(path)
            self._probe_engine = sa.create_engine(self._engine.url, **_PROBE_POOL)
        elif backend in ("postgresql", "postgres"):
            self._dialect, self._display = "postgresql", parsed.render_as_string(hide_password=True)
            self._engine = self._postgres_engine(parsed)
            self._probe_engine = self._postgres_engine(parsed, **_PROBE_POOL)
        else:
            raise ValueError(f"Unsupported database {backend!r}: use a SQLite file or PostgreSQL.")

    def _sqlite_engine(self, path: Path) -> sa.Engine:
        url = sa.URL.create("sqlite+pysqlite", database="file:" + quote(str(path)), query={"mode": "ro", "uri": "true"})
        # sqlite3's busy timeout: a writer holding the lock must not stall a query past its deadline.
        engine = sa.create_engine(url, connect_args={"timeout": self.timeout_s})

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.execute("PRAGMA query_only = ON")
            # Functions with side effects may not run from inside views or triggers of an untrusted file.
            dbapi_conn.execute("PRAGMA trusted_schema = OFF")
            dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_MAX_VALUE_BYTES)
            # Process-wide, and it only ever lowers the limit: many maximal values in one row fail instead.
            dbapi_conn.execute(f"PRAGMA hard_heap_limit = {_SQLITE_HEAP_LIMIT}")

        return engine

    def _postgres_engine(self, url: sa.URL, **pool: float) -> sa.Engine:
        return sa.create_engine(
            url.set(drivername="postgresql+psycopg"),
            pool_pre_ping=True,
            **pool,
            connect_args={
                "connect_timeout": max(2, math.ceil(self.timeout_s)),  # libpq's minimum is 2 s
                # Server-side prepared statements break behind PgBouncer in transaction mode; we never reuse them.
                "prepare_threshold": None,
            },
        )

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def engine(self) -> sa.Engine:
        """The read-only engine (e.g. for schema introspection)."""
        return self._engine

    def __repr__(self) -> str:
        return f"Executor({self._display!r}, timeout_s={self.timeout_s}, row_limit={self.row_limit})"

    def dispose(self) -> None:
        self._engine.dispose()
        self._probe_engine.dispose()

    def run(self, guarded: GuardedSQL, cancel: CancelToken | None = None) -> QueryResult:
        """Run `guarded.sql`; raise ExecutionError with a category and a clean message on failure.

        `cancel`: set from another thread when nobody waits for the answer any more; the query stops at once and
        ExecutionError("cancelled") is raised."""
        cancel = cancel or CancelToken()
        if cancel.cancelled:
            raise ExecutionError("cancelled", CANCELLED)
        start = time.perf_counter()
        try:
            conn = self._engine.connect()
        except Exception as e:  # any failure to connect means the same thing to the user
            raise ExecutionError("db_unavailable", _message(e, "db_unavailable", self.timeout_s)) from None
        try:
            with conn:
                if self._dialect == "sqlite":
                    columns, raw_rows = self._run_sqlite(conn, guarded.sql, start, guarded.allowed, cancel)
                else:
                    columns, raw_rows = self._run_postgres(conn, guarded.sql, start, cancel)
        except ExecutionError:
            raise
        except Exception as e:  # mapped to a category; the traceback stays out of the answer
            if cancel.cancelled:
                raise ExecutionError("cancelled", CANCELLED) from None
            category = categorize(e)
            if guarded.allowed is not None and _reveals_a_table(e, category):  # name no table
                raise ExecutionError("refused", NOT_ALLOWED) from None
            raise ExecutionError(category, _message(e, category, self.timeout_s)) from None
        elapsed_ms = (time.perf_counter() - start) * 1000
        over_cap = len(raw_rows) > self.row_limit
        rows = [[json_value(v) for v in row] for row in raw_rows[: self.row_limit]]
        truncated = over_cap or (guarded.capped and len(rows) == guarded.limit)
        return QueryResult(columns, rows, len(rows), truncated, round(elapsed_ms, 3))

    def _run_sqlite(
        self, conn: sa.Connection, sql: str, start: float, allowed: frozenset[str] | None, cancel: CancelToken
    ) -> tuple[list[str], list]:
        raw: sqlite3.Connection = conn.connection.driver_connection
        deadline = start + self.timeout_s
        raw.set_progress_handler(
            lambda: 1 if cancel.cancelled or time.perf_counter() > deadline else 0, _PROGRESS_STEPS
        )
        raw.set_authorizer(_SqliteAuthorizer(allowed))
        try:
            result = conn.execution_options(no_parameters=True).exec_driver_sql(sql)
            columns = list(result.keys())
            rows = self._fetch_bounded(result.fetchmany)
            result.close()
        finally:
            raw.set_progress_handler(None, 0)
            raw.set_authorizer(None)
        return columns, rows

    def _run_postgres(self, conn: sa.Connection, sql: str, start: float, cancel: CancelToken) -> tuple[list[str], list]:
        deadline = start + self.timeout_s
        raw = conn.connection.driver_connection

        finished = threading.Event()

        def interrupt() -> None:
            # The server ignores a cancel request that arrives between two statements (SET LOCAL, DECLARE, FETCH):
            # repeat it until this query's work is over.
            while not finished.is_set():
                with contextlib.suppress(Exception):
                    raw.cancel_safe(timeout=_PING_TIMEOUT_MS / 1000)
                finished.wait(0.1)

        def until_deadline() -> None:
            if cancel.cancelled:
                raise ExecutionError("cancelled", CANCELLED)
            # Each DECLARE and FETCH is a statement with its own timeout: give each only the time that is left.
            left_ms = int((deadline - time.perf_counter()) * 1000)
            if left_ms < 1:
                raise ExecutionError("timeout", _message(None, "timeout", self.timeout_s))
            raw.execute(f"SET LOCAL statement_timeout = {left_ms}")

        def fetch(n: int) -> list:
            until_deadline()
            return cursor.fetchmany(n)

        try:
            # SET TRANSACTION must be the first statement of the transaction SQLAlchemy begins here.
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            # A server-side cursor: rows come only as they are fetched (a query without a LIMIT cannot pull a whole
            # table into this process), and DECLARE … CURSOR accepts only SELECT/VALUES (anything else fails as a
            # syntax error before running). No parameters: the SQL is sent as it is, `%` included.
            # A cancel request to the server stops the statement running for a client that went away.
            with cancel.on_cancel(lambda: _in_thread(interrupt)), raw.cursor(name="querywise") as cursor:
                until_deadline()
                cursor.execute(sql)
                columns = [c.name for c in cursor.description or ()]
                rows = self._fetch_bounded(fetch)
        finally:
            finished.set()
            # Never commit; a failed rollback (connection gone) must not hide the error that got us here.
            with contextlib.suppress(Exception):
                conn.rollback()
        return columns, rows

    def _fetch_bounded(self, fetch: Callable[[int], Sequence]) -> list:
        """Up to `row_limit + 1` rows in growing batches; ExecutionError once their values pass MAX_RESULT_BYTES."""
        rows: list = []
        size, batch = 0, 1
        while len(rows) <= self.row_limit:
            want = min(batch, self.row_limit + 1 - len(rows))
            chunk = fetch(want)
            size += sum(_value_size(v) for row in chunk for v in row)
            if size > MAX_RESULT_BYTES:
                raise _too_large()
            rows.extend(chunk)
            if len(chunk) < want:
                break
            batch *= _FETCH_GROWTH
        return rows

    def ping(self) -> bool:
        """True when the database answers `SELECT 1` within a short time."""
        try:
            with self._probe_engine.connect() as conn:
                if self._dialect == "postgresql":
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {_PING_TIMEOUT_MS}")
                conn.exec_driver_sql("SELECT 1").scalar()
                conn.rollback()
            return True
        except Exception:  # a health check answers yes or no
            return False
