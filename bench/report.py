"""The benchmark report: ratios against torch fp32 as the headline, target checks, and PNG plots.

Absolute times on a shared 2-core machine move from run to run; ratios measured in the same run on the same
prompts move much less, so they lead.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINE = "torch-fp32"
SERVED = "onnx-int8"  # the service serves the weight-only int8 export


def _ok(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows if "ttft_ms" in r}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios(engines: list[dict]) -> dict[str, dict]:
    """Per engine, against torch fp32: >1 is better for every ratio (speed-ups, and smaller size / memory)."""
    ok = _ok(engines)
    base = ok.get(BASELINE)
    if not base:
        return {}
    return {
        name: {
            "decode_tok_s": _ratio(r["decode_tok_s"], base["decode_tok_s"]),
            "ttft": _ratio(base["ttft_ms"], r["ttft_ms"]),
            "latency": _ratio(base["latency_ms"], r["latency_ms"]),
            "batch_req_s": _ratio(r["batch_req_s"], base["batch_req_s"]),
            "size": _ratio(base["size_mb"], r["size_mb"]),
            "peak_rss": _ratio(base["peak_rss_mb"], r["peak_rss_mb"]),
        }
        for name, r in ok.items()
    }


def _level(http: dict, target: str, c: int) -> dict | None:
    levels = (http or {}).get("targets", {}).get(target, {}).get("levels", [])
    return next((lv for lv in levels if lv["concurrency"] == c), None)


def targets(result: dict) -> list[dict]:
    """The issue's targets, each with what this run measured (None: not measured in this run)."""
    eng, http, ex = _ok(result.get("engines", [])), result.get("http") or {}, result.get("ex") or {}
    out = []
    spider = http.get("spider_c1")
    out.append(
        {
            "target": "p50 end-to-end /query ≤ 1.0 s, median Spider question, concurrency 1 (as served)",
            "measured": f"{spider['p50_ms']:.0f} ms on {spider['db_id']}" if spider else None,
            "met": spider["p50_ms"] <= 1000 if spider else None,
        }
    )
    c1, c8 = _level(http, SERVED, 1), _level(http, SERVED, 8)
    scale = _ratio(c8["req_s"], c1["req_s"]) if c1 and c8 else None
    sustained = _ratio(c8.get("sustained_req_s"), c1["req_s"]) if c1 and c8 and c8.get("sustained_req_s") else None
    out.append(
        {
            "target": "requests/s at concurrency 8 ≥ 4× concurrency 1 (served engine, HTTP)",
            "measured": f"{scale}× ({c8['req_s']:.2f} vs {c1['req_s']:.2f} req/s)"
            + (f"; {sustained}× sustained (without the final drain)" if sustained else "")
            if scale
            else None,
            "met": scale >= 4 if scale else None,
        }
    )
    i8, t32 = eng.get("onnx-int8"), eng.get(BASELINE)
    speed = _ratio(i8["decode_tok_s"], t32["decode_tok_s"]) if i8 and t32 else None
    out.append(
        {
            "target": "ONNX int8 ≥ 2.5× decode tokens/s of torch fp32",
            "measured": f"{speed}×" if speed else None,
            "met": speed >= 2.5 if speed else None,
        }
    )
    ex8, ex32 = (ex.get("onnx-int8") or {}).get("ex"), (ex.get(BASELINE) or {}).get("ex")
    loss = round(ex32 - ex8, 1) if ex8 is not None and ex32 is not None else None
    out.append(
        {
            "target": "ONNX int8 loses ≤ 1 point EX against torch fp32 (same 200 dev questions)",
            "measured": f"{loss:+.1f} points ({ex8}% vs {ex32}%)" if loss is not None else None,
            "met": loss <= 1 if loss is not None else None,
        }
    )
    ours, theirs = _level(http, SERVED, 8), _level(http, "llamacpp-q4_1", 8)
    out.append(
        {
            "target": "requests/s at concurrency 8 ≥ llama.cpp's on the same model (HTTP, same app)",
            "measured": f"{ours['req_s']:.2f} vs {theirs['req_s']:.2f} req/s" if ours and theirs else None,
            "met": ours["req_s"] >= theirs["req_s"] if ours and theirs else None,
        }
    )
    b_ours, b_base = eng.get(SERVED), eng.get("llamacpp-base-q4_1")
    out.append(
        {
            "target": "engine level, a batch of forced-length answers: our req/s ≥ llama.cpp on the base GGUF",
            "measured": f"{b_ours['batch_req_s']:.2f} vs {b_base['batch_req_s']:.2f} req/s"
            if b_ours and b_base
            else None,
            "met": b_ours["batch_req_s"] >= b_base["batch_req_s"] if b_ours and b_base else None,
        }
    )
    return out


