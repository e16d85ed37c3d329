"""SIGTERM in the middle of load: the server drains and exits cleanly, and every request answered 200 has its
row in the query log (rows are written before the answer leaves; whatever waits in memory is written at shutdown)."""

import asyncio
import signal

import pytest
from tests_support import wait_until_async

from bench.load import LoadConfig, run_load, workload
from bench.server import ServerProcess

pytestmark = pytest.mark.slow


async def test_sigterm_mid_load_loses_no_logged_answer(tmp_path, demo_db):
    questions, sqls = workload()
    config = LoadConfig(requests=600, concurrency=16, duration_s=60, sql_share=0.8, tag=True, request_timeout_s=60)
    server = ServerProcess(tmp_path, f"sqlite:///{demo_db}", MAX_NEW_TOKENS="32", BATCH_MAX_SIZE="4").start()
    try:
        load = asyncio.create_task(run_load(server.url, config, questions, sqls))
        # well into the run, then the signal
        await wait_until_async(
            lambda: len(server.querylog_rows()) >= 40 or load.done(), "40 answers logged", timeout_s=120, poll_s=0.2
        )
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 90)
        result = await load
    finally:
        server.kill()
    log = server.log_tail(20_000)
    s = result.summary()
    print(s, f"exit {code}")

    assert code in (0, -signal.SIGTERM), log
    assert "Traceback" not in log, log
    assert s["http_500"] == 0, s
    ok = result.answered_ok
    assert ok and s["connection_errors"] > 0, s  # answers before the signal, refusals after: it was mid-load
    rows = server.querylog_rows()
    logged = "\n".join(f"{r['question']} {r['sql']}" for r in rows)
    missing = [smp.tag for smp in ok if f"ref {smp.tag})" not in logged and f"'{smp.tag}'" not in logged]
    assert not missing, f"{len(missing)} of {len(ok)} answered requests have no query-log row: {missing[:10]}"
