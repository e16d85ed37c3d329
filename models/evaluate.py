"""Stage 5, evaluate: execution accuracy (EX) on any Spider-format dataset and on the business suite.

    python -m models.evaluate --run dev-int8                                   # Spider dev (972 with a database)
    python -m models.evaluate --run dev-torch --engine torch --adapter models/adapters/querywise-sql
    python -m models.evaluate --run biz-int8 --suite models/scenarios          # business suite on the demo DB
    python -m models.evaluate --run biz-gloss --suite models/scenarios --glossary app/db/demo_glossary.yaml
    python -m models.evaluate --run biz-ex3 --suite models/scenarios --examples 3  # k verified examples, other folds
    python -m models.evaluate --questions q.json --tables t.json --db-root dbs/ --run mine
    python -m models.evaluate --run dev-guided --candidates 4                 # execution-guided decoding
    python -m models.evaluate --run dev-constrained --constrained             # identifiers limited to the schema
    python -m models.evaluate compare reports/eval/a.json reports/eval/b.json
    python -m models.evaluate --run dev-vote --constrained --candidates 4 --vote   # candidates for every question
    python -m models.evaluate choices reports/eval/dev-vote.jsonl              # greedy / served rule / vote / oracle
    python -m models.evaluate same-questions reports/eval/a.jsonl reports/eval/b.jsonl  # EX on a's questions only

Predictions are generated in batches through the engine the service uses (ONNX, MODEL_DIR: the int8 export unless
set) or torch fp32 (`--engine torch`, base + adapter; every decoding mode below works with both), executed
read-only with a timeout next to the gold SQL, compared as Spider does (multisets; ordered only when the gold has
ORDER BY), and streamed to reports/eval/<run>.jsonl as they come, so memory stays flat and an interrupted run
resumes where it stopped. With `--candidates N`, a prediction that fails to run (or returns no rows) is replaced as
the service replaces it (`app.nl2sql.guided`): N seeded samples, the first that runs with rows wins; the gold SQL is
never consulted for that choice. With `--constrained`, decoding keeps identifiers to the names of each question's
schema (`app.nl2sql.constrain`), as the service does. With `--glossary FILE` and `--examples K` the prompt carries
business context as the service builds it (`models.context`: examples from other folds of the suite, never the
question asked). The summary (overall, per hardness or scenario, error categories with examples) goes to
reports/eval/<run>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from app.core.config import DEMO_DB_PATH, MAX_NEW_TOKENS, get_settings
from app.nl2sql.constrain import SchemaNames
from app.nl2sql.extract import sql_of
from app.nl2sql.fewshot import EXAMPLES
from app.nl2sql.generator import Sampling
from app.nl2sql.guided import (
    best_index,
    candidate_sampling,
    judged,
    result_key,
    result_status,
    vote_index,
    wants_candidates,
)
from app.nl2sql.joins import KeyLinks, unkeyed_joins
from app.nl2sql.prompt import build_conversation, format_schema
from app.sql.executor import categorize
from app.sql.guard import GuardError, guard_sql
from models.context import BusinessContext
from models.data import SPIDER_DIR, read_jsonl, schema_at, sqlite_path
from models.exec_match import execute_sqlite, order_matters, results_match, rows_answer
from models.hardness import hardness

# defaults (the service's own where it has one)
engine = "onnx"
model_dir = get_settings().model_dir  # the engine the service uses
batch_size = 8
timeout_s = get_settings().statement_timeout_s  # per query, prediction and gold alike
temperature = get_settings().exec_guided_temperature  # execution-guided candidates
out_root = Path("reports/eval")
DEFAULT_GLOSSARY_BUDGET = 400  # tokens; the demo glossary is ~600 (Qwen's tokenizer): the relevant part goes in


def spider_items(questions: Path, db_root: Path, tables: Path | None) -> tuple[list[dict], int]:
    rows = json.loads(questions.read_text())
    known = {t["db_id"] for t in json.loads(tables.read_text())} if tables else None
    items, missing = [], 0
    for i, r in enumerate(rows):
        path = sqlite_path(db_root, r["db_id"])
        if not path.exists() or (known is not None and r["db_id"] not in known):
            missing += 1
            continue
        items.append(
            {
                "id": i,
                "db_id": r["db_id"],
                "db_path": str(path),
                "question": r["question"],
                "gold": r["query"],
                "group": hardness(r["query"]),
            }
        )
    return items, missing


def suite_items(suite_dir: Path, db_path: Path) -> list[dict]:
    from models.scenarios import load_suite

    return [
        {"id": i, "db_id": "demo", "db_path": str(db_path), "question": c.question, "gold": c.sql, "group": c.scenario}
        for i, c in enumerate(load_suite(suite_dir))
    ]


def served_sql(item: dict, text: str, names: SchemaNames | None, repair: bool) -> str:
    """The SQL the service would run for `text` (`app.nl2sql.extract.sql_of`): with `names` (schema-constrained
    runs), names that need quoting quoted; with `repair`, a table used but never read joined in on its key."""
    return sql_of(text, names, keys_of(str(item["db_path"])) if repair else None)


def judge(item: dict, text: str, names: SchemaNames | None = None, repair: bool = True) -> dict:
    """Run the prediction next to the gold SQL and say whether it is right, and if not, why; its SQL as the service
    would run it (`served_sql`)."""
    sql = served_sql(item, text, names, repair)
    rec = {
        "id": item["id"],
        "db_id": item["db_id"],
        "group": item["group"],
        "question": item["question"],
        "gold": item["gold"],
        "pred": sql,
        "raw": text if text != sql else None,
        "lenient": False,  # set below where both ran
    }
    if not sql:
        return rec | {"ok": False, "valid": False, "category": "no_sql"}
    try:
        # what the service runs: the guarded text (date functions SQLite lacks rewritten, one statement, bounded)
        guarded = guard_sql(sql, dialect="sqlite", row_limit=10**9).sql
    except GuardError as exc:
        return rec | {
            "ok": False,
            "valid": False,
            "category": "refused" if exc.category == "refused" else "syntax_error",
            "error": exc.message,
        }
    try:
        pred_rows = execute_sqlite(item["db_path"], guarded, timeout_s)
    except (sqlite3.Error, TimeoutError) as exc:
        return rec | {"ok": False, "valid": False, "category": categorize(exc), "error": str(exc)[:200]}
    try:
        gold_rows = execute_sqlite(item["db_path"], item["gold"], timeout_s)
    except (sqlite3.Error, TimeoutError) as exc:
        return rec | {"ok": False, "valid": True, "category": "gold_error", "error": str(exc)[:200]}
    ok = results_match(gold_rows, pred_rows, order_matters(item["gold"]))
    category = "ok" if ok else ("empty_result" if not pred_rows and gold_rows else "wrong_result")
    return rec | {"ok": ok, "valid": True, "category": category, "lenient": ok or rows_answer(gold_rows, pred_rows)}


def lenient_again(item: dict, rec: dict) -> bool:
    """`rows_answer` for a recorded prediction (`--rescore`: runs recorded before the lenient reading existed)."""
    if rec["ok"] or not rec["valid"] or not rec.get("pred"):
        return rec["ok"]
    return judge(item, rec["pred"])["lenient"]  # the recorded SQL, extracted and quoted already, judged again


@lru_cache(maxsize=64)
def keys_of(db_path: str) -> KeyLinks:
    """A database's keys as the join check reads them: once per database, not per candidate."""
    return KeyLinks(schema_at(db_path))


