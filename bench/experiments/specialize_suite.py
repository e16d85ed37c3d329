"""What a specialize run buys on the business suite: the suite's questions stored as verified pairs of the demo
database, a real `models.specialize` run on them, and the served and the specialized model compared on its held-out
part, each prompted as the service would (demo glossary, the 3 nearest train pairs as earlier turns, value lists,
schema-constrained identifiers, sampled candidates where the greedy answer fails).

    python -m bench.experiments.specialize_suite [--base qwen2.5-coder-1.5b] [--key=value ...]

The split is specialize's own (`held_out`: a hash of each pair's id): `--folds 2` (default) runs it twice, half held
out each way, so every suite question is answered by a model that never trained on it; `--folds 1` once, 20% held
out. Held-out questions are never trained on and never among their own earlier turns; with the suite as the pairs
there is no separate suite to check, so each run reads its held-out part only (`suite=""`) and publishes nothing. Extra `--key=value` pairs go to
specialize (e.g. `--max_steps=2` for a quick look). The application database and the run live under
build/specialize-suite/. Writes reports/eval/specialize-suite-<stamp>.{json,md}; the run's own report goes to
reports/specialize/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from app.core.config import BUILD_DIR, DEMO_DB_PATH

WORK = BUILD_DIR / "specialize-suite"


def store_pairs(querylog_url: str, database_url: str) -> int:
    """The suite's cases as verified pairs and the demo glossary, in a fresh application database."""
    import sqlalchemy as sa

    from app.knowledge import glossary
    from app.knowledge.context import DEMO_GLOSSARY
    from app.knowledge.store import KnowledgeStore, database_key
    from models.scenarios import load_suite

    engine = sa.create_engine(querylog_url)
    try:
        store, key = KnowledgeStore(engine), database_key(database_url)
        store.replace_glossary(key, glossary.parse_yaml(DEMO_GLOSSARY.read_text()), keep=lambda e: False)
        for case in load_suite():
            store.add_example(key, case.question, case.sql, [], "suite", None)
        return len(store.examples(key))
    finally:
        engine.dispose()


FOLDS = {
    1: [("", [])],  # the preset's split: 20% held out
    2: [  # half and half, once each way: every suite question is answered by a model that never trained on it
        ("a", ["--holdout_fraction=0.5", "--heldout_complement=False"]),
        ("b", ["--holdout_fraction=0.5", "--heldout_complement=True"]),
    ],
}


def records(run_dir: Path, name: str) -> list[dict]:
    """One model's answers to a run's held-out questions (`models.evaluate`'s records)."""
    from models.data import read_jsonl

    return list(read_jsonl(run_dir / "eval" / f"{name}_heldout.jsonl"))


def combine(run_dirs: list[Path]) -> dict:
    """Both models over every fold's held-out questions: strict and lenient EX, and which answers changed."""
    cur = [r for d in run_dirs for r in records(d, "current")]
    cand = [r for d in run_dirs for r in records(d, "candidate")]
    by_q = {r["question"]: r["ok"] for r in cur}
    pct = lambda rows, key: round(100 * sum(bool(r.get(key, r["ok"])) for r in rows) / len(rows), 1)  # noqa: E731
    return {
        "n": len(cur),
        "current_ex": pct(cur, "ok"),
        "current_ex_lenient": pct(cur, "lenient"),
        "candidate_ex": pct(cand, "ok"),
        "candidate_ex_lenient": pct(cand, "lenient"),
        "gained": sum(r["ok"] and not by_q[r["question"]] for r in cand),
        "lost": sum(by_q[r["question"]] and not r["ok"] for r in cand),
    }


