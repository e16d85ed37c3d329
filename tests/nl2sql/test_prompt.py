"""The one prompt builder: training (models.data) and serving (the schema catalog of the service) produce the
same text for the same database and question."""

from app.db.catalog import SchemaCatalog
from app.nl2sql.prompt import build_prompt, build_target, normalize_sql
from app.sql.executor import Executor
from models.base import load_tokenizer
from models.data import SPIDER_DIR, Pair, encode, schema_text, sqlite_path

DB_ROOT = SPIDER_DIR / "database"


def test_training_and_serving_prompts_are_identical():
    pair = Pair("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer")
    executor = Executor(f"sqlite:///{sqlite_path(DB_ROOT, pair.db_id)}")
    serving_prompt = build_prompt(SchemaCatalog(executor.engine).text, pair.question)

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