def probe(item: dict, text: str, names: SchemaNames | None = None, repair: bool = True) -> tuple[str, str | None]:
    """What the service would see of a prediction, without the gold SQL: ok (rows), unkeyed (rows, but a join on
    columns no key links), empty, refused or error, and the result's identity for voting (`result_key`) when it ran."""
    sql = served_sql(item, text, names, repair)
    if not sql:
        return "error", None
    try:
        guarded = guard_sql(sql, dialect="sqlite", row_limit=10**9).sql
    except GuardError:
        return "refused", None
    try:
        rows = execute_sqlite(item["db_path"], guarded, timeout_s)
    except (sqlite3.Error, TimeoutError):
        return "error", None
    status = judged(result_status(rows)[0], unkeyed_joins(guarded, keys_of(str(item["db_path"]))))
    return status, result_key(rows)


def guided(
    generator,
    prompt: str,
    item: dict,
    text: str,
    n: int,
    new_tokens: int,
    names: SchemaNames | None = None,
    repair: bool = True,
) -> tuple[str, bool]:
    """Execution-guided choice between the greedy text and n sampled candidates; (text, rescued)."""
    first = probe(item, text, names, repair)[0]
    if not wants_candidates(first):
        return text, False
    texts, statuses, seen = [text], [first], {served_sql(item, text, names, repair)}
    for g in generator.generate([prompt] * n, new_tokens, candidate_sampling(prompt, n, temperature, names)):
        sql = served_sql(item, g.text, names, repair)
        if sql in seen:
            continue
        seen.add(sql)
        texts.append(g.text)
        statuses.append(probe(item, g.text, names, repair)[0])
        if not wants_candidates(statuses[-1]):
            break
    i = best_index(statuses)
    return texts[i], i > 0