def markdown(report: dict) -> str:
    runs, total = report["runs"], report["combined"]
    first = runs[0]
    lines = [
        f"# Specialize on the business suite ({report['base']})",
        "",
        f"- the 100 suite questions stored as verified pairs of the demo database; {len(runs)} specialize run(s), "
        "each training on one part and answering the other with both models (`models.specialize`'s own split: a "
        "hash of the pair's id)",
        f"- started from: {first['started_from']}; export: {first['export']}",
        "- both models prompted as served: demo glossary, the 3 nearest train pairs as earlier turns, value lists, "
        "identifiers held to the schema, sampled candidates where the greedy answer fails or is empty",
        f"- machine: {report['machine']}",
        f"- specialize settings over `models/configs/specialize_suite.py`: {' '.join(report.get('settings') or []) or 'none'}",
        "",
        "| run | trained on | held out | steps | train s | peak RSS MB | served EX (lenient) | specialized EX "
        "(lenient) | specialize's verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        cur, cand, t = r["evaluation"]["current"], r["evaluation"]["candidate"], r["train"]
        lines.append(
            f"| {r['run_id']} | {r['pairs']['train']} | {r['pairs']['heldout']} | {t.get('step')} | "
            f"{round(t.get('wall_s') or 0)} | {t.get('peak_rss_mb')} | {cur['heldout_ex']}% "
            f"({cur.get('heldout_ex_lenient')}%) | {cand['heldout_ex']}% ({cand.get('heldout_ex_lenient')}%) | "
            f"{r['verdict']} |"
        )
    lines += [
        "",
        f"**All held-out questions ({total['n']}):** served {total['current_ex']}% (lenient "
        f"{total['current_ex_lenient']}%), specialized {total['candidate_ex']}% (lenient "
        f"{total['candidate_ex_lenient']}%); the specialized model got {total['gained']} right that the served one "
        f"missed and missed {total['lost']} it got right.",
        "",
        f"One question is {100 / max(total['n'], 1):.1f} points here.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="qwen2.5-coder-1.5b")
    p.add_argument("--folds", type=int, choices=sorted(FOLDS), default=2)
    p.add_argument("--only", choices=["a", "b"], help="of the two folds, run this one alone (a quicker comparison)")
    a, extra = p.parse_known_args()
    WORK.mkdir(parents=True, exist_ok=True)
    app_db = WORK / "app.sqlite"
    app_db.unlink(missing_ok=True)
    database_url = f"sqlite:///{DEMO_DB_PATH}"
    # the service's settings for this base (its prompt defaults), read by specialize through get_settings
    os.environ |= {"BASE_MODEL": a.base, "DATABASE_URL": database_url, "QUERYLOG_URL": f"sqlite:///{app_db}"}
    os.environ.setdefault("MODEL_DIR", str(BUILD_DIR / "onnx" / a.base / "int8"))
    if not DEMO_DB_PATH.exists():
        from app.db.demo import build_sqlite

        build_sqlite(DEMO_DB_PATH)
    n = store_pairs(os.environ["QUERYLOG_URL"], database_url)
    print(f"{n} verified pairs stored in {app_db}", flush=True)

    from bench import write_report
    from models import specialize
    from models.machine import cpu, flags_text

    runs, run_dirs = [], []
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    for tag, fold_args in [f for f in FOLDS[a.folds] if not a.only or f[0] == a.only]:
        run_dir = WORK / f"suite-{stamp}{'-fold-' + tag if tag else ''}"  # its report: reports/specialize/<name>.json
        argv = ["models/configs/specialize_suite.py", f"--base={a.base!r}", f"--run_dir={str(run_dir)!r}"]
        rc = specialize.main(argv + fold_args + extra)
        if rc != 0:
            print(f"specialize ended with {rc}; see {run_dir}/log.txt", file=sys.stderr)
            return rc
        runs.append(json.loads((run_dir / "report.json").read_text()))
        run_dirs.append(run_dir)
    info = cpu()
    report = {
        "base": a.base,
        "folds": a.folds,
        "only": a.only,
        "settings": extra,  # specialize keys given on the command line, over the preset
        "machine": f"{info['model']}, {info['cores']} cores ({flags_text(info)})",
        "combined": combine(run_dirs),
        "runs": runs,
    }
    md = write_report(Path("reports/eval"), "specialize-suite", report, markdown(report))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
