"""The torch generator is a `Generator` like the serving engine: on SmolLM2 + its adapter it writes what the ONNX
fp32 export writes (greedy, schema-constrained, seeded sampling: both pick tokens with `pick_token`), keeps a
constrained answer to the schema's names, repeats a seeded sample, and refuses step-wise decoding."""

import pytest
import sqlglot
from sqlglot import exp

from app.nl2sql.constrain import SchemaNames
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.extract import extract_sql
from app.nl2sql.generator import MAX_NEW_TOKENS, Generator, Sampling
from app.nl2sql.prompt import build_conversation, format_schema
from models.bases import SMOLLM2
from models.data import schema_at
from models.generators import TorchGenerator

pytestmark = pytest.mark.slow
ONNX_FP32 = SMOLLM2.onnx_dir / "fp32"
QUESTIONS = [
    "How many customers are there?",
    "Show the name of each customer with the number of orders they placed",
    "What is the total amount of all payments?",
]


@pytest.fixture(scope="module")
def torch_gen() -> TorchGenerator:
    return TorchGenerator(SMOLLM2.adapter_dir, base=SMOLLM2)


@pytest.fixture(scope="module")
def onnx_gen() -> OnnxGenerator:
    if not (ONNX_FP32 / "model.onnx").exists():
        pytest.fail(f"no SmolLM2 fp32 export at {ONNX_FP32}: make test builds it", pytrace=False)
    return OnnxGenerator(ONNX_FP32)


@pytest.fixture(scope="module")
def demo(demo_db):
    schema = schema_at(str(demo_db))
    prompts = [build_conversation(format_schema(schema), q, [], (), "") for q in QUESTIONS]
    return prompts, SchemaNames.from_schema(schema)


@pytest.mark.parametrize("mode", ["greedy", "constrained", "sampled"])
def test_torch_writes_what_the_onnx_fp32_export_writes(torch_gen, onnx_gen, demo, mode):
    prompts, names = demo
    sampling = {
        "greedy": None,
        "constrained": [Sampling(names=names)] * len(prompts),
        "sampled": [Sampling(temperature=0.7, seed=i) for i in range(len(prompts))],
    }[mode]
    ours = torch_gen.generate(prompts, 64, sampling)  # the answers end sooner; a sampled one may ramble
    served = onnx_gen.generate(prompts, 64, sampling)
    assert [(g.text, g.prompt_tokens, g.new_tokens) for g in ours] == [
        (g.text, g.prompt_tokens, g.new_tokens) for g in served
    ]
    assert all(g.model_id == "torch-fp32:querywise-sql" for g in ours)


def test_constrained_answer_names_only_the_schemas_tables_and_columns(torch_gen, demo):
    prompts, names = demo
    gens = torch_gen.generate(prompts, MAX_NEW_TOKENS, [Sampling(names=names)] * len(prompts))
    for g in gens:
        tree = sqlglot.parse_one(extract_sql(g.text), read="sqlite")
        tables = {t.name.lower() for t in tree.find_all(exp.Table)}
        columns = {c.name.lower() for c in tree.find_all(exp.Column)}
        aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
        assert tables and tables <= names.tables, g.text
        assert columns - aliases <= names.all_columns, g.text


def test_a_seeded_sample_repeats_and_other_seeds_vary(torch_gen, demo):
    prompts, _ = demo
    prompt = prompts[1]
    draw = lambda seeds: [  # noqa: E731
        g.text
        for g in torch_gen.generate([prompt] * len(seeds), 48, [Sampling(temperature=1.0, seed=s) for s in seeds])
    ]
    first = draw([1, 2, 3, 4])
    assert draw([1, 2, 3, 4]) == first
    assert len(set(first)) > 1


def test_it_is_a_generator_that_decodes_whole_batches_only(torch_gen, onnx_gen):
    assert isinstance(torch_gen, Generator) and torch_gen.fine_tuned and not torch_gen.stepwise
    assert torch_gen.model_dir == SMOLLM2.adapter_dir
    assert torch_gen.count_tokens("SELECT count(*) FROM customers") == onnx_gen.count_tokens(
        "SELECT count(*) FROM customers"
    )
    with pytest.raises(NotImplementedError, match="whole batches"):
        torch_gen.decode_batch()
    assert [g.new_tokens for g in torch_gen.generate(["SELECT"], 0)] == [0]


def test_base_dir_starts_from_other_weights_of_the_base(tmp_path):
    """A run trained from other weights (a sweep from the served model: its `base_dir`) is evaluated on those."""
    from tests_support import two_layer_base

    model, tok = two_layer_base()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    gen = TorchGenerator(None, 1, SMOLLM2, base_dir=tmp_path)
    assert gen.base_dir == tmp_path and len(gen.model.model.layers) == 2
    assert gen.generate(["SELECT"], 2)[0].new_tokens == 2