def voted(
    generator,
    prompt: str,
    item: dict,
    text: str,
    n: int,
    new_tokens: int,
    names: SchemaNames | None = None,
    repair: bool = True,
) -> tuple[str, bool, dict]:
    """Self-consistency: the greedy text and n sampled candidates all run; the result most of them share wins
    (`vote_index`). Also returns, per answer, its status and whether it was right (for the oracle and for other
    choice rules computed afterwards; the choice itself never sees the gold SQL)."""
    texts = [text] + [
        g.text for g in generator.generate([prompt] * n, new_tokens, candidate_sampling(prompt, n, temperature, names))
    ]
    probes = [probe(item, t, names, repair) for t in texts]
    statuses, keys = [p[0] for p in probes], [p[1] for p in probes]
    i = vote_index(statuses, keys)
    info = {
        "statuses": statuses,
        "keys": keys,
        "right": [judge(item, t, names, repair)["ok"] for t in texts],
        "sql": [
            served_sql(item, t, names, repair) for t in texts
        ],  # for selection rules judged afterwards on the SQL itself
        "chosen": i,
    }
    return texts[i], i > 0, info


def batches(items: list[dict], size: int) -> Iterator[list[dict]]:
    # Same-database questions together: similar prompt lengths, little padding.
    items = sorted(items, key=lambda it: (it["db_id"], it["id"]))
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run(
    items: list[dict],
    generator,
    out_jsonl: Path,
    size: int,
    new_tokens: int = MAX_NEW_TOKENS,
    sample_values: int = 0,
    candidates: int = 0,
    constrained: bool = False,
    vote: bool = False,
    context: BusinessContext | None = None,
    enum_values: int = 0,
    repair: bool = True,
) -> None:
    done = {r["id"] for r in read_jsonl(out_jsonl)} if out_jsonl.exists() else set()
    todo = [it for it in items if it["id"] not in done]
    if done:
        print(f"resuming: {len(done)} done, {len(todo)} to go")
    examples = () if generator.fine_tuned else EXAMPLES
    t0, n = time.time(), 0
    with out_jsonl.open("a") as f:
        for batch in batches(todo, size):
            schemas = [schema_at(it["db_path"], sample_values, enum_values) for it in batch]
            ctx = [context.for_item(it) if context else ([], "", None) for it in batch]
            prompts = [
                build_conversation(format_schema(s), it["question"], earlier, examples, notes)
                for s, it, (earlier, notes, _) in zip(schemas, batch, ctx, strict=True)
            ]
            names = [SchemaNames.from_schema(s) if constrained else None for s in schemas]
            g0 = time.perf_counter()
            if constrained:
                gens = generator.generate(prompts, new_tokens, [Sampling(names=n) for n in names])
            else:
                gens = generator.generate(prompts, new_tokens)
            texts, rescued, votes = [g.text for g in gens], [False] * len(batch), [None] * len(batch)
            if candidates:
                for i, (it, prompt) in enumerate(zip(batch, prompts, strict=True)):
                    if vote:
                        texts[i], rescued[i], votes[i] = voted(
                            generator, prompt, it, texts[i], candidates, new_tokens, names[i], repair
                        )
                    else:
                        texts[i], rescued[i] = guided(
                            generator, prompt, it, texts[i], candidates, new_tokens, names[i], repair
                        )
            gen_ms = (time.perf_counter() - g0) * 1000 / len(batch)
            for it, g, text, r, v, (_, _, used), nm in zip(batch, gens, texts, rescued, votes, ctx, names, strict=True):
                extra = (
                    {"gen_ms": round(gen_ms, 1), "new_tokens": g.new_tokens}
                    | ({"rescued": r} if candidates else {})
                    | ({"votes": v} if v else {})
                    | ({"context": used} if used else {})
                )
                rec = judge(it, text, nm, repair) | extra
                if r:  # the greedy answer was replaced: keep whether it was right, for the greedy row beside
                    rec["greedy_ok"] = judge(it, g.text, nm, repair)["ok"]
                f.write(json.dumps(rec) + "\n")
            f.flush()
            n += len(batch)
            rate = n / (time.time() - t0)
            print(f"  {len(done) + n}/{len(items)}  {rate:.2f} q/s", flush=True)


