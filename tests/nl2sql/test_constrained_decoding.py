"""Schema-constrained decoding with the real model: fewer names outside the schema, and batching still changes
nothing (the constraint is per row)."""

import pytest
import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from app.db.catalog import SchemaCatalog
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.engine import Sampling
from app.nl2sql.extract import extract_sql
from app.nl2sql.prompt import build_prompt, format_schema
from models.scenarios import load_suite

NEW_TOKENS = 64


@pytest.fixture(scope="module")
def demo(demo_db):
    catalog = SchemaCatalog(sa.create_engine(f"sqlite:///{demo_db}"))
    cases = load_suite()[1::5][:16]  # 16 questions across all six scenarios
    return catalog.schema, [build_prompt(format_schema(catalog.schema), c.question) for c in cases]


def unknown_names(sql: str, names: SchemaNames) -> int:
    """Tables and columns in `sql` (parsed by sqlglot, independently of the lexer) that the schema lacks."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return 0  # unparsable SQL fails for another reason; its names are not counted
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias, exp.TableAlias, exp.CTE) if a.alias}
    aliases |= {t.alias_or_name.lower() for t in tree.find_all(exp.Table)}
    bad = sum(t.name.lower() not in names.tables and t.name.lower() not in aliases for t in tree.find_all(exp.Table))
    return bad + sum(
        c.name.lower() not in names.all_columns and c.name.lower() not in aliases and c.name != "*"
        for c in tree.find_all(exp.Column)
    )


@pytest.mark.slow
def test_constrained_answers_name_fewer_things_the_schema_lacks(generator, demo):
    schema, prompts = demo
    names = SchemaNames.from_schema(schema)
    free = [extract_sql(g.text) for g in generator.generate(prompts, NEW_TOKENS)]
    constrained = generator.generate(prompts, NEW_TOKENS, [Sampling(names=names)] * len(prompts))
    constrained = [extract_sql(g.text) for g in constrained]
    before = sum(unknown_names(s, names) for s in free)
    after = sum(unknown_names(s, names) for s in constrained)
    print(f"unknown names: {before} unconstrained, {after} constrained, over {len(prompts)} questions")
    assert before > 0, "the unconstrained model named nothing unknown: the comparison says nothing"
    assert after < before


@pytest.mark.slow
def test_constrained_decoding_is_the_same_alone_and_in_a_batch(generator, demo):
    schema, prompts = demo
    prompts = prompts[:6]
    rows = [Sampling(names=SchemaNames.from_schema(schema))] * len(prompts)
    alone = [generator.generate([p], NEW_TOKENS, [s])[0].text for p, s in zip(prompts, rows, strict=True)]
    # mixed with unconstrained and sampled rows in one batch
    mixed = [*rows[:3], Sampling(), Sampling(temperature=0.7, seed=3), *rows[3:]]
    batch = generator.generate([*prompts[:3], prompts[0], prompts[1], *prompts[3:]], NEW_TOKENS, mixed)
    together = [g.text for i, g in enumerate(batch) if i not in (3, 4)]
    assert together == alone
