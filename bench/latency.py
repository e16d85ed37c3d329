"""End-to-end `/query` latency for demo questions through a real uvicorn server (loopback HTTP).

    python -m bench.latency                 # five demo questions, 3 rounds each
    python -m bench.latency --rounds 5

Prints a table and writes reports/bench/latency-<timestamp>.json. The first request is a warm-up and is not
counted. Numbers on a shared 2-core machine are noisy: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn

from app.core.config import Settings, get_settings
from app.main import create_app

QUESTIONS = [
    "How many customers are there?",
    "How many orders were cancelled in 2024?",
    "What is the average salary per department?",
    "Top 5 products by unit price",
    "Total payment amount by payment method",
]


def serve(settings: Settings) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    tmp = tempfile.mkdtemp()
    # a local measurement: the server binds to loopback and auth would only add a header to every request
    settings = get_settings().model_copy(
        update={"querylog_url": f"sqlite:///{tmp}/querylog.sqlite", "auth_disabled": True}
    )
    server, url = serve(settings)
    rows = []
    with httpx.Client(base_url=url, timeout=120) as client:
        client.post("/query", json={"question": QUESTIONS[0]})  # warm-up
        for q in QUESTIONS:
            runs = []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                body = client.post("/query", json={"question": q}).json()
                runs.append(
                    {
                        "wall_ms": (time.perf_counter() - t0) * 1000,
                        **{k: body.get(k) for k in ("status", "generate_ms", "execute_ms", "total_ms", "sql")},
                    }
                )
            rows.append(
                {
                    "question": q,
                    "median_ms": round(statistics.median(r["wall_ms"] for r in runs), 1),
                    "status": runs[-1]["status"],
                    "sql": runs[-1]["sql"],
                    "runs": runs,
                }
            )
    server.should_exit = True
    med = statistics.median(r["median_ms"] for r in rows)
    print(f"{'question':50s} {'median ms':>10s}  status")
    for r in rows:
        print(f"{r['question'][:50]:50s} {r['median_ms']:10.0f}  {r['status']}")
    print(f"{'median over questions':50s} {med:10.0f}")
    out = Path("reports/bench")
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = out / f"latency-{stamp}.json"
    path.write_text(
        json.dumps(
            {"model": settings.model_dir.name, "rounds": a.rounds, "median_ms": med, "questions": rows}, indent=2
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