def summarize(out_jsonl: Path, meta: dict) -> dict:
    """Streaming aggregation over the JSONL (never all predictions in memory at once)."""
    total = ok = valid = 0
    groups: dict[str, Counter] = defaultdict(Counter)
    cats: Counter = Counter()
    examples: dict[str, list] = defaultdict(list)
    gen_ms, rescued, greedy_ok = 0.0, 0, 0
    lenient, unscored = 0, 0
    for r in read_jsonl(out_jsonl):
        total += 1
        lenient += r.get("lenient", r["ok"])
        unscored += "lenient" not in r
        rescued += r.get("rescued", False)
        greedy_ok += r.get("greedy_ok", r["ok"]) if r.get("rescued") else r["ok"]
        ok += r["ok"]
        valid += r["valid"]
        gen_ms += r.get("gen_ms", 0.0)
        groups[r["group"]]["n"] += 1
        groups[r["group"]]["ok"] += r["ok"]
        cats[r["category"]] += 1
        if not r["ok"] and len(examples[r["category"]]) < 3:
            examples[r["category"]].append({k: r.get(k) for k in ("question", "gold", "pred", "error")})
    pct = lambda a, b: round(100 * a / b, 1) if b else None  # noqa: E731
    return meta | {
        "n": total,
        "ex": pct(ok, total),
        "valid_sql": pct(valid, total),
        "mean_gen_ms_per_question": round(gen_ms / total, 1) if total else None,
        "rescued_by_candidates": rescued,
        "ex_greedy": pct(greedy_ok, total),  # the first (greedy) answers alone; = ex without candidates
        # the lenient reading (`rows_answer`), where every record has it (`--rescore` adds it to older runs)
        "ex_lenient": None if unscored else pct(lenient, total),
        "groups": {g: {"n": c["n"], "ex": pct(c["ok"], c["n"])} for g, c in sorted(groups.items())},
        "categories": dict(cats.most_common()),
        "error_examples": dict(examples),
    }


def markdown(s: dict) -> str:
    lines = [
        f"# Evaluation `{s['run']}`",
        "",
        f"- dataset: {s['dataset']} ({s['n']} questions{s.get('note', '')})",
        f"- engine: {s['engine']} · model: {s['model_id']}",
        f"- EX **{s['ex']}%** · valid SQL {s['valid_sql']}%"
        f" · {s['mean_gen_ms_per_question']} ms generation per question (batched) · wall {s['wall_s']} s",
        *(
            [
                f"- lenient EX {s['ex_lenient']}%: the same rows in any order, the narrower result's columns among "
                "the wider's (`models.exec_match.rows_answer`); strict EX above and this bracket what a user would "
                "call right"
            ]
            if s.get("ex_lenient") is not None
            else []
        ),
        *(
            [
                f"- execution-guided decoding: {s['candidates']} candidates; {s['rescued_by_candidates']} answers replaced"
                f"; EX of the greedy answers alone {s.get('ex_greedy')}%"
            ]
            if s.get("candidates")
            else []
        ),
        *(
            ["- voting: candidates drawn for every question; the result most answers share wins"]
            if s.get("vote")
            else []
        ),
        *(["- schema-constrained decoding: identifiers limited to the schema's names"] if s.get("constrained") else []),
        *(
            [
                "- tables used but never read joined in on their key, misspelt aliases mended, columns under the wrong "
                "alias moved to the one table that has them (`app.nl2sql.repair`)"
            ]
            if s.get("repair")
            else []
        ),
        *([f"- glossary: {s['glossary']} (up to {s.get('glossary_budget')} tokens)"] if s.get("glossary") else []),
        *(
            [f"- categorical columns list their values in the schema (up to {s['enum_values']})"]
            if s.get("enum_values")
            else []
        ),
        *(
            [
                f"- verified examples: {s['examples']} per question, from the other {s['folds'] - 1} of {s['folds']} folds"
            ]
            if s.get("examples")
            else []
        ),
        "",
        "| group | n | EX % |",
        "|---|---:|---:|",
    ]
    lines += [f"| {g} | {v['n']} | {v['ex']} |" for g, v in s["groups"].items()]
    lines += ["", "| outcome | count |", "|---|---:|"] + [f"| {c} | {n} |" for c, n in s["categories"].items()]
    lines += ["", "## Examples of failures", ""]
    for c, exs in s["error_examples"].items():
        for e in exs:
            lines.append(
                f"- **{c}** — {e['question']}  \n  gold: `{e['gold']}`  \n  pred: `{e['pred']}`"
                + (f"  \n  error: {e['error']}" if e.get("error") else "")
            )
    return "\n".join(lines) + "\n"


