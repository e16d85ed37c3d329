"""The business-suite specialize measurement's own parts: the suite goes into a fresh application database as
verified pairs with the demo glossary, and two folds' held-out answers combine into one comparison that counts every
question once and says which answers changed."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.knowledge.store import KnowledgeStore, database_key
from bench.experiments.specialize_suite import combine, markdown, store_pairs
from models.scenarios import load_suite


def test_the_suite_is_stored_as_verified_pairs_with_the_glossary(tmp_path):
    url, db = f"sqlite:///{tmp_path / 'app.sqlite'}", f"sqlite:///{tmp_path / 'demo.sqlite'}"
    assert store_pairs(url, db) == len(load_suite()) == 100
    store = KnowledgeStore(sa.create_engine(url))
    pairs = store.examples(database_key(db))
    assert {p["question"] for p in pairs} == {c.question for c in load_suite()}
    assert any(e.name == "revenue" for e in store.glossary(database_key(db)))


def _fold(d, answers: dict[str, tuple[bool, bool]]) -> None:
    (d / "eval").mkdir(parents=True)
    for i, name in enumerate(("current", "candidate")):
        rows = [{"question": q, "ok": oks[i], "lenient": oks[i]} for q, oks in answers.items()]
        (d / "eval" / f"{name}_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_two_folds_combine_into_one_comparison(tmp_path):
    _fold(tmp_path / "a", {"q1": (True, True), "q2": (False, True), "q3": (True, False)})
    _fold(tmp_path / "b", {"q4": (False, False), "q5": (False, True)})
    total = combine([tmp_path / "a", tmp_path / "b"])
    assert total == {"n": 5, "current_ex": 40.0, "current_ex_lenient": 40.0, "candidate_ex": 60.0,
                     "candidate_ex_lenient": 60.0, "gained": 2, "lost": 1}  # fmt: skip
    run = {"run_id": "fold-a", "pairs": {"train": 3, "heldout": 2}, "train": {"step": 4, "wall_s": 9.5},
           "evaluation": {"current": {"heldout_ex": 40.0}, "candidate": {"heldout_ex": 60.0}}, "verdict": "better",
           "started_from": "a fresh LoRA (top 4 layers)", "export": "patched"}  # fmt: skip
    md = markdown({"base": "b", "machine": "m", "combined": total, "runs": [run]})
    assert "| fold-a | 3 | 2 | 4 | 10 |" in md and "got 2 right that the served one missed and missed 1" in md
