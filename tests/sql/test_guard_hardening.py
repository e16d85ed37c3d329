"""Guard rules added after the adversarial suite (tests/security) found the gaps: each case is one such gap.

The rules: printf/format need a literal format without a %c precision; string searches need a short literal search
text; NUL characters are refused; server identity (version, role, addresses, sqlite_* functions) is refused like the
catalogs, also when sqlglot knows the function under another name; unquoted role keywords are not columns on PG.
"""

from __future__ import annotations

import pytest

from app.sql.guard import GuardError, guard_sql

PG = {"dialect": "postgres"}


@pytest.mark.parametrize(
    ("sql", "kwargs", "words"),
    [
        # SQLite pads `%.Nc` one character at a time even past its length limit: seconds no deadline interrupts.
        pytest.param("SELECT printf('%.*c', 2000000000, 'x')", {}, "precision", id="printf-star-precision-char"),
        pytest.param("SELECT printf('%5.900000000c', 'x')", {}, "precision", id="printf-literal-precision-char"),
        pytest.param("SELECT format('%-10.*c', 3, 'x')", {}, "precision", id="format-precision-char"),
        pytest.param("SELECT printf(name) FROM customers", {}, "literal format", id="printf-format-from-data"),
        pytest.param("SELECT printf('%' || '.*c', 9, 'x')", {}, "literal format", id="printf-computed-format"),
        # String searches cost |text| x |search text| in one uninterruptible call (SQLite and PostgreSQL alike).
        pytest.param("SELECT instr(name, email) FROM customers", {}, "instr", id="instr-column-needle"),
        pytest.param("SELECT instr(name, email) FROM customers", PG, "instr", id="instr-as-position-pg"),
        pytest.param("SELECT replace(name, email, '') FROM customers", {}, "replace", id="replace-column-pattern"),
        pytest.param("SELECT trim(name, email) FROM customers", {}, "trim", id="trim-column-charset"),
        pytest.param("SELECT ltrim(name, email) FROM customers", PG, "trim", id="ltrim-column-charset-pg"),
        pytest.param("SELECT btrim(name, email) FROM customers", PG, "btrim", id="btrim-column-charset"),
        pytest.param("SELECT split_part(name, email, 1) FROM customers", PG, "split_part", id="split-part-column"),
        pytest.param("SELECT translate(name, email, 'x') FROM customers", PG, "translate", id="translate-column"),
        pytest.param("SELECT strpos(name, 'a' || 'b') FROM customers", PG, "literal", id="strpos-computed-needle"),
        pytest.param("SELECT instr(name, '" + "a" * 65 + "') FROM customers", {}, "64", id="needle-too-long"),
        # Server identity, refused like the catalogs.
        pytest.param("SELECT version()", PG, "version", id="version"),
        pytest.param("SELECT sqlite_version()", {}, "sqlite_version", id="sqlite-version"),
        pytest.param("SELECT sqlite_version()", PG, "sqlite_version", id="sqlite-version-transpiled-to-version"),
        pytest.param("SELECT sqlite_source_id()", {}, "sqlite_source_id", id="sqlite-source-id"),
        pytest.param("SELECT sqlite_compileoption_get(0)", {}, "sqlite_compileoption_get", id="compile-options"),
        pytest.param("SELECT current_user", PG, "current_user", id="current-user"),
        pytest.param("SELECT inet_server_addr(), inet_server_port()", PG, "inet_server", id="server-address"),
        pytest.param("SELECT user FROM customers", PG, "role", id="user-keyword-pg"),
        pytest.param("SELECT session_user", PG, "role", id="session-user-keyword-pg"),
    ],
)
def test_refused(sql: str, kwargs: dict, words: str) -> None:
    with pytest.raises(GuardError) as info:
        guard_sql(sql, **kwargs)
    assert info.value.category == "refused"
    assert words.lower() in info.value.message.lower()


@pytest.mark.parametrize("sql", ["SELECT 1\x00; DROP TABLE t", "SELECT 'a\x00b'", "SEL\x00ECT 1"])
def test_nul_character_refused(sql: str) -> None:
    # libpq sends text up to the first NUL: PostgreSQL would run only what comes before it.
    with pytest.raises(GuardError) as info:
        guard_sql(sql, dialect="postgres")
    assert info.value.category == "syntax_error" and "NUL" in info.value.message


@pytest.mark.parametrize(
    ("sql", "kwargs"),
    [
        pytest.param("SELECT printf('%.2f', 1.5), printf('%5s|%-5d', 'a', 3)", {}, id="printf-ordinary"),
        pytest.param("SELECT printf('%%.5c')", {}, id="printf-escaped-percent"),
        pytest.param("SELECT printf('%5c', 'x')", {}, id="printf-width-char"),
        pytest.param("SELECT instr(name, 'a'), replace(name, ' ', '_'), trim(name) FROM customers", {}, id="searches"),
        pytest.param("SELECT replace(name, 'a', city) FROM customers", {}, id="replacement-from-data"),
        pytest.param("SELECT rtrim(name, ' .'), ltrim(name) FROM customers", PG, id="trims-pg"),
        pytest.param("SELECT instr(name, NULL) FROM customers", {}, id="null-needle"),
        pytest.param('SELECT "user" FROM customers', PG, id="quoted-user-column"),
        pytest.param("SELECT c.user FROM customers AS c", PG, id="qualified-user-column"),
        pytest.param("SELECT user FROM customers", {}, id="user-column-sqlite"),
        pytest.param("SELECT current_timestamp, current_date", PG, id="current-time-keywords"),
    ],
)
def test_allowed(sql: str, kwargs: dict) -> None:
    assert guard_sql(sql, **kwargs).sql