def compare(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    groups = sorted({g for r in runs for g in r["groups"]})
    cats = sorted({c for r in runs for c in r["categories"]})
    head = "| | " + " | ".join(r["run"] for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    lines.append("| EX % | " + " | ".join(str(r["ex"]) for r in runs) + " |")
    lines.append("| valid SQL % | " + " | ".join(str(r["valid_sql"]) for r in runs) + " |")
    lines.append("| n | " + " | ".join(str(r["n"]) for r in runs) + " |")
    lines.append("| ms/question | " + " | ".join(str(r["mean_gen_ms_per_question"]) for r in runs) + " |")
    for g in groups:
        lines.append(f"| EX {g} | " + " | ".join(str(r["groups"].get(g, {}).get("ex", "–")) for r in runs) + " |")
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(str(r["categories"].get(c, 0)) for r in runs) + " |")
    return "\n".join(lines)


def on_same_questions(ids_from: Path, runs: list[Path]) -> str:
    """EX of each run restricted to the questions of `ids_from` (e.g. a 100-question baseline against a 972 run)."""
    ids = {r["id"] for r in read_jsonl(ids_from)}
    lines = [
        f"questions: the {len(ids)} of {ids_from.name}",
        "",
        "| run | n | EX % | greedy EX % |",
        "|---|---:|---:|---:|",
    ]
    for path in [ids_from, *runs]:
        rows = [r for r in read_jsonl(path) if r["id"] in ids]
        ok = sum(r["ok"] for r in rows)
        greedy = sum(r.get("greedy_ok", False) if r.get("rescued") else r["ok"] for r in rows)
        n = max(len(rows), 1)
        lines.append(f"| {path.stem} | {len(rows)} | {round(100 * ok / n, 1)} | {round(100 * greedy / n, 1)} |")
    return "\n".join(lines)


def choice_rules(path: Path) -> dict[str, float]:
    """From a `--vote` run's records: EX of the greedy answers, of the service's default rule (the first answer that
    runs with rows, greedy first), of voting, and of an oracle that always picks a right candidate when there is one
    (the ceiling of any rule over these candidates)."""
    counts: Counter = Counter()
    n = 0
    for r in read_jsonl(path):
        v = r.get("votes")
        if v is None:
            raise ValueError(f"{path}: record {r['id']} has no votes (run with --candidates N --vote)")
        statuses, right = v["statuses"], v["right"]
        n += 1
        counts["greedy"] += right[0]
        counts["first_that_runs"] += right[best_index(statuses)]
        counts["vote"] += right[v["chosen"]]
        counts["oracle"] += any(right)
    return {k: round(100 * counts[k] / n, 1) for k in ("greedy", "first_that_runs", "vote", "oracle")} | {"n": n}


class UsageError(Exception):
    """A command line that cannot run (a missing file, options that do not go together): said, exit status 2."""


def same_questions_command(paths: list[Path]) -> int:
    if len(paths) < 2 or any(not p.exists() for p in paths):
        raise UsageError("usage: same-questions BASELINE.jsonl RUN.jsonl ... (all must exist)")
    print(on_same_questions(paths[0], paths[1:]))
    return 0


def choices_command(paths: list[Path]) -> int:
    if not paths or any(not p.exists() for p in paths):
        raise UsageError("usage: choices VOTE_RUN.jsonl ... (runs made with --candidates N --vote)")
    print("| run | n | greedy | first that runs (served) | vote | oracle |\n|---|---:|---:|---:|---:|---:|")
    for p in paths:
        try:
            c = choice_rules(p)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"| {p.stem} | {c['n']} | {c['greedy']} | {c['first_that_runs']} | {c['vote']} | {c['oracle']} |")
    return 0


