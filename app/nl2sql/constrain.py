"""Schema-constrained decoding: the identifiers the model writes must be names of the schema it was shown.

Most wrong answers of the small model name a column or a table that does not exist (503 of 826 failures on Spider
dev-972). While a row decodes, a small SQL lexer follows its text. A token is refused when it would finish an
identifier that is none of: a table or column of the schema, an alias the query defines, an SQL keyword or function;
or when it starts a word that no such name begins with. The next most likely token is taken instead. String
literals, numbers, quoted identifiers and aliases being defined (`AS x`, `FROM t x`, `WITH x AS`) are free, and a
short word followed by `.` may be an alias defined later (`SELECT c.name FROM customers c`).

The check is lazy: the model's own choice is tried first, so a row that writes valid names pays one check per token.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from app.db.schema import Schema


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KEYWORDS = _words(
    """
    select from where group by order having limit offset join inner left right full outer cross natural on using as
    and or not in is null like glob regexp between exists case when then else end distinct all union intersect except
    asc desc with recursive cast collate nocase escape true false over partition rows range preceding following
    unbounded current row filter nulls first last window integer int real text numeric float double decimal varchar
    char boolean date time timestamp interval year month day hour minute second some any values
    """
)
FUNCTIONS = _words(
    """
    count sum avg min max total abs round length lower upper substr substring trim ltrim rtrim replace instr coalesce
    ifnull nullif iif strftime date datetime julianday time unixepoch printf format group_concat string_agg typeof
    random hex quote char unicode sign ceil ceiling floor sqrt power pow exp ln log log10 log2 mod row_number rank
    dense_rank ntile lag lead first_value last_value nth_value percent_rank cume_dist extract concat concat_ws
    current_date current_timestamp current_time cast greatest least median
    """
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}
_QUOTED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])""")
_CLAUSE_AFTER_FROM = _words("where group order having limit union intersect except on")
SHORT_ALIAS = 3  # a word this short followed by `.` may be an alias that the query defines further on


def _ident_char(c: str) -> bool:
    return c.isalnum() or c == "_"


@dataclass(frozen=True, eq=False)
class SchemaNames:
    """The names a query on one schema may use (lower case), and a sorted list of every allowed word for prefix tests.

    Names that need quoting (spaces, punctuation) are not listed: the model may still write them inside quotes.
    """

    tables: frozenset[str]
    columns: dict[str, frozenset[str]]  # table -> its columns
    quoted: tuple[str, ...] = ()  # names that need quoting ("Order Details"), as the schema spells them
    all_columns: frozenset[str] = field(init=False)
    words: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        all_columns = frozenset().union(*self.columns.values()) if self.columns else frozenset()
        object.__setattr__(self, "all_columns", all_columns)
        object.__setattr__(self, "words", tuple(sorted(KEYWORDS | FUNCTIONS | self.tables | all_columns)))
        object.__setattr__(self, "_scoped", {})  # frozenset of tables -> (their columns, sorted allowed words)
        # the quoted names written bare, compiled once: every answer on the schema is checked with it
        bare = "|".join(re.escape(n) for n in self.quoted)
        object.__setattr__(
            self, "_bare", re.compile(r"(?<![\w\"'`\[])(" + bare + r")(?![\w\"'`\]])", re.IGNORECASE) if bare else None
        )

    @classmethod
    def of(cls, tables: Iterable[tuple[str, Iterable[str]]]) -> SchemaNames:
        """From (table, its column names) pairs."""
        tables = [(table, list(columns)) for table, columns in tables]
        cols = {table.lower(): frozenset(c.lower() for c in columns if _NAME.fullmatch(c)) for table, columns in tables}
        odd = {n for table, columns in tables for n in (table, *columns) if not _NAME.fullmatch(n)}
        return cls(frozenset(t for t in cols if _NAME.fullmatch(t)), cols, tuple(sorted(odd, key=lambda n: -len(n))))

    @classmethod
    def from_schema(cls, schema: Schema) -> SchemaNames:
        return cls.of((t.name, (c.name for c in t.columns)) for t in schema.tables)

    def quote_bare(self, sql: str) -> str:
        """`sql` with the names that need quoting quoted where they were written bare (`JOIN Order Details od` →
        `JOIN "Order Details" od`): the models know such names but write them without their quotes, and the
        lexer cannot steer a name back to an opening quote it never wrote. Text inside quotes is left alone."""
        bare = self._bare
        if bare is None:
            return sql
        spelled = {n.lower(): n for n in self.quoted}

        def quote(m: re.Match) -> str:
            return '"' + spelled[m.group(1).lower()].replace('"', '""') + '"'

        parts = _QUOTED.split(sql)  # odd indexes: literals and quoted identifiers, kept as written
        return "".join(p if i % 2 else bare.sub(quote, p) for i, p in enumerate(parts))

    def has_prefix(self, prefix: str, words: tuple[str, ...] | None = None) -> bool:
        words = self.words if words is None else words
        i = bisect.bisect_left(words, prefix)
        return i < len(words) and words[i].startswith(prefix)

    def scope(self, tables: frozenset[str]) -> tuple[frozenset[str], tuple[str, ...]]:
        """The columns of `tables`, and every word allowed where only those tables are in scope."""
        hit = self._scoped.get(tables)
        if hit is None:
            cols = frozenset().union(*(self.columns.get(t, frozenset()) for t in tables))
            hit = self._scoped[tables] = (cols, tuple(sorted(KEYWORDS | FUNCTIONS | self.tables | cols)))
        return hit

    def columns_of(self, table: str | None) -> frozenset[str]:
        return self.columns.get(table, self.all_columns) if table else self.all_columns


