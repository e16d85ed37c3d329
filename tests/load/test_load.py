"""A bounded load run against the real server (`python -m app` on loopback): under saturation it sheds load fast
with 429/503 + Retry-After, never answers 500 or drops a connection, keeps its memory flat, and logs every answer.

The same code as `make load` (bench/load.py), smaller: 300 requests from 32 closed-loop clients that ignore
Retry-After. The model decodes a few questions a second here, so most questions must be shed, quickly.
"""

from dataclasses import replace

import pytest

from app.core.config import Settings
from bench.load import LoadConfig, ServerProcess, run_load, warm_up, workload

pytestmark = pytest.mark.slow

RSS_GROWTH_LIMIT_MB = 150


async def test_saturated_server_sheds_fast_and_loses_nothing(tmp_path, demo_db):
    questions, sqls = workload()
    config = LoadConfig(requests=300, concurrency=32, duration_s=45, sql_share=0.2, tag=True)
    queue_wait_s = Settings().queue_max_wait_s
    # Default settings but shorter answers, so that the decoding in flight when the run ends finishes soon.
    with ServerProcess(tmp_path, f"sqlite:///{demo_db}", MAX_NEW_TOKENS="48") as server:
        await warm_up(server.url, questions)
        rss_cold = server.rss_mb()
        # A first saturated round grows the buffers to their working size (the widest batches, sampled candidates,
        # the prefix cache); growth after that, over a second round as large, would be a leak.
        warm_config = replace(config, requests=150, seed=1)
        await run_load(server.url, warm_config, questions, sqls)
        rss_start = server.rss_mb()
        rows_before = len(server.querylog_rows())
        result = await run_load(server.url, config, questions, sqls)
        rss_end = server.rss_mb()
        rows = server.querylog_rows()[rows_before:]
    s = result.summary()
    print(s, f"RSS {rss_cold} (cold) -> {rss_start} (warm) -> {rss_end} MB")

    assert s["requests"] == 300
    assert s["http_500"] == 0 and s["unexpected_status"] == [], s
    assert s["connection_errors"] == 0 and s["client_timeouts"] == 0, s["errors"]
    assert s["shed_without_retry_after"] == 0
    # Saturated: questions were shed, and the shed path is fast (no unbounded queue behind it).
    assert s["status_counts"].get("503", 0) > 0 and s["by_endpoint"].get("query:200", 0) > 0, s
    assert s["latency_ms"]["5xx"]["p50"] < 1000, s["latency_ms"]
    assert s["latency_ms"]["5xx"]["max"] < (queue_wait_s + 3) * 1000, s["latency_ms"]  # the queue-wait deadline
    # SQL from the UI does not wait behind the model queue.
    assert s["by_endpoint"].get("sql:503", 0) == 0
    assert rss_start and rss_end and rss_end - rss_start < RSS_GROWTH_LIMIT_MB, (rss_start, rss_end)
    # Every 200 has its query-log row (the row is written before the answer leaves).
    logged = "\n".join(f"{r['question']} {r['sql']}" for r in rows)
    missing = [
        smp.tag for smp in result.answered_ok if f"ref {smp.tag})" not in logged and f"'{smp.tag}'" not in logged
    ]
    assert not missing, missing[:10]
    assert len(rows) == len(result.answered_ok)  # nothing else was logged in the measured round