def compare_command(paths: list[Path]) -> int:
    missing = [str(p) for p in paths if not p.exists()]
    if len(paths) < 2 or missing:
        raise UsageError(
            f"usage: compare RUN.json RUN.json ...{' (missing: ' + ', '.join(missing) + ')' if missing else ''}"
        )
    print(compare(paths))
    return 0


SUBCOMMANDS = {"same-questions": same_questions_command, "choices": choices_command, "compare": compare_command}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Execution accuracy of the NL→SQL model")
    p.add_argument("--run", required=True, help="name of this run (files under reports/eval/)")
    p.add_argument("--questions", type=Path, default=SPIDER_DIR / "dev.json")
    p.add_argument("--tables", type=Path, default=SPIDER_DIR / "tables.json")
    p.add_argument("--db-root", type=Path, default=SPIDER_DIR / "database")
    p.add_argument("--suite", type=Path, help="a business-scenario directory (YAML) evaluated on --demo-db instead")
    p.add_argument("--demo-db", type=Path, default=DEMO_DB_PATH)
    p.add_argument("--engine", choices=("onnx", "torch"), default=engine)
    p.add_argument("--model-dir", type=Path, default=model_dir)
    p.add_argument("--adapter", type=Path, help="trained weights (any method, models.methods) for --engine torch")
    p.add_argument("--limit", type=int, default=0, help="N questions spread evenly over the dataset (0 = all)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--candidates", type=int, default=0, help="execution-guided decoding: N sampled candidates")
    p.add_argument("--constrained", action="store_true", help="schema-constrained decoding (identifiers must exist)")
    p.add_argument(
        "--no-repair",
        action="store_true",
        help="run the model's SQL without the service's repair of tables used but never read (app.nl2sql.repair)",
    )
    p.add_argument(
        "--vote", action="store_true", help="with --candidates: draw them for every question and vote on results"
    )
    p.add_argument("--glossary", type=Path, help="a glossary YAML put in each prompt as the service does")
    p.add_argument(
        "--glossary-budget",
        type=int,
        default=None,
        help="tokens of glossary lines (default: the service's GLOSSARY_TOKEN_BUDGET, or 400 where that is 0: "
        "0 there keeps the glossary out of the prompt, which would make --glossary a silent no-op)",
    )
    p.add_argument(
        "--enum-values",
        type=int,
        default=get_settings().schema_enum_values,
        help="list every value of short categorical columns in the schema, up to N (default: the service's)",
    )
    p.add_argument("--examples", type=int, default=0, help="K verified examples per question from the other folds")
    p.add_argument("--folds", type=int, default=5, help="folds by question id for --examples (default 5)")
    p.add_argument(
        "--rescore", action="store_true", help="add the lenient reading to a finished run (nothing generated)"
    )
    p.add_argument("--fresh", action="store_true", help="discard earlier results of this run instead of resuming")
    p.add_argument("--out-dir", type=Path, default=out_root, help="where <run>.{jsonl,json,md} go")
    return p


