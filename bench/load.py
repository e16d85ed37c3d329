"""Load test: a bounded burst of real requests against `python -m app` on loopback, to show how it sheds load.

    python -m bench.load                              # 2,000 requests at concurrency 32, at most 300 s
    python -m bench.load --requests 300 --concurrency 16 --sql-share 0.5

Starts the server as a subprocess (its own query log in a temporary directory, auth off, the per-client rate limit
raised so the model queue is what gets saturated), warms it up with one full batch, then sends business questions
(`POST /query`, from models/scenarios) and their gold SQL (`POST /sql`) from `concurrency` closed-loop clients
until `requests` are done or `duration_s` has passed. Clients do not wait for Retry-After: the worst case.
Reports requests/s, p50/p95/p99 latency per status class, counts per status, connection errors, the server's
RSS (VmRSS) after warm-up and at the end, batch sizes reached, and whether every answered request has its
query-log row. Prints a table and writes reports/bench/load-<timestamp>.json.

`run_load` is reused by tests/load/ and tests/reliability/; the server is bench.server's `ServerProcess`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import REPORT_DIR
from bench.server import ServerProcess

_TIMEOUTS = ("ReadTimeout", "WriteTimeout", "ConnectTimeout", "PoolTimeout")


class RssSampler:
    """The server's RSS once a second while a run goes on (a background thread): [seconds, MB] pairs."""

    def __init__(self, server: ServerProcess, every_s: float = 1.0) -> None:
        self.server, self.every_s = server, every_s
        self.series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            mb = self.server.rss_mb()
            if mb is not None:
                self.series.append((round(time.perf_counter() - t0, 1), mb))
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def second_half_growth(self) -> float | None:
        if len(self.series) < 4:
            return None
        return round(self.series[-1][1] - self.series[len(self.series) // 2][1], 1)

    def downsampled(self, points: int = 30) -> list[tuple[float, float]]:
        out = self.series[:: max(1, len(self.series) // points)]
        if out and out[-1] != self.series[-1]:
            out.append(self.series[-1])
        return out


def workload() -> tuple[list[str], list[str]]:
    """Questions and their gold SQL from the business scenarios (models/scenarios)."""
    from models.scenarios import load_suite

    cases = load_suite()
    return [c.question for c in cases], [c.sql for c in cases]


@dataclass
class Sample:
    kind: str  # query | sql
    tag: str
    status: int | None  # None: no HTTP answer (connection error or client timeout)
    latency_ms: float
    retry_after: str | None = None
    error: str | None = None
    body_status: str | None = None  # the answer's `status` field (ok, empty, refused, error) on a 200
    detail: str | None = None  # the message of a refusal
    started_s: float = 0.0  # when it was sent, from the start of the run


@dataclass
class LoadConfig:
    requests: int = 2000
    concurrency: int = 32
    duration_s: float = 300.0
    sql_share: float = 0.2
    request_timeout_s: float = 120.0
    tag: bool = False  # mark each request so its query-log row can be matched (changes the question text)
    seed: int = 0


@dataclass
class LoadResult:
    config: dict
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def answered_ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200]

    def summary(self) -> dict:
        codes = Counter(str(s.status) if s.status is not None else "no_answer" for s in self.samples)
        by_class: dict[str, list[float]] = {}
        for s in self.samples:
            cls = f"{s.status // 100}xx" if s.status is not None else "no_answer"
            by_class.setdefault(cls, []).append(s.latency_ms)
        by_kind = Counter(f"{s.kind}:{s.status}" for s in self.samples)
        shed = [s for s in self.samples if s.status in (429, 503)]
        return {
            "requests": len(self.samples),
            "wall_s": round(self.wall_s, 2),
            "requests_per_s": round(len(self.samples) / self.wall_s, 1) if self.wall_s else None,
            "status_counts": dict(sorted(codes.items())),
            "by_endpoint": dict(sorted(by_kind.items())),
            "http_500": sum(1 for s in self.samples if s.status is not None and s.status >= 500 and s.status != 503),
            # No HTTP answer: refused, reset or closed by the server ...
            "connection_errors": sum(1 for s in self.samples if s.status is None and s.error not in _TIMEOUTS),
            # ... or still waiting when the client gave up (`request_timeout_s`)
            "client_timeouts": sum(1 for s in self.samples if s.status is None and s.error in _TIMEOUTS),
            "errors": dict(Counter(s.error for s in self.samples if s.error)),
            "unexpected_status": sorted({s.status for s in self.samples if s.status not in (200, 429, 503, None)}),
            "shed_without_retry_after": sum(1 for s in shed if not s.retry_after),
            "latency_ms": {cls: percentiles(v) for cls, v in sorted(by_class.items())},
            "answer_status": dict(Counter(s.body_status for s in self.answered_ok)),
            "refusals": dict(Counter(f"{s.status} {s.detail}" for s in self.samples if s.detail)),
            "latency_ms_by_endpoint": {
                f"{kind} {code}": percentiles([s.latency_ms for s in self.samples if f"{s.kind} {s.status}" == key])
                for key in sorted({f"{s.kind} {s.status}" for s in self.samples})
                for kind, code in [key.split(" ")]
            },
        }


def percentiles(values: list[float]) -> dict:
    s = sorted(values)

    def q(p: float) -> float:
        k = (len(s) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(s) - 1)
        return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 1)

    return {"n": len(s), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": round(s[-1], 1)} if s else {"n": 0}


async def run_load(url: str, config: LoadConfig, questions: list[str], sqls: list[str]) -> LoadResult:
    """`config.concurrency` closed-loop clients until `config.requests` are sent or `config.duration_s` passes."""
    rng = random.Random(config.seed)
    plan = [("sql" if rng.random() < config.sql_share else "query", i) for i in range(config.requests)]
    samples: list[Sample] = []
    next_index = 0
    t0 = time.perf_counter()
    stop_at = t0 + config.duration_s
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)

    async def one(client: httpx.AsyncClient, kind: str, i: int) -> Sample:
        tag = f"r{i}"
        if kind == "query":
            text = questions[i % len(questions)]
            path, body = "/query", {"question": f"{text} (ref {tag})" if config.tag else text}
        else:
            sql = sqls[i % len(sqls)]
            path, body = "/sql", {"sql": f"SELECT '{tag}' AS ref, q.* FROM ({sql}) AS q" if config.tag else sql}
        start = time.perf_counter()
        try:
            r = await client.post(path, json=body)
        except httpx.TimeoutException as exc:
            return Sample(kind, tag, None, (time.perf_counter() - start) * 1000, error=type(exc).__name__)
        except httpx.TransportError as exc:  # refused, reset, closed mid-answer: a dropped connection
            return Sample(kind, tag, None, (time.perf_counter() - start) * 1000, error=type(exc).__name__)
        ms = (time.perf_counter() - start) * 1000
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        return Sample(
            kind,
            tag,
            r.status_code,
            ms,
            r.headers.get("retry-after"),
            body_status=body.get("status") if r.status_code == 200 else None,
            detail=None if r.status_code == 200 else str(body.get("detail", r.text))[:120],
            started_s=round(start - t0, 3),
        )

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(plan) and time.perf_counter() < stop_at:
            kind, i = plan[next_index]
            next_index += 1
            samples.append(await one(client, kind, i))

    async with httpx.AsyncClient(base_url=url, timeout=config.request_timeout_s, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(config.concurrency)))
    return LoadResult(asdict(config), time.perf_counter() - t0, samples)


async def warm_up(url: str, questions: list[str], batch: int = 8) -> None:
    """One full batch, so the model's buffers have their working size before memory is measured."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(*(client.post("/query", json={"question": q}) for q in questions[:batch]))


def server_stats(url: str) -> dict:
    """Batch sizes reached and shed / query-log counters, from /api/stats and /metrics."""
    with httpx.Client(base_url=url, timeout=30) as client:
        stats = client.get("/api/stats").json()
        metrics = {}
        for line in client.get("/metrics").text.splitlines():
            name, _, value = line.partition(" ")
            if name in (
                "querywise_shed_total",
                "querywise_querylog_failures_total",
                "querywise_querylog_pending",
                "querywise_querylog_dropped",
            ):
                metrics[name] = float(value)
    return {"batching": stats.get("batching"), "metrics": metrics}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration-s", type=float, default=300.0, help="stop sending after this many seconds")
    p.add_argument("--sql-share", type=float, default=0.2, help="fraction of requests that are POST /sql")
    p.add_argument("--database-url", default=None, help="default: the server's own default (build/demo.sqlite)")
    p.add_argument("--out", type=Path, default=None, help="JSON report path (default reports/bench/load-<ts>.json)")
    a = p.parse_args()
    config = LoadConfig(a.requests, a.concurrency, a.duration_s, a.sql_share)
    questions, sqls = workload()
    with tempfile.TemporaryDirectory(prefix="querywise-load-") as tmp, ServerProcess(Path(tmp), a.database_url) as srv:
        rss_started = srv.rss_mb()
        asyncio.run(warm_up(srv.url, questions))
        rss_start = srv.rss_mb()
        rows_before = len(srv.querylog_rows())
        with RssSampler(srv) as rss_series:
            result = asyncio.run(run_load(srv.url, config, questions, sqls))
        rss_end = srv.rss_mb()
        stats = server_stats(srv.url)
        logged = len(srv.querylog_rows()) - rows_before
        exit_code = srv.terminate()
    summary = result.summary()
    report = {
        "config": result.config,
        "summary": summary,
        "rss_mb": {"after_start": rss_started, "after_warmup": rss_start, "end": rss_end},
        "rss_growth_mb": round(rss_end - rss_start, 1) if rss_start and rss_end else None,
        # A leak keeps growing in the second half; a high-water mark (KV caches reaching full size) does not.
        "rss_growth_second_half_mb": rss_series.second_half_growth(),
        "rss_series": rss_series.downsampled(),
        "querylog": {"rows": logged, "answered_200": len(result.answered_ok)},
        "server": stats,
        "server_exit_code": exit_code,
    }
    print_report(report)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = a.out or REPORT_DIR / f"load-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def print_report(report: dict) -> None:
    s = report["summary"]
    c = report["config"]
    print(f"{s['requests']} requests at concurrency {c['concurrency']} in {s['wall_s']} s: {s['requests_per_s']} req/s")
    print(f"status: {s['status_counts']}   by endpoint: {s['by_endpoint']}")
    print(f"HTTP 500: {s['http_500']}   connection errors: {s['connection_errors']}   "
          f"client timeouts: {s['client_timeouts']}   "
          f"shed without Retry-After: {s['shed_without_retry_after']}")  # fmt: skip
    print(f"{'class':10s} {'n':>6s} {'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s} {'max ms':>9s}")
    for cls, q in s["latency_ms"].items():
        print(f"{cls:10s} {q['n']:6d} {q['p50']:9.1f} {q['p95']:9.1f} {q['p99']:9.1f} {q['max']:9.1f}")
    rss = report["rss_mb"]
    print(f"RSS MB: after start {rss['after_start']}, after warm-up {rss['after_warmup']}, end {rss['end']} "
          f"(growth {report['rss_growth_mb']}, in the second half {report['rss_growth_second_half_mb']})")  # fmt: skip
    print(f"batch sizes: {report['server']['batching']['sizes']}   server: {report['server']['metrics']}")
    print(f"query log rows {report['querylog']['rows']} for {report['querylog']['answered_200']} answers (200)")


if __name__ == "__main__":
    main()
