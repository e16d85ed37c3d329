"""The load generator's sustained rate leaves out the drain at the end of a closed loop."""

from bench.http_sweep import sustained_req_s


def _answer(sent: float, done: float, http: int = 200) -> dict:
    return {"http": http, "sent_s": sent, "done_s": done}


def test_sustained_rate_counts_answers_until_the_last_request_was_sent() -> None:
    # two clients: four answers by t=4 s, when the last request goes out; its answer (and one more) drain after
    results = [_answer(0, 1), _answer(0, 2), _answer(1, 3), _answer(2, 4), _answer(3, 9), _answer(4, 10)]
    assert sustained_req_s(results, 2) == 1.0  # 4 answers in 4 s, not 6 in 10 s
    failed = [*results[:3], _answer(2, 4, http=503), *results[4:]]
    assert sustained_req_s(failed, 2) == 0.75  # errors are not answers


def test_no_sustained_rate_without_a_drain_to_leave_out() -> None:
    assert sustained_req_s([_answer(0, 1), _answer(1, 2)], 1) is None  # one client: the plain rate says it all
    assert sustained_req_s([_answer(0, 1), _answer(0, 2)], 2) is None  # every request sent at once
