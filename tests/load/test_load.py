"""A bounded load run against the real server (`python -m app` on loopback): under saturation it sheds load fast
with 429/503 + Retry-After, never answers 500 or drops a connection, keeps its memory flat, and logs every answer.

The same code as `make load` (bench/load.py, its server from bench/server.py), smaller: 300 requests from 32
closed-loop clients that ignore Retry-After. The model decodes a few questions a second here, so most questions must
be shed, quickly.
"""

from dataclasses import replace

import pytest

from bench.load import LoadConfig, run_load, warm_up, workload
from bench.server import ServerProcess

pytestmark = pytest.mark.slow

RSS_GROWTH_LIMIT_MB = 150


async def test_saturated_server_sheds_fast_and_loses_nothing(tmp_path, demo_db):
    questions, sqls = workload()
    config = LoadConfig(requests=300, concurrency=32, duration_s=45, sql_share=0.2, tag=True)
    # Default settings but shorter answers, so that the decoding in flight when the run ends finishes soon.
    with ServerProcess(tmp_path, f"sqlite:///{demo_db}", MAX_NEW_TOKENS="48") as server:
        await warm_up(server.url, questions)
        rss_cold = server.rss_mb()
        # Saturated rounds grow the buffers to their working size (the widest batch, sampled candidates, the prefix
        # cache) in a step, in whichever round first meets that batch: one warm round does not always (CI once saw
        # 1657 -> 1657 over it, then +163 MB over the measured round). A leak grows in every round, so the check is
        # that one of two later rounds stays flat.
        warm_config = replace(config, requests=150, seed=1)
        await run_load(server.url, warm_config, questions, sqls)
        rss_start = server.rss_mb()
        rows_before = len(server.querylog_rows())
        result = await run_load(server.url, config, questions, sqls)
        rss_mid = server.rss_mb()
        rows = server.querylog_rows()[rows_before:]
        await run_load(server.url, replace(config, seed=2), questions, sqls)
        rss_end = server.rss_mb()
    s = result.summary()
    print(s, f"RSS {rss_cold} (cold) -> {rss_start} (warm) -> {rss_mid} -> {rss_end} MB")

    assert s["requests"] == 300
    assert s["http_500"] == 0 and s["unexpected_status"] == [], s
    assert s["connection_errors"] == 0 and s["client_timeouts"] == 0, s["errors"]
    assert s["shed_without_retry_after"] == 0
    # Saturated: questions were shed, and only by the queue's two bounds (no unbounded wait behind them): a full
    # queue sheds at once, and a question that waited `queue_max_wait_s` for its turn leaves. Nothing else says 503.
    assert s["status_counts"].get("503", 0) > 0 and s["by_endpoint"].get("query:200", 0) > 0, s
    shed = {k: n for k, n in s["refusals"].items() if k.startswith("503 ")}
    at_once = sum(n for k, n in shed.items() if "too many questions are waiting" in k)
    waited = sum(n for k, n in shed.items() if "waited too long for its turn" in k)
    assert at_once > 0 and at_once + waited == s["status_counts"]["503"], shed
    # SQL from the UI does not wait behind the model queue.
    assert s["by_endpoint"].get("sql:503", 0) == 0
    assert rss_start and rss_mid and rss_end, (rss_start, rss_mid, rss_end)
    assert min(rss_mid - rss_start, rss_end - rss_mid) < RSS_GROWTH_LIMIT_MB, (rss_start, rss_mid, rss_end)
    # Every 200 has its query-log row (the row is written before the answer leaves).
    logged = "\n".join(f"{r['question']} {r['sql']}" for r in rows)
    missing = [
        smp.tag for smp in result.answered_ok if f"ref {smp.tag})" not in logged and f"'{smp.tag}'" not in logged
    ]
    assert not missing, missing[:10]
    assert len(rows) == len(result.answered_ok)  # nothing else was logged in the measured round
