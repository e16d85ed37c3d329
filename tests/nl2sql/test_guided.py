"""Execution-guided decoding: the choice rule, and the service falling back to the greedy answer when no sampled
candidate runs (real model, real database)."""

import pytest

from app.nl2sql.guided import best_index, candidate_sampling, wants_candidates


def test_a_candidate_with_rows_beats_an_empty_one_and_greedy_wins_ties():
    assert best_index(["ok", "ok"]) == 0
    assert best_index(["error", "empty", "ok"]) == 2
    assert best_index(["empty", "error", "empty"]) == 0
    assert best_index(["refused", "error"]) == 0
    assert [wants_candidates(s) for s in ("ok", "empty", "error", "refused")] == [False, True, True, True]


def test_candidate_seeds_are_stable_per_prompt_and_distinct():
    a = candidate_sampling("prompt one", 4, 0.7)
    assert a == candidate_sampling("prompt one", 4, 0.7)
    assert len({s.seed for s in a}) == 4
    assert {s.seed for s in a} != {s.seed for s in candidate_sampling("prompt two", 4, 0.7)}
    assert all(s.temperature == 0.7 for s in a)


@pytest.mark.slow
async def test_no_candidate_runs_so_the_greedy_answer_stands(settings_for, demo_db, generator):
    from tests_support import app_client

    settings = settings_for(f"sqlite:///{demo_db}", auth_disabled=True, exec_guided_candidates=3, max_new_tokens=40)
    async with app_client(settings, generator) as client:
        service = client.app.state.service
        # A key allowed no real table: every SQL the model can write is refused by the guard.
        out = await service.ask("How many customers are there?", allowed_tables=["no_such_table"])
        assert out.status == "refused"
        assert out.candidates == 3
        assert service.metrics.exec_guided.labels("not_rescued")._value.get() == 1
        assert service.metrics.exec_guided.labels("rescued")._value.get() == 0


@pytest.mark.slow
async def test_candidates_are_not_drawn_when_greedy_runs_or_when_off(settings_for, demo_db, generator):
    from tests_support import app_client

    settings = settings_for(f"sqlite:///{demo_db}", auth_disabled=True, exec_guided_candidates=0, max_new_tokens=40)
    async with app_client(settings, generator) as client:
        service = client.app.state.service
        off = await service.ask("How many customers are there?", allowed_tables=["no_such_table"])
        assert off.status == "refused" and off.candidates is None
        r = (await client.post("/query", json={"question": "How many customers are there?"})).json()
        assert r["status"] == "ok" and r["candidates"] is None


@pytest.mark.slow
async def test_voting_decodes_candidates_with_the_greedy_answer_and_answers_the_majority(
    settings_for, demo_db, generator
):
    from tests_support import app_client

    from app.nl2sql.guided import result_key

    settings = settings_for(
        f"sqlite:///{demo_db}", auth_disabled=True, exec_guided_candidates=3, exec_guided_vote=True, max_new_tokens=40
    )
    async with app_client(settings, generator) as client:
        service = client.app.state.service
        ran: list = []
        execute = service._guard_and_execute

        async def recording(sql, t0, allowed_tables=None):
            out = await execute(sql, t0, allowed_tables)
            ran.append(out)
            return out

        service._guard_and_execute = recording
        out = await service.ask("How many customers are there in each region?")
        assert out.candidates == 3  # drawn although the greedy answer may well have run
        assert 1 <= len(ran) <= 4  # every distinct SQL ran once
        votes = service.metrics.exec_guided.labels("vote_kept")._value.get()
        votes += service.metrics.exec_guided.labels("vote_changed")._value.get()
        assert votes == 1
        assert any(out is r for r in ran)  # the answer is one of the runs
        if any(r.status == "ok" for r in ran):  # only answers that ran with rows vote
            assert out.status == "ok" and result_key(out.rows) in {result_key(r.rows) for r in ran}
        # the JSON API answers through the same path
        r = (await client.post("/query", json={"question": "How many orders are there?"})).json()
        assert r["status"] in {"ok", "empty", "error", "refused"} and r["candidates"] == 3


def test_rows_of_only_nulls_are_empty_not_ok():
    from app.nl2sql.guided import result_status

    assert result_status([]) == ("empty", "empty_result")
    assert result_status([(None,)]) == ("empty", "null_result")
    assert result_status([(None, None), (None, None)]) == ("empty", "null_result")
    assert result_status([(None, 0)]) == ("ok", "ok")
    assert result_status([("",)]) == ("ok", "ok")
    assert wants_candidates(result_status([(None,)])[0])  # an all-NULL answer draws candidates like an empty one


def test_voting_picks_the_result_most_answers_share_and_greedy_wins_ties():
    from app.nl2sql.guided import result_key, vote_index

    a, b = result_key([(1, "x"), (2, "y")]), result_key([(2, "y"), (1, "x")])
    assert a == b  # order ignored
    assert result_key([(0.1 + 0.2,)]) == result_key([(0.3,)])  # the same sum added in another order
    c = result_key([(3, "z")])
    assert vote_index(["ok"] * 3, [c, a, b]) == 1  # a (= b): two votes against one
    assert vote_index(["ok"] * 4, [c, a, b, c]) == 0  # two against two: the greedy answer's side
    # answers that failed or were empty never vote; with none that ran with rows, the usual ranking applies
    assert vote_index(["ok", "error", "error", "empty"], [c, None, None, a]) == 0
    assert vote_index(["error", "empty", "ok"], [None, a, c]) == 2
    assert vote_index(["error", "empty", "refused"], [None, a, None]) == 1