@dataclass(frozen=True)
class _Level:
    """One query (or parenthesis) depth. Before its FROM, what the query has used that FROM must then provide."""

    scoped: bool = False  # its FROM has named tables: unqualified columns must be theirs from here on
    subquery: bool = False  # opened by `(SELECT`, not by a function call or a grouping parenthesis
    forward: tuple[tuple[str, frozenset[str]], ...] = ()  # alias not yet defined -> the columns used through it
    bare: frozenset[str] = frozenset()  # unqualified columns used before FROM
    sources: int = 0  # tables named in its FROM clause so far

    def with_forward(self, alias: str, column: str) -> _Level:
        fwd = dict(self.forward)
        fwd[alias] = fwd.get(alias, frozenset()) | {column}
        return replace(self, forward=tuple(fwd.items()))


@dataclass
class _State:
    """Where the lexer stands in the text so far. Copied before each tentative token, so kept small."""

    quote: str = ""  # the closing character while inside a literal or quoted identifier
    number: bool = False
    word: str = ""  # the identifier being written
    qualifier: str | None = None  # `x` when the word follows `x.`
    last: str = ""  # the last word (lower case) or punctuation character, whitespace skipped
    dot_after: str | None = None  # a word directly followed by `.`: the qualifier of the next word
    table: str | None = None  # the table just named, while an alias may follow it
    aliases: dict[str, str | None] = field(default_factory=dict)  # alias -> its table (None: unknown)
    taken: bool = False  # the word being written was already refused and taken anyway: not judged again
    # Scope, per parenthesis depth. Once a query's FROM has named tables, an unqualified column must belong to one of
    # the tables named so far and `x.` must be an alias already defined.
    levels: tuple[_Level, ...] = (_Level(),)
    in_from: bool = False  # inside a FROM clause, where `, name` names another table
    sources: frozenset[str] = frozenset()  # tables named after FROM / JOIN / a FROM comma
    open_source: bool = False  # a subquery or CTE was named as a source: its columns are unknown, so no scoping

    def copy(self) -> _State:
        return _State(
            self.quote,
            self.number,
            self.word,
            self.qualifier,
            self.last,
            self.dot_after,
            self.table,
            self.aliases,  # shared until an alias is defined (copied then)
            self.taken,
            self.levels,
            self.in_from,
            self.sources,
            self.open_source,
        )


