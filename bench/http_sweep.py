"""HTTP sweep: the real server (`python -m app`, one process per engine) under a closed-loop load generator at
concurrency 1, 4, 8, 16 on loopback: requests/s, p50/p95/p99 latency, batch sizes reached, errors.

Questions are the business suite (models/scenarios) spread over its scenarios, against the demo database: the
service answers one database. A second, concurrency-1 pass runs a server on the Spider dev database of the median
Spider question (by schema size) to time `/query` for a median Spider question. llama.cpp is measured through the
same app (bench.serve_llamacpp), so only the engine differs.

    python -m bench.http_sweep --targets onnx-fp32 --concurrency 1 4 --requests 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from app.core.config import DEMO_DB_PATH
from bench import gguf_export
from bench.server import ServerProcess
from models.bases import get_base

SERVED = "onnx-int8"  # what `make run` serves: the Spider latency pass times this one


def targets() -> dict[str, dict]:
    py = sys.executable
    return {
        "onnx-fp32": {"cmd": [py, "-m", "app"], "env": {"MODEL_DIR": str(get_base().onnx_dir / "fp32")}},
        "onnx-int8": {"cmd": [py, "-m", "app"], "env": {"MODEL_DIR": str(get_base().onnx_dir / "int8")}},
        "llamacpp-q4_1": {
            "cmd": [py, "-m", "bench.serve_llamacpp", "--gguf", str(gguf_export.ours_gguf("q4_1")), "--fine-tuned"],
            "env": {},
        },
    }


def missing_reason(name: str) -> str | None:
    if name.startswith("llamacpp"):
        from bench.llamacpp import available

        if not available():
            return "llama-cpp-python is not installed"
        path = gguf_export.ours_gguf("q4_1")
    else:
        path = Path(targets()[name]["env"]["MODEL_DIR"]) / "model.onnx"
    return None if path.exists() else f"not built: {path}"


def batch_histogram(url: str) -> tuple[float, float]:
    """(sum, count) of the server's querywise_batch_size histogram."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    get = lambda k: float(re.search(rf"^querywise_batch_size_{k} (\S+)$", text, re.M).group(1))  # noqa: E731
    return get("sum"), get("count")


async def _load(url: str, questions: list[str], concurrency: int, timeout_s: float) -> tuple[list[dict], float]:
    """Closed loop: `concurrency` clients, each sends its next question as soon as its answer arrives."""
    queue = list(enumerate(questions))
    results: list[dict] = []

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            i, q = queue.pop(0)
            t0 = time.perf_counter()
            rec = {"i": i, "sent_s": t0 - start}
            try:
                r = await http.post("/query", json={"question": q})
                rec |= {"http": r.status_code}
                if r.status_code == 200:
                    body = r.json()
                    rec |= {
                        k: body.get(k)
                        for k in ("status", "category", "batch_size", "generate_ms", "total_ms", "candidates")
                    }
            except httpx.HTTPError as exc:
                rec |= {"http": None, "error": type(exc).__name__}
            done = time.perf_counter()
            rec |= {"latency_ms": (done - t0) * 1000, "done_s": done - start}
            results.append(rec)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return sorted(results, key=lambda r: r["i"]), wall


def sustained_req_s(results: list[dict], concurrency: int) -> float | None:
    """Answers per second while every client was busy: from the start to the moment the last request was sent.

    A closed loop ends with a drain: once the questions run out, the last answers decode in a shrinking batch. With
    32 requests at concurrency 8 that tail is a large part of the wall time; this rate leaves it out (the ramp-up,
    when everyone joins at once, stays in)."""
    ok = [r for r in results if r.get("http") == 200]
    if concurrency <= 1 or len(results) <= concurrency or not ok:
        return None
    last_sent = max(r["sent_s"] for r in results)
    if last_sent <= 0:
        return None
    return round(sum(1 for r in ok if r["done_s"] <= last_sent) / last_sent, 3)


def level(url: str, questions: list[str], concurrency: int, timeout_s: float = 120) -> dict:
    s0, c0 = batch_histogram(url)
    results, wall = asyncio.run(_load(url, questions, concurrency, timeout_s))
    s1, c1 = batch_histogram(url)
    ok = [r for r in results if r.get("http") == 200]
    lat = np.array([r["latency_ms"] for r in ok]) if ok else np.array([np.nan])
    sizes = [r["batch_size"] for r in ok if r.get("batch_size")]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "error_kinds": dict(Counter(str(r.get("error") or r.get("http")) for r in results if r not in ok)),
        "wall_s": round(wall, 2),
        "req_s": round(len(ok) / wall, 3),
        "sustained_req_s": sustained_req_s(results, concurrency),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "generate_ms_p50": round(statistics.median(r["generate_ms"] for r in ok if r.get("generate_ms")), 1)
        if any(r.get("generate_ms") for r in ok)
        else None,
        # batches the server formed during this level (from /metrics) and the sizes requests saw
        "batches": int(c1 - c0),
        "mean_batch": round((s1 - s0) / (c1 - c0), 2) if c1 > c0 else None,
        "max_batch": max(sizes) if sizes else None,
        "answers": dict(Counter(r.get("category") for r in ok)),
        # answers for which execution-guided decoding drew sampled candidates (extra decoding work)
        "with_candidates": sum(1 for r in ok if r.get("candidates")),
    }


