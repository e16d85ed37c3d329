"""How often an answer changes when it shares a decoding batch: each question decoded alone, then in batches of 8.

Weight-only int8 (MatMulNBits, accuracy_level 4) quantizes activations per block, and left padding in a batch moves
them slightly, so a near-tie between two tokens can go the other way. This measures how often that changes the SQL
(and whether the changed SQL is still right), on Spider dev questions spread over every database, with the prompts
and schema-constrained greedy decoding the service uses. Each model is run in its own process.

    python -m bench.experiments.batch_flips --model-dir build/onnx/qwen2.5-coder-0.5b/int8 --limit 200
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from app.core.config import get_settings
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.extract import extract_sql
from app.nl2sql.fewshot import EXAMPLES
from app.nl2sql.generator import MAX_NEW_TOKENS, Sampling
from app.nl2sql.prompt import build_prompt, format_schema
from app.sql.guard import guard_sql
from bench import REPORT_DIR
from models.data import SPIDER_DIR, schema_at
from models.evaluate import judge, spider_items
from models.exec_match import execute_sqlite, order_matters, results_match


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in flags.split() if f.startswith(("avx", "amx")) or "vnni" in f)


def same_result(item: dict, a: str, b: str) -> bool:
    """Whether two answers to one question return the same rows (both failing counts as the same)."""
    out = []
    for text in (a, b):
        try:
            out.append(execute_sqlite(item["db_path"], guard_sql(extract_sql(text), row_limit=10**9).sql, 5.0))
        except Exception:  # noqa: BLE001 - any failure is "no result" for this comparison
            out.append(None)
    if out[0] is None or out[1] is None:
        return out[0] is out[1]
    return results_match(out[0], out[1], order_matters(extract_sql(a)))


def measure(model_dir: Path, limit: int, batch: int, new_tokens: int) -> dict:
    gen = OnnxGenerator(model_dir)
    items, _ = spider_items(SPIDER_DIR / "dev.json", SPIDER_DIR / "database", SPIDER_DIR / "tables.json")
    items = [items[i * len(items) // limit] for i in range(limit)]
    examples = () if gen.fine_tuned else EXAMPLES
    schemas = [schema_at(it["db_path"]) for it in items]
    prompts = [build_prompt(format_schema(s), it["question"], examples) for s, it in zip(schemas, items, strict=True)]
    rows = [Sampling(names=SchemaNames.from_schema(s)) for s in schemas]
    t0 = time.perf_counter()
    alone = [gen.generate([p], new_tokens, [r])[0].text for p, r in zip(prompts, rows, strict=True)]
    t_alone = time.perf_counter() - t0
    gen.prefix_cache.clear()
    # batches mix databases (every 8th question), so rows of different lengths share a left-padded batch
    order = [i for k in range(batch) for i in range(k, len(items), batch)]
    batched: dict[int, str] = {}
    t0 = time.perf_counter()
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        for i, g in zip(idx, gen.generate([prompts[i] for i in idx], new_tokens, [rows[i] for i in idx]), strict=True):
            batched[i] = g.text
    t_batched = time.perf_counter() - t0
    changed = []
    ok_alone = ok_batched = result_changed = 0
    for i, it in enumerate(items):
        a, b = judge(it, alone[i])["ok"], judge(it, batched[i])["ok"]
        ok_alone += a
        ok_batched += b
        if extract_sql(alone[i]) != extract_sql(batched[i]):
            result_changed += not same_result(it, alone[i], batched[i])
            changed.append(
                {"question": it["question"], "alone": extract_sql(alone[i]), "batched": extract_sql(batched[i]),
                 "right_alone": a, "right_batched": b}
            )  # fmt: skip
    return {
        "model_dir": str(model_dir),
        "model_id": gen.model_id,
        "questions": len(items),
        "batch": batch,
        "changed": len(changed),
        "changed_pct": round(100 * len(changed) / len(items), 2),
        "result_changed": result_changed,  # of those, how many return different rows (the rest differ in spelling)
        "ex_alone": round(100 * ok_alone / len(items), 1),
        "ex_batched": round(100 * ok_batched / len(items), 1),
        "seconds_alone": round(t_alone, 1),
        "seconds_batched": round(t_batched, 1),
        "examples": changed[:10],
    }


def markdown(r: dict) -> str:
    lines = [
        f"# Batch flips: {r['model_id']}",
        "",
        f"- {r['created']} · CPU flags: {r['cpu_flags']} · {r['machine']}",
        f"- {r['questions']} Spider dev questions (spread evenly), schema-constrained greedy, as the service prompts",
        f"- answers that changed when decoded in a batch of {r['batch']} instead of alone: **{r['changed']}** "
        f"({r['changed_pct']}%); of those, {r.get('result_changed', '?')} return different rows",
        f"- EX alone {r['ex_alone']}% · EX in batches {r['ex_batched']}%",
        f"- time: {r['seconds_alone']} s alone, {r['seconds_batched']} s in batches",
        "",
    ]
    for e in r["examples"]:
        lines.append(
            f"- {e['question']}  \n  alone ({'right' if e['right_alone'] else 'wrong'}): `{e['alone']}`  \n"
            f"  batched ({'right' if e['right_batched'] else 'wrong'}): `{e['batched']}`"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=get_settings().model_dir)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--out", type=Path, default=REPORT_DIR)
    a = p.parse_args(argv)
    if not (a.model_dir / "model.onnx").exists():
        print(f"no model at {a.model_dir}: run `make model`", file=sys.stderr)
        return 2
    r = measure(a.model_dir, a.limit, a.batch, a.new_tokens)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    r = {"created": stamp, "cpu_flags": cpu_flags(), "machine": platform.machine()} | r
    a.out.mkdir(parents=True, exist_ok=True)
    name = f"batch-flips-{Path(a.model_dir).name}-{stamp}"
    (a.out / f"{name}.json").write_text(json.dumps(r, indent=2))
    (a.out / f"{name}.md").write_text(markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
