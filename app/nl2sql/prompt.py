"""The one prompt builder, shared by training (`models/`) and serving (`app/`).

The model must see at serving time exactly the text it was trained on, so every prompt in the project is made
here: a compact schema (`table(col int PK, col, col num -> other.col, …)`, text type implicit), the question, and the ChatML turns
that both bases (Qwen2.5-Coder and SmolLM2 Instruct) were tuned on. The SQL target is normalized the same way for training labels
and for few-shot examples.

Earlier question/SQL pairs of the same database may come first as turns of one conversation: the schema is written
in the first user turn only, each later turn is `Question: …` alone. Training packs several questions of one database
into one sequence in exactly this form (`models.data.pack`), so the service can supply verified examples the same way
(`build_conversation`, which also writes glossary lines under the schema).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.db.schema import Schema, Table

SYSTEM = "Answer with one SQLite query."
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class Example:
    """A question with its SQL, used as a few-shot turn for the base model."""

    schema_text: str
    question: str
    sql: str


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words a column or table may be called that SQL reads as syntax: written quoted, as the query must write them.
_RESERVED = frozenset(
    [
        "select",
        "from",
        "where",
        "group",
        "order",
        "by",
        "having",
        "limit",
        "join",
        "on",
        "as",
        "and",
        "or",
        "not",
        "in",
        "is",
        "null",
        "case",
        "when",
        "then",
        "else",
        "end",
        "union",
        "all",
        "distinct",
        "table",
        "index",
        "values",
        "between",
        "like",
        "exists",
        "with",
    ]
)


def sql_name(name: str) -> str:
    """A table or column name as a query must write it: bare when it is a plain word, else double-quoted
    (`"Order Details"`, `"group"`), so the model copies a name that runs."""
    if _PLAIN_NAME.fullmatch(name) and name.lower() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A SQL string literal of `value`."""
    return "'" + value.replace("'", "''") + "'"


def format_table(table: Table) -> str:
    fk = {f.column: f"{sql_name(f.ref_table)}.{sql_name(f.ref_column)}" for f in table.foreign_keys}
    parts = []
    for c in table.columns:
        # text is the common case: leaving it implicit keeps prompts short (CPU cost is linear in tokens)
        item = sql_name(c.name) if c.type == "text" else f"{sql_name(c.name)} {c.type}"
        if c.primary_key:
            item += " PK"
        if c.name in fk:
            item += f" -> {fk[c.name]}"
        if c.values:  # written as the SQL that tests them, quoted as the data spells them
            item += " in (" + ", ".join(sql_string(v) for v in c.values) + ")"
        elif c.samples:
            item += " e.g. " + "|".join(c.samples)
        parts.append(item)
    return f"{sql_name(table.name)}({', '.join(parts)})"


def format_schema(schema: Schema, tables: Sequence[str] | None = None) -> str:
    """Serialize `schema` (or only `tables` of it) one table per line."""
    keep = None if tables is None else {t.lower() for t in tables}
    return "\n".join(format_table(t) for t in schema.tables if keep is None or t.name.lower() in keep)


def normalize_sql(sql: str) -> str:
    """One line, single spaces, no trailing semicolon: the form labels and answers take."""
    sql = re.sub(r"\s+", " ", sql).strip()
    return sql.rstrip(";").strip()


def _user_turn(schema_text: str, question: str) -> str:
    return f"{IM_START}user\n{schema_text}\n\nQuestion: {question.strip()}{IM_END}\n"


def build_prompt(schema_text: str, question: str, examples: Sequence[Example] = ()) -> str:
    """The text the model continues; its answer is the SQL followed by `<|im_end|>`."""
    text = f"{IM_START}system\n{SYSTEM}{IM_END}\n"
    for ex in examples:
        text += _user_turn(ex.schema_text, ex.question)
        text += f"{IM_START}assistant\n{normalize_sql(ex.sql)}{IM_END}\n"
    text += _user_turn(schema_text, question)
    return text + f"{IM_START}assistant\n"


def build_followup(question: str) -> str:
    """A later turn of a conversation about the same schema: closes the previous answer, asks the next question."""
    return f"\n{IM_START}user\nQuestion: {question.strip()}{IM_END}\n{IM_START}assistant\n"


def build_target(sql: str) -> str:
    """The training label that follows `build_prompt(...)`."""
    return normalize_sql(sql) + IM_END


def build_conversation(
    schema_text: str,
    question: str,
    earlier: Sequence[tuple[str, str]] = (),
    examples: Sequence[Example] = (),
    notes: str = "",
) -> str:
    """The prompt with business context: `notes` (glossary lines) under the schema in the first user turn, and
    `earlier` verified (question, SQL) pairs as turns before the question, exactly as `models.data.pack` trains:
    the first pair asks with the schema, later ones are `Question: …` alone, each answer is its SQL.

    Without notes and earlier turns this is `build_prompt(schema_text, question, examples)`, character for character.
    """
    if notes:
        schema_text = f"{schema_text}\n{notes}"
    if not earlier:
        return build_prompt(schema_text, question, examples)
    (first_q, first_sql), rest = earlier[0], earlier[1:]
    text = build_prompt(schema_text, first_q, examples) + build_target(first_sql)
    for q, sql in rest:
        text += build_followup(q) + build_target(sql)
    return text + build_followup(question)