def load_items(a: argparse.Namespace) -> tuple[list[dict], list[dict], str, str]:
    """(the questions to evaluate, every question of the dataset, the dataset, a note on what was left out).
    `--limit N` spreads N over the whole dataset (every database and hardness level), not the first N."""
    missing = 0
    if a.suite:
        if not a.demo_db.exists():
            raise UsageError(f"no demo database at {a.demo_db}: run `make demo-db`")
        items, dataset = suite_items(a.suite, a.demo_db), f"business suite {a.suite}"
    else:
        for path in (a.questions, a.db_root):
            if not path.exists():
                raise UsageError(f"not found: {path}")
        items, missing = spider_items(a.questions, a.db_root, a.tables if a.tables.exists() else None)
        dataset = str(a.questions)
    every = list(items)
    if a.limit and a.limit < len(items):
        items = [items[i * len(items) // a.limit] for i in range(a.limit)]
    if not items:
        raise UsageError("no questions to evaluate")
    note = f" of {len(every)}, spread evenly" if len(items) < len(every) else ""
    note += f"; {missing} skipped: database absent" if missing else ""
    return items, every, dataset, note


def check_options(a: argparse.Namespace) -> None:
    if a.glossary and not a.glossary.is_file():
        raise UsageError(f"no glossary file at {a.glossary}")
    if a.examples < 0 or (a.examples and a.folds < 2):
        raise UsageError("--examples must be 0 or more, with --folds 2 or more")
    if a.vote and not a.candidates:
        raise UsageError("--vote needs --candidates N")
    if a.glossary_budget is not None and a.glossary_budget < 0:
        raise UsageError("--glossary-budget must be 0 or more")


def glossary_budget(a: argparse.Namespace) -> int:
    """The glossary's token budget for this run: as asked, else the service's, else 400 (the service's default of 0
    turns the glossary off, and `--glossary` asks for it on)."""
    if a.glossary_budget is not None:
        return a.glossary_budget
    return get_settings().glossary_token_budget or DEFAULT_GLOSSARY_BUDGET


def business_context(a: argparse.Namespace, suite: list[dict], generator) -> BusinessContext | None:
    """Glossary lines and verified examples for each prompt (`--glossary`, `--examples`), as the service adds them."""
    if not (a.glossary or a.examples):
        return None
    try:
        return BusinessContext.from_args(
            suite, a.glossary, a.examples, a.folds, glossary_budget(a), generator.count_tokens
        )
    except (OSError, ValueError) as exc:  # GlossaryError is a ValueError
        raise UsageError(f"business context: {exc}") from None


def rescore(a: argparse.Namespace) -> int:
    """`--rescore`: add the lenient reading to a finished run's records (the same dataset options as the run) and
    write its summary again; nothing is generated."""
    jsonl, summary_path = a.out_dir / f"{a.run}.jsonl", a.out_dir / f"{a.run}.json"
    if not jsonl.exists() or not summary_path.exists():
        raise UsageError(f"--rescore needs a finished run: {jsonl} and {summary_path}")
    _, every, _, _ = load_items(a)
    by_id = {it["id"]: it for it in every}
    rows = list(read_jsonl(jsonl))
    if any(r["id"] not in by_id or by_id[r["id"]]["question"] != r["question"] for r in rows):
        raise UsageError(f"{jsonl} was not made on these questions: give the run's own --suite/--questions")
    for r in rows:
        if "lenient" not in r:
            r["lenient"] = lenient_again(by_id[r["id"]], r)
    tmp = jsonl.with_suffix(".rescoring")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(jsonl)
    summary = summarize(jsonl, json.loads(summary_path.read_text()))
    summary_path.write_text(json.dumps(summary, indent=2))
    (a.out_dir / f"{a.run}.md").write_text(markdown(summary))
    print(f"{a.run}: EX {summary['ex']}%, lenient {summary['ex_lenient']}%")
    return 0


def evaluation(a: argparse.Namespace) -> int:
    """One evaluation run: predictions streamed to reports/eval/<run>.jsonl (resumed), then the summary."""
    items, every, dataset, note = load_items(a)
    check_options(a)
    from models.generators import make_generator

    generator = make_generator(a.engine, a.model_dir, a.adapter, a.threads)
    context = business_context(a, every, generator)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    out_jsonl = a.out_dir / f"{a.run}.jsonl"
    if a.fresh:
        out_jsonl.unlink(missing_ok=True)
    t0 = time.time()
    run(
        items,
        generator,
        out_jsonl,
        a.batch_size,
        a.max_new_tokens,
        candidates=a.candidates,
        constrained=a.constrained,
        vote=a.vote,
        context=context,
        enum_values=a.enum_values,
        repair=not a.no_repair,
    )
    meta = {
        "run": a.run,
        "dataset": dataset,
        "note": note,
        "engine": a.engine,
        "candidates": a.candidates,
        "vote": a.vote,
        "glossary": str(a.glossary) if a.glossary else None,
        "glossary_budget": glossary_budget(a) if a.glossary else None,
        "examples": a.examples,
        "folds": a.folds,
        "constrained": a.constrained,
        "enum_values": a.enum_values,
        "repair": not a.no_repair,
        "model_id": generator.model_id,
        "wall_s": round(time.time() - t0, 1),
    }
    summary = summarize(out_jsonl, meta)
    (a.out_dir / f"{a.run}.json").write_text(json.dumps(summary, indent=2))
    (a.out_dir / f"{a.run}.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]]([Path(p) for p in argv[1:]])
        a = parser().parse_args(argv)
        return rescore(a) if a.rescore else evaluation(a)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
