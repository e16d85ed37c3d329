"""The prompt every question shares (instructions, schema, glossary) is read into the model's prefix cache when the
server starts and after a hot swap, so the first question reads only its own tokens; `/readyz` says how far that
got. Real app, real model, the demo database."""

from __future__ import annotations

import pytest
from tests_support import MODEL_DIR, app_client, auth_headers, with_key

from app.auth.keys import KeyStore
from app.nl2sql.service import _piece_ends

pytestmark = pytest.mark.slow
QUESTION = "How many customers are there?"


def test_pieces_end_where_the_tokenizer_splits_and_cover_the_text(generator):
    text = "".join(f"t{i}(id int PK, name, price num)\n" + ("\n" if i % 7 == 0 else "") for i in range(100))
    ends = _piece_ends(text, 800)
    assert ends[-1] == len(text) and ends == sorted(set(ends))
    assert all(text[e] == " " for e in ends[:-1])  # before a space
    assert all(800 <= b - a <= 820 for a, b in zip([0, *ends[:-2]], ends[:-1], strict=True))
    assert 200 <= ends[-1] - ends[-2] <= 1020  # a short rest joins the last piece
    assert _piece_ends("x" * 3000, 800)[:2] == [800, 1600]  # nowhere to split: by characters
    assert _piece_ends("short", 800) == [5] and _piece_ends("", 800) == []
    # each piece's tokens begin the next piece's, so the cache keeps one entry that grows
    ids = [generator.tokenizer.encode(text[:e], add_special_tokens=False).ids for e in ends]
    assert all(b[: len(a)] == a for a, b in zip(ids[:-1], ids[1:], strict=True))


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "whole-batches"])
async def test_first_question_finds_the_shared_prompt_cached(settings_for, demo_db, generator, continuous):
    generator.prefix_cache.clear()
    settings = settings_for(f"sqlite:///{demo_db}", continuous_batching=continuous, exec_guided_candidates=0)
    async with app_client(settings, generator) as client:
        service = client.app.state.service
        await service.warmed()
        assert (await client.get("/readyz")).json()["prompt_warm_up"] == "done"
        stats = service.batcher.stats  # the warm-up is nobody's request: batch sizes, times, Retry-After are users'
        assert stats.requests == stats.batches == stats.timed_out == 0 and stats.mean_batch_s is None
        start = service.prompter.shared_start(generator)
        assert service.prompt_for(QUESTION).startswith(start)
        hits, saved = generator.prefix_cache.hits, generator.prefix_cache.tokens_saved
        r = await client.post("/query", json={"question": QUESTION})
        assert r.status_code == 200, r.text
        assert generator.prefix_cache.hits == hits + 1
        # everything up to the question was read before it was asked (a token or two at the seam may differ)
        assert generator.prefix_cache.tokens_saved - saved >= generator.count_tokens(start) - 3


async def test_off_leaves_the_cache_empty_until_a_question(settings_for, demo_db, generator):
    generator.prefix_cache.clear()
    async with app_client(settings_for(f"sqlite:///{demo_db}", warm_prompt_prefix=False), generator) as client:
        await client.app.state.service.warmed()
        assert (await client.get("/readyz")).json()["prompt_warm_up"] == "off"
        assert len(generator.prefix_cache) == 0


async def test_a_swapped_in_model_is_warmed_too(settings_for, demo_db, generator, tmp_path):
    other = MODEL_DIR.parent / ("int8" if MODEL_DIR.name != "int8" else "fp32")
    settings, _ = with_key(settings_for(f"sqlite:///{demo_db}", model_exports_dir=MODEL_DIR.parent), "analyst")
    admin = KeyStore(settings.api_keys_file).create("ops", admin=True).key
    async with app_client(settings, generator) as client:
        service = client.app.state.service
        await service.warmed()
        r = await client.post("/api/model/load", json={"path": str(other)}, headers=auth_headers(admin))
        assert r.status_code == 200, r.text
        assert service.generator is not generator
        await service.warmed()
        assert (await client.get("/readyz")).json()["prompt_warm_up"] == "done"
        assert len(service.generator.prefix_cache) == 1  # read before any question reached the new model


async def test_a_question_asked_during_the_warm_up_says_so(client, monkeypatch):
    import app.nl2sql.service as service_module

    stages: list[str] = []
    monkeypatch.setattr(service_module, "report", lambda stage, *a: stages.append(stage))
    service = client.app.state.service
    service.warm_up = "running"  # as while the shared prompt is being read
    assert (await client.post("/query", json={"question": QUESTION})).status_code == 200
    service.warm_up = "done"
    assert (await client.post("/query", json={"question": QUESTION})).status_code == 200
    assert stages[0] == "warming" and "writing" in stages[1:] and "warming" not in stages[1:]