def business_questions(n: int) -> list[str]:
    from models.scenarios import SCENARIO_DIR, load_suite

    cases = load_suite(SCENARIO_DIR)
    if n <= len(cases):
        return [cases[i * len(cases) // n].question for i in range(n)]
    return [cases[i % len(cases)].question for i in range(n)]


def median_spider_db() -> tuple[str, Path, list[str]] | None:
    """The dev database of the median Spider question by schema size, with its dev questions."""
    from app.nl2sql.prompt import format_schema
    from models.data import SPIDER_DIR, schema_at
    from models.evaluate import spider_items

    if not (SPIDER_DIR / "dev.json").exists():
        return None
    items, _ = spider_items(SPIDER_DIR / "dev.json", SPIDER_DIR / "database", None)
    size = {db: len(format_schema(schema_at(p))) for db, p in {it["db_id"]: it["db_path"] for it in items}.items()}
    items.sort(key=lambda it: (size[it["db_id"]], it["id"]))
    mid = items[len(items) // 2]
    questions = [it["question"] for it in items if it["db_id"] == mid["db_id"]]
    return mid["db_id"], Path(mid["db_path"]), questions


def sweep(
    names: list[str],
    levels: list[int],
    requests: int,
    spider_requests: int = 0,
    warmup: int = 2,
    threads: int = 0,
    server_env: dict[str, str] | None = None,
) -> dict:
    questions = business_questions(requests)
    extra_env = ({"ORT_THREADS": str(threads)} if threads else {}) | (server_env or {})
    out: dict = {
        "questions": "business suite (models/scenarios) on the demo database",
        "server_env": extra_env,
        "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="qw-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            reason = missing_reason(name)
            if reason:
                print(f"  http {name}: skipped ({reason})", flush=True)
                out["targets"][name] = {"skipped": reason}
                continue
            try:
                target = targets()[name]
                env = target["env"] | extra_env
                with ServerProcess(work / name, f"sqlite:///{DEMO_DB_PATH}", cmd=target["cmd"], **env) as srv:
                    asyncio.run(_load(srv.url, questions[:warmup], 1, 120))
                    rows = []
                    for c in levels:
                        r = level(srv.url, questions, c)
                        print(
                            f"  http {name} c={c}: {r['req_s']:.2f} req/s · p50 {r['p50_ms']:.0f} ms · "
                            f"p95 {r['p95_ms']:.0f} ms · mean batch {r['mean_batch']} · errors {r['errors']}",
                            flush=True,
                        )
                        rows.append(r)
                    out["targets"][name] = {"levels": rows, "server_peak_rss_mb": srv.peak_rss_mb()}
                    if any(r["errors"] for r in rows):
                        out["targets"][name]["server_log_tail"] = srv.log_tail(400)
            except RuntimeError as exc:
                print(f"  http {name}: failed: {exc}", flush=True)
                out["targets"][name] = {"error": str(exc)}
        if spider_requests and SERVED in names and not missing_reason(SERVED):
            found = median_spider_db()
            if found:
                db_id, path, qs = found
                copy = work / f"{db_id}.sqlite"  # the server only reads, but the shared copy stays untouched
                shutil.copy(path, copy)
                qs = [qs[i % len(qs)] for i in range(spider_requests)]
                # as served (the p50 target is about what a user gets), then with this sweep's settings if any
                runs = {"spider_c1": {"ORT_THREADS": str(threads)} if threads else {}}
                if server_env:
                    runs["spider_c1_sweep_env"] = extra_env
                for key, env in runs.items():
                    target = targets()[SERVED]
                    served_env = target["env"] | env
                    with ServerProcess(work / key, f"sqlite:///{copy}", cmd=target["cmd"], **served_env) as srv:
                        asyncio.run(_load(srv.url, qs[:warmup], 1, 120))
                        r = level(srv.url, qs, 1)
                    out[key] = {"target": SERVED, "db_id": db_id, "server_env": env, **r}
                    print(
                        f"  http spider ({db_id}, {key}) c=1: p50 {r['p50_ms']:.0f} ms · p95 {r['p95_ms']:.0f} ms · "
                        f"{r['with_candidates']} with candidates",
                        flush=True,
                    )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=list(targets()), choices=list(targets()))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    p.add_argument("--spider-requests", type=int, default=45, help="concurrency-1 requests on a Spider database")
    a = p.parse_args()
    print(json.dumps(sweep(a.targets, a.concurrency, a.requests, a.spider_requests), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
