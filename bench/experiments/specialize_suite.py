"""What a specialize run buys on the business suite: the suite's questions stored as verified pairs of the demo
database, a real `models.specialize` run on them, and the served and the specialized model compared on its held-out
part, each prompted as the service would (demo glossary, the 3 nearest train pairs as earlier turns, value lists,
schema-constrained identifiers, sampled candidates where the greedy answer fails).

    python -m bench.experiments.specialize_suite [--base qwen2.5-coder-1.5b] [--key=value ...]

The split is specialize's own (`held_out`: a hash of each pair's id, 20%), so the held-out questions are never
trained on and never among their own earlier turns; with the suite as the pairs there is no separate suite to check,
so the run reads the held-out part only (`suite=""`) and publishes nothing. Extra `--key=value` pairs go to
specialize (e.g. `--max_steps=2` for a quick look). The application database and the run live under
build/specialize-suite/. Writes reports/eval/specialize-suite-<stamp>.{json,md}; the run's own report goes to
reports/specialize/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def markdown(report: dict, run: dict) -> str:
    ev = run["evaluation"]
    cur, cand = ev["current"], ev["candidate"]
    t = run["train"]
    return "\n".join(
        [
            f"# Specialize on the business suite ({run['base']})",
            "",
            f"- {run['pairs']['train']} suite questions stored as verified pairs and trained on; "
            f"{run['pairs']['heldout']} held out (specialize's hash split), answered by both models",
            f"- started from: {report['started_from']}; export: {report['export']}",
            f"- training: {t.get('step')} steps, {t.get('tokens_per_s')} tokens/s, {t.get('wall_s')} s, "
            f"peak RSS {t.get('peak_rss_mb')} MB; run wall {run['wall_s']} s",
            "- both prompted as served: demo glossary, the 3 nearest train pairs as earlier turns, value lists, "
            "identifiers held to the schema, sampled candidates where the greedy answer fails or is empty",
            f"- machine: {report['machine']}",
            "",
            "| model | held-out EX | lenient EX |",
            "|---|---:|---:|",
            f"| {cur['model_id']} (served) | {cur['heldout_ex']}% | {cur.get('heldout_ex_lenient')}% |",
            f"| {cand['model_id']} | {cand['heldout_ex']}% | {cand.get('heldout_ex_lenient')}% |",
            "",
            f"Verdict by specialize's rule: {run['verdict']} ({run['reason']}).",
            "",
            f"Held-out questions: {run['pairs']['heldout']} of 100, so one question is "
            f"{100 / max(run['pairs']['heldout'], 1):.0f} points: read the difference with that in mind.",
            "",
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="qwen2.5-coder-1.5b")
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

    run_dir = WORK / "run"
    argv = ["models/configs/specialize_suite.py", f"--base={a.base!r}", f"--run_dir={str(run_dir)!r}", *extra]
    rc = specialize.main(argv)
    if rc != 0:
        print(f"specialize ended with {rc}; see {run_dir}/log.txt", file=sys.stderr)
        return rc
    run = json.loads((run_dir / "report.json").read_text())
    report = {
        "base": a.base,
        "started_from": run["started_from"],
        "export": run["export"],
        "machine": f"{cpu()} ({flags_text()})",
        "run": run,
    }
    md = write_report(Path("reports/eval"), "specialize-suite", report, markdown(report, run))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