def plot_engines(engines: list[dict], path: Path) -> Path:
    ok = list(_ok(engines).values())
    names = [r["name"] for r in ok]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = [
        ("decode_tok_s", "decode tokens/s, batch 1 (higher is better)"),
        ("batch_tok_s", "tokens/s, a batch of prompts at once (higher is better)"),
        ("ttft_ms", "time to first token, ms (lower is better)"),
    ]
    for ax, (key, title) in zip(axes, panels, strict=True):
        bars = ax.barh(names, [r[key] for r in ok], color=["#c44" if n == BASELINE else "#48a" for n in names])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_http(http: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, t in (http or {}).get("targets", {}).items():
        levels = t.get("levels") or []
        if not levels:
            continue
        cs = [lv["concurrency"] for lv in levels]
        axes[0].plot(cs, [lv["req_s"] for lv in levels], marker="o", label=name)
        (line,) = axes[1].plot(cs, [lv["p50_ms"] for lv in levels], marker="o", label=f"{name} p50")
        axes[1].plot(cs, [lv["p95_ms"] for lv in levels], marker="x", ls="--", color=line.get_color(), label="p95")
    axes[0].set_title("requests/s vs concurrency (HTTP /query)", fontsize=9)
    axes[1].set_title("latency (ms) vs concurrency", fontsize=9)
    for ax in axes:
        ax.set_xlabel("concurrent clients")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _f(v, fmt: str = "{:.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(result: dict, plots: dict[str, str]) -> str:
    eng, rat, ex = result.get("engines", []), ratios(result.get("engines", [])), result.get("ex") or {}
    host = result.get("host", {})
    n, b = result["config"]["new_tokens"], result["config"].get("batch", 8)
    lines = [
        f"# Engine benchmark {result['date']}",
        "",
        f"Machine: {host.get('cpus')} CPU cores, load average {host.get('load_before')} before and "
        f"{host.get('load_after')} after (a shared machine: compare the ratios, measured in the same run, "
        "rather than absolute times). Versions: " + ", ".join(f"{k} {v}" for k, v in host.get("versions", {}).items()),
        "",
        f"Prompts: {result['prompts']['summary']}. Greedy decoding; for speed every engine decodes exactly "
        f"{result['config']['new_tokens']} tokens (stop tokens ignored), so all do the same work whatever their "
        "weights write. Each engine runs in its own process (peak RSS is its own).",
        "",
        "## Headline: ratios against transformers torch fp32 (higher is better)",
        "",
        f"| engine | weights | decode tok/s | time to first token | {n}-token latency | batch-{b} req/s | size | "
        "peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in eng:
        q = rat.get(r["name"])
        if q:
            lines.append(
                f"| {r['name']} | {r['weights']} | {_f(q['decode_tok_s'], '{:.2f}×')} | {_f(q['ttft'], '{:.2f}×')} | "
                f"{_f(q['latency'], '{:.2f}×')} | {_f(q['batch_req_s'], '{:.2f}×')} | {_f(q['size'], '{:.2f}×')} | "
                f"{_f(q['peak_rss'], '{:.2f}×')} |"
            )
    lines += [
        "",
        "## Engines (absolute, medians over the prompts)",
        "",
        "| engine | format | size MB | peak RSS MB | load s | prompt tokens | TTFT ms | decode tok/s | "
        f"{n}-token ms | batch-{b} req/s | batch-{b} tok/s | EX % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in eng:
        if "ttft_ms" not in r:
            lines.append(f"| {r['name']} | {r['format']} | not measured: {r.get('skipped') or r.get('error')} |")
            continue
        e = (ex.get(r["name"]) or {}).get("ex")
        lines.append(
            f"| {r['name']} | {r['format']} | {r['size_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} | "
            f"{r['prompt_tokens_median']:.0f} | {r['ttft_ms']:.0f} | {r['decode_tok_s']:.1f} | {r['latency_ms']:.0f} | "
            f"{r['batch_req_s']:.2f} | {r['batch_tok_s']:.0f} | {_f(e, '{:.1f}')} |"
        )
    if plots.get("engines"):
        lines += ["", f"![engines]({plots['engines']})"]
    http = result.get("http") or {}
    if http:
        lines += [
            "",
            f"## HTTP /query under load ({http.get('questions')}; {result['config']['requests']} requests per level)",
            "",
            "| server | clients | req/s | × c=1 | sustained req/s | × c=1 | p50 ms | p95 ms | p99 ms | mean batch | "
            "max batch | errors | with candidates | server peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, t in http.get("targets", {}).items():
            levels = t.get("levels")
            if not levels:
                lines.append(f"| {name} | not measured: {t.get('skipped') or t.get('error')} |")
                continue
            c1 = levels[0]["req_s"]
            for lv in levels:
                sus = lv.get("sustained_req_s") or (lv["req_s"] if lv["concurrency"] == 1 else None)
                lines.append(
                    f"| {name} | {lv['concurrency']} | {lv['req_s']:.2f} | {_f(_ratio(lv['req_s'], c1), '{:.2f}')} | "
                    f"{_f(sus, '{:.2f}')} | {_f(_ratio(sus, c1) if sus else None, '{:.2f}')} | "
                    f"{lv['p50_ms']:.0f} | {lv['p95_ms']:.0f} | {lv['p99_ms']:.0f} | {_f(lv['mean_batch'], '{:.2f}')} | "
                    f"{_f(lv['max_batch'])} | {lv['errors']} | {lv.get('with_candidates', '–')} | "
                    f"{_f(t.get('server_peak_rss_mb'))} |"
                )
        lines += [
            "",
            "Servers run `python -m app` with its defaults (continuous batching, prefix cache, schema-constrained "
            "and execution-guided decoding) unless changed below; with execution-guided decoding on, batches also "
            "hold the sampled candidates drawn for answers whose greedy SQL failed or returned no rows (`with "
            "candidates`), and a batch can outnumber the clients. Errors are non-200 answers "
            "(503: shed by the bounded queue). Sustained req/s counts the answers that arrived while every client "
            "was still busy (up to the moment the last request was sent), leaving out the drain at the end of a "
            "closed loop, when the last answers decode in a shrinking batch.",
        ]
        if http.get("server_env"):
            lines.append(f"Server settings changed for this sweep: `{http['server_env']}`.")
        s = http.get("spider_c1")
        if s:
            lines += [
                "",
                f"Spider, one client, server on `{s['db_id']}` (the database of the median dev question by schema "
                f"size), as served: p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms over {s['requests']} "
                f"requests, {s.get('with_candidates', 0)} of them with execution-guided candidates (the first SQL "
                "failed or returned no rows).",
            ]
            g = http.get("spider_c1_sweep_env")
            if g:
                lines[-1] += (
                    f" With this sweep's settings (`{g['server_env']}`): p50 {g['p50_ms']:.0f} ms, p95 "
                    f"{g['p95_ms']:.0f} ms."
                )
        if plots.get("http"):
            lines += ["", f"![http]({plots['http']})"]
    if ex:
        lines += ["", "## EX on the same Spider dev questions (quantization impact)", ""]
        lines += ["| engine | EX % | valid SQL % | n | run |", "|---|---:|---:|---:|---|"]
        for name, e in ex.items():
            if "ex" in e:
                lines.append(f"| {name} | {e['ex']} | {e['valid_sql']} | {e['n']} | `reports/eval/{e['run']}.json` |")
            else:
                lines.append(f"| {name} | not measured: {e.get('skipped') or e.get('error')} | | | |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in result.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured'] or '–'} | {met} |")
    prof = result.get("profile") or {}
    if prof:
        lines += ["", "## Where the ONNX time goes (ONNX Runtime profiler, one prompt)", ""]
        for name, p in prof.items():
            if "decode" not in p:
                lines.append(f"- {name}: {p.get('error')}")
                continue
            top = lambda ph: ", ".join(f"{op} {share:.0%}" for op, share in list(ph["ops"].items())[:5])  # noqa: E731
            lines.append(
                f"- **{name}** ({p['prompt_tokens']} prompt tokens, {p['new_tokens']} new): prefill "
                f"{p['prefill']['ms_per_run']:.0f} ms ({top(p['prefill'])}); decode {p['decode']['ms_per_run']:.1f} ms "
                f"per step ({top(p['decode'])}); {p['outside_session_share']:.0%} of the wall time outside "
                "`session.run` (Python)."
            )
    steps = result.get("step_cost")
    if steps:
        lines += ["", "## What batching can buy (decode step by batch and context, served model)", ""]
        if "cells" in steps:
            from bench.experiments.step_cost import markdown as step_table

            lines += step_table(steps)
            lines += [
                "",
                "A step for 8 rows costs more than a step for one (each row reads its own KV cache, and the graph "
                "copies it once more to append the new token), so 8 decoding requests get at most the last "
                "column's gain over one; prefill, which runs alone for each joining request, and the closed loop's "
                "drain take the HTTP ratio below it.",
            ]
        else:
            lines.append(f"not measured: {steps.get('error')}")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