class IdentifierConstraint:
    """Per decoding row: `allows(token)` says whether the token keeps the SQL's names valid, `advance` takes it."""

    def __init__(self, names: SchemaNames, token_text: Sequence[str], free_tokens: Iterable[int] = ()):
        self.names, self.token_text = names, token_text
        self.free = frozenset(free_tokens)  # stop tokens: always allowed
        self.state = _State()
        self.refused = 0  # tokens taken although refused, for lack of an allowed one

    def allows(self, token: int) -> bool:
        return token in self.free or self._feed(self.state.copy(), self.token_text[token]) is not None

    def allows_instead(self, token: int) -> bool:
        """Whether `token` may replace a refused one: allowed, and not a stop token (see engine.pick_token)."""
        return token not in self.free and self.allows(token)

    def advance(self, token: int) -> None:
        if token in self.free:
            return
        state = self._feed(self.state.copy(), self.token_text[token])
        if state is None:
            # Taken although refused (nothing allowed was in reach): lex it unchecked, and do not judge the word it
            # leaves unfinished again, or every token after it would be refused too.
            self.refused += 1
            state = self._feed(self.state.copy(), self.token_text[token], check=False)
            state.taken = bool(state.word)
        self.state = state

    # -- the lexer ------------------------------------------------------------------------------------------------

    def _feed(self, s: _State, text: str, check: bool = True) -> _State | None:
        for c in text:
            if s.quote:
                if c == s.quote:
                    s.quote, s.last = "", "literal"
                continue
            if s.number:
                if _ident_char(c) or c == ".":
                    continue
                s.number, s.last = False, "literal"
            if _ident_char(c) and (s.word or not c.isdigit()):
                if not s.word:
                    s.qualifier, s.dot_after = s.dot_after, None
                s.word += c
                continue
            if s.word:
                if not self._complete(s, c) and check and not s.taken:
                    return None
                s.taken = False
            elif c.isdigit():
                s.number, s.dot_after = True, None
                continue
            if c == "." or (c.isspace() and s.dot_after):
                continue  # `dot_after` was set by the word just completed, if any (`T1. name` happens too)
            s.dot_after = None
            if c.isspace():
                continue
            if c in _QUOTES or c == "(":
                # a quoted table or a subquery as a source: columns the lexer cannot know
                s.open_source = s.open_source or self._source_position(s)
            if c in _QUOTES:
                s.quote = _QUOTES[c]
            elif c == "(":
                s.levels, s.in_from = s.levels + (replace(s.levels[-1], subquery=False),), False
            elif c == ")":
                s.levels, s.in_from = self._close(s.levels), False
            s.last, s.table = c, None
        if check and s.word and not s.taken and not self._prefix_ok(s):
            return None
        return s

    def _alias_position(self, s: _State) -> bool:
        return s.last == "as" or s.last == "with" or (s.table is not None and s.last == s.table)

    def _prefix_ok(self, s: _State) -> bool:
        w = s.word.lower()
        if s.qualifier is not None:
            columns = self._columns_of(s, s.qualifier)
            return columns is None or any(col.startswith(w) for col in columns)
        if self._alias_position(s):
            return True
        if self._source_position(s):  # only a table (or a CTE) can follow FROM / JOIN
            return any(t.startswith(w) for t in self.names.tables) or any(a.startswith(w) for a in s.aliases)
        if len(w) <= SHORT_ALIAS:
            return True
        words = self.names.scope(s.sources)[1] if self._in_scope(s) else None
        return self.names.has_prefix(w, words) or any(a.startswith(w) for a in s.aliases)

    @staticmethod
    def _source_position(s: _State) -> bool:
        """Where the next word names a table (or a CTE) to select from."""
        return s.last in ("from", "join") or (s.last == "," and s.in_from)

    def _in_scope(self, s: _State) -> bool:
        """Whether unqualified columns here must come from the tables named so far."""
        return s.levels[-1].scoped and not s.open_source

    @staticmethod
    def _close(levels: tuple[_Level, ...]) -> tuple[_Level, ...]:
        """`)`: a subquery's level ends; what a function call's or a grouping's level learned goes back to its query."""
        if len(levels) < 2:
            return (_Level(),)
        top, parent = levels[-1], levels[-2]
        if not top.subquery:
            parent = replace(parent, forward=top.forward, bare=top.bare)
        return (*levels[:-2], parent)

    def _fits_forward(self, level: _Level, table: str) -> bool:
        """Whether `table`, named as the next source of `level`, can provide what the query used before its FROM.

        Spider-style aliases T1, T2, ... are bound in FROM order, so the k-th table must have the columns used
        through Tk. Other aliases (c, o, ...) give no order, and a table may come with an alias the SELECT list never
        used (`FROM categories c JOIN products p JOIN order_items oi`), so no table is refused for them: refused, the
        row wrote `... JOIN products` and stopped. Unqualified columns alone: the first table must have at least one
        (the others may come from a join)."""
        columns = self.names.columns.get(table, frozenset())
        if level.forward:
            fwd = dict(level.forward)
            if all(re.fullmatch(r"t\d+", a) for a in fwd):
                need = fwd.get(f"t{level.sources + 1}")
                return need is None or need <= columns
            return True
        if level.bare and level.sources == 0:
            return bool(level.bare & columns)
        return True

    def _columns_of(self, s: _State, qualifier: str) -> frozenset[str] | None:
        """The columns `qualifier.` may name: its table's; any table's for an alias the query has yet to define;
        None (anything) for an alias of a subquery or a CTE, whose columns the lexer does not follow."""
        if qualifier in s.aliases:
            table = s.aliases[qualifier]
            return self.names.columns.get(table) if table is not None else None
        return self.names.columns.get(qualifier, self.names.all_columns)

    def _complete(self, s: _State, terminator: str) -> bool:
        """The word in `s` ends at `terminator`: is it a valid name here? Updates the context either way."""
        w, qualifier = s.word.lower(), s.qualifier
        s.word, s.qualifier = "", None
        s.dot_after = w if terminator == "." else None
        names = self.names
        in_scope = self._in_scope(s)
        level = s.levels[-1]
        if qualifier is not None:
            columns = self._columns_of(s, qualifier)
            ok = columns is None or w in columns
            if qualifier not in s.aliases and qualifier not in names.tables:  # an alias FROM has yet to define
                s.levels = (*s.levels[:-1], level.with_forward(qualifier, w))
        elif w in KEYWORDS and not self._source_position(s):
            ok = True
        elif self._alias_position(s):
            # never refused: any word may start here, so a refused alias came back glued to what followed it
            # (`AS T1JOIN`, `AS pWHERE`); the table that defines it was judged where FROM named it
            s.aliases = dict(s.aliases) | {w: s.table if s.last != "with" else None}
            fwd = tuple((a, cols) for a, cols in level.forward if a != w)
            s.levels = (*s.levels[:-1], replace(level, forward=fwd))
            ok = True
        elif self._source_position(s):
            ok = (w in names.tables and self._fits_forward(level, w)) or w in s.aliases  # an alias here is a CTE
            if w in names.tables:
                s.sources |= {w}
                s.levels = (*s.levels[:-1], replace(level, sources=level.sources + 1))
            else:
                s.open_source = True
        else:
            columns = names.scope(s.sources)[0] if in_scope else names.all_columns
            # before its FROM, a query may use an alias that it defines further on (`SELECT c.name FROM t c`)
            forward = terminator == "." and not in_scope and (len(w) <= SHORT_ALIAS or re.fullmatch(r"t\d+", w))
            table = w in names.tables and terminator == "."  # outside FROM a table name only qualifies a column
            ok = table or w in columns or w in FUNCTIONS or w in s.aliases or bool(forward)
            if not in_scope and w in names.all_columns and w not in s.aliases and w not in FUNCTIONS:
                s.levels = (*s.levels[:-1], replace(level, bare=level.bare | {w}))
        if w == "select":  # a new query at this depth (a subquery, or after UNION): its FROM is still to come
            s.levels = (*s.levels[:-1], _Level(subquery=s.last == "(" or s.levels[-1].subquery))
            s.in_from = False
        elif w == "from":
            s.levels, s.in_from = (*s.levels[:-1], replace(s.levels[-1], scoped=True)), True
        elif w in _CLAUSE_AFTER_FROM:
            s.in_from = False
        previous_table = s.table
        s.table = w if (w in names.tables and qualifier is None) else (previous_table if w == "as" else None)
        s.last = w
        return ok


def pick_allowed(order: Iterable[int], allows: Callable[[int], bool]) -> int | None:
    """The first token of `order` (most likely first) that `allows` accepts, or None."""
    return next((t for t in order if allows(t)), None)


def token_texts(tokenizer) -> list[str]:
    """The text of every token id on its own (a byte-level fragment of a character decodes to U+FFFD)."""
    return tokenizer.decode_batch([[i] for i in range(tokenizer.get_vocab_size())], skip_special_tokens=False)
