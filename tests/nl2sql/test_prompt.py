"""The one prompt builder: training (models.data) and serving (the schema catalog of the service) produce the
same text for the same database and question."""

import pytest

from app.db.catalog import SchemaCatalog
from app.nl2sql.prompt import build_prompt, build_target, format_schema, normalize_sql
from app.sql.executor import Executor
from models.base import load_tokenizer
from models.data import SPIDER_DIR, Pair, encode, schema_text, sqlite_path

DB_ROOT = SPIDER_DIR / "database"


@pytest.mark.slow  # reads the base model's tokenizer from its GGUF (~20-40 s)
def test_training_and_serving_prompts_are_identical():
    pair = Pair("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer")
    executor = Executor(f"sqlite:///{sqlite_path(DB_ROOT, pair.db_id)}")
    serving_prompt = build_prompt(format_schema(SchemaCatalog(executor.engine).schema), pair.question)

    tok = load_tokenizer()
    row = encode(tok, pair, DB_ROOT)
    training_prompt = tok.decode(row["ids"][: row["start"]])
    assert training_prompt == serving_prompt
    assert tok.decode(row["ids"][row["start"] :]) == build_target(pair.sql)


def test_schema_text_is_compact_with_keys():
    text = schema_text(str(DB_ROOT), "concert_singer")
    assert "singer(Singer_ID int PK, Name, Country" in text
    assert "Stadium_ID text -> stadium.Stadium_ID" not in text  # text type is implicit
    assert "Stadium_ID -> stadium.Stadium_ID" in text
    assert text.count("\n") == 3  # one line per table


def test_normalize_sql_collapses_whitespace_and_semicolon():
    assert normalize_sql("SELECT  a\n FROM   t ;") == "SELECT a FROM t"
    assert build_target("SELECT 1;") == "SELECT 1<|im_end|>"


def test_names_that_need_quoting_are_written_quoted():
    from app.db.schema import Column, ForeignKey, Table
    from app.nl2sql.prompt import format_table, sql_name

    assert sql_name("customers") == "customers"
    assert sql_name("Order Details") == '"Order Details"'
    assert sql_name("group") == '"group"'
    assert sql_name('odd"name') == '"odd""name"'
    t = Table(
        "Order Details",
        (Column("OrderID", "int", True), Column("Unit Price", "num")),
        (ForeignKey("OrderID", "Orders Archive", "ID"),),
    )
    assert format_table(t) == '"Order Details"(OrderID int PK -> "Orders Archive".ID, "Unit Price" num)'


@pytest.mark.slow  # the same GGUF tokenizer
def test_packed_sequence_writes_the_schema_once_and_marks_every_sql_turn():
    from app.nl2sql.prompt import build_followup
    from models.data import pack, target_spans

    tok = load_tokenizer()
    pairs = [
        Pair("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer"),
        Pair("concert_singer", "List all stadium names.", "SELECT name FROM stadium"),
        Pair("concert_singer", "How many concerts are there?", "SELECT count(*) FROM concert"),
    ]
    rows = pack(tok, pairs, DB_ROOT, max_len=4096, seed=0)
    assert len(rows) == 1
    row = rows[0]
    text = tok.decode(row["ids"])
    assert text.count("singer(Singer_ID") == 1 and text.count("Question:") == 3
    targets = sorted(tok.decode(row["ids"][s:e]) for s, e in target_spans(row))
    assert targets == sorted(build_target(p.sql) for p in pairs)
    # the first turn is exactly the serving prompt; later turns are follow-ups without the schema
    first_q = text.split("Question: ")[1].split("<|im_end|>")[0]
    first = next(p for p in pairs if p.question == first_q)
    assert text.startswith(build_prompt(schema_text(str(DB_ROOT), "concert_singer"), first.question))
    assert build_followup("List all stadium names.") in text or build_followup("How many singers do we have?") in text
    # a short length limit splits the database's questions over sequences, each starting with the schema
    short = pack(tok, pairs, DB_ROOT, max_len=len(row["ids"]) - 10, seed=0)
    assert len(short) == 2 and all(tok.decode(r["ids"]).count("singer(Singer_ID") == 1 for r in short)
    assert sum(len(r["spans"]) for r in short) == 3


@pytest.mark.slow  # the same GGUF tokenizer
def test_packing_never_puts_two_questions_with_the_same_sql_in_one_sequence():
    """Spider asks most queries twice; a twin earlier in the sequence teaches copying instead of reading."""
    from models.data import pack, sql_key

    tok = load_tokenizer()
    pairs = [
        Pair("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer"),
        Pair("concert_singer", "What is the total number of singers?", "select COUNT(*)  from singer;"),
        Pair("concert_singer", "List all stadium names.", "SELECT name FROM stadium"),
        Pair("concert_singer", "What are the names of the stadiums?", "SELECT Name FROM stadium"),
        Pair("concert_singer", "How many concerts are there?", "SELECT count(*) FROM concert"),
    ]
    assert sql_key(pairs[0].sql) == sql_key(pairs[1].sql)
    for seed in range(5):
        rows = pack(tok, pairs, DB_ROOT, max_len=4096, seed=seed)
        assert sum(len(r["spans"]) for r in rows) == 5
        for r in rows:
            labels = [sql_key(tok.decode(r["ids"][s:e]).removesuffix("<|im_end|>")) for s, e in r["spans"]]
            assert len(labels) == len(set(labels))
        # spread apart, twins land in two sequences, not five
        assert len(rows) == 2


@pytest.mark.slow  # the same GGUF tokenizer
def test_packing_caps_turns_per_sequence():
    from models.data import pack

    tok = load_tokenizer()
    pairs = [Pair("concert_singer", f"Question number {i}?", f"SELECT {i} FROM singer") for i in range(12)]
    rows = pack(tok, pairs, DB_ROOT, max_len=4096, seed=0, max_turns=3)
    assert sum(len(r["spans"]) for r in rows) == 12
    assert all(1 <= len(r["spans"]) <= 3 for r in rows) and len(rows) >= 4
