"""The served base itself: the default base's int8 export (`make model`; Qwen2.5-Coder-1.5B) loads in the engine,
answers business questions on the demo database with SQL that runs, prompted as the service prompts it, stops at the
end of its turn, and keeps to the schema's names under schema-constrained decoding with Qwen's tokenizer. (The rest
of the suite runs on SmolLM2 for speed; the GGUF mapping check reads the 0.5B's GGUF, the smaller qwen2 file.)"""

import pytest
import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from app.db.catalog import SchemaCatalog
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.extract import extract_sql
from app.nl2sql.fewshot import EXAMPLES
from app.nl2sql.generator import MAX_NEW_TOKENS, Sampling
from app.nl2sql.prompt import build_prompt, format_schema
from app.sql.guard import guard_sql
from models.bases import DEFAULT_BASE, QWEN_CODER_05B, get_base
from models.export import read_manifest

pytestmark = pytest.mark.slow
SERVED = get_base(DEFAULT_BASE)
MODEL = SERVED.onnx_dir / "int8"
QUESTIONS = [
    "How many customers are there?",
    "List the names of all products.",
    "How many orders were placed in 2025?",
    "Which country has the most customers?",
]


@pytest.fixture(scope="module")
def qwen():
    if not (MODEL / "model.onnx").exists():
        pytest.fail(f"no Qwen export at {MODEL}: `make model` builds it (make test does)", pytrace=False)
    return OnnxGenerator(MODEL)


@pytest.fixture(scope="module")
def demo(demo_db):
    engine = sa.create_engine(f"sqlite:///{demo_db}")
    catalog = SchemaCatalog(engine)
    return engine, catalog


def test_export_is_the_int8_qwen_base(qwen):
    info = read_manifest(MODEL)
    assert info["base"] == SERVED.name and "int8" in info["quantization"]
    assert qwen.model_id.startswith(SERVED.name)
    assert (qwen.kv_heads, qwen.head_dim) == (2, 128)  # 12 query heads of 128 over 2 KV heads
    assert qwen.tokenizer.token_to_id("<|im_end|>") in qwen.stop_ids
    size = sum(f.stat().st_size for f in MODEL.iterdir() if f.name.startswith("model.onnx"))
    assert size < 2.2e9  # int8 weights and embeddings (fp32 is 7.1 GB)


def test_answers_run_on_the_demo_database_and_stop_at_the_turn_end(qwen, demo):
    engine, catalog = demo
    examples = () if qwen.fine_tuned else EXAMPLES  # as the service prompts an untuned base (few-shot)
    prompts = [build_prompt(format_schema(catalog.schema), q, examples) for q in QUESTIONS]
    names = SchemaNames.from_schema(catalog.schema)
    gens = qwen.generate(prompts, 96, [Sampling(names=names)] * len(prompts))
    ran = 0
    for q, g in zip(QUESTIONS, gens, strict=True):
        sql = extract_sql(g.text)
        assert g.new_tokens < 96, f"{q!r}: no end of turn within 96 tokens: {g.text!r}"
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(guard_sql(sql).sql).fetchall()
        ran += bool(rows)
    assert ran == len(QUESTIONS)
    count = extract_sql(gens[0].text).lower()
    assert "count" in count and "customers" in count


def test_constrained_decoding_keeps_qwen_to_the_schema(qwen, demo):
    _, catalog = demo
    names = SchemaNames.from_schema(catalog.schema)
    prompt = build_prompt(
        format_schema(catalog.schema),
        "Show the name of each customer with the number of orders they placed",
        () if qwen.fine_tuned else EXAMPLES,
    )
    text = qwen.generate([prompt], MAX_NEW_TOKENS, [Sampling(names=names)])[0].text
    tree = sqlglot.parse_one(extract_sql(text), read="sqlite")
    tables = {t.name.lower() for t in tree.find_all(exp.Table)}
    assert tables and tables <= names.tables


def test_gguf_mapping_for_llama_cpp_round_trips_the_qwen2_base():
    """bench.gguf_export writes our weights in llama.cpp's qwen2 layout (biases, untied output, NeoX RoPE: no
    interleaving): the converted base written back must equal the shipped GGUF's dequantized tensors."""
    from bench import gguf_export

    assert gguf_export.verify_base(QWEN_CODER_05B) == 0.0
