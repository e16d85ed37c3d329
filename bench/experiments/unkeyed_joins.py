"""How often answers that join on columns no key links are wrong, from finished evaluation runs (no model needed).

Each run is `RECORDS.jsonl=DB_ROOT` (DB_ROOT/<db_id>/<db_id>.sqlite, Spider's layout) or `RECORDS.jsonl=FILE.sqlite`
(one database for every record: the business suite's demo database). Every prediction and every gold query is checked
with `app.nl2sql.joins.unkeyed_joins` on its database's declared keys; the report counts, per run, the answers with
such a join and how many of them were right (strict EX, and lenient where the run has it), beside the rest.

    python -m bench.experiments.unkeyed_joins \\
        reports/eval/qwen15-served-dev972-int8.jsonl=../shared/data/spider/database \\
        reports/eval/qwen15-base-biz-enum8-gloss800-int8-served.jsonl=build/demo.sqlite
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.nl2sql.joins import KeyLinks, unkeyed_joins
from bench import REPORT_DIR
from models.data import read_jsonl, schema_at, sqlite_path


def database(root: Path, db_id: str) -> Path:
    return root if root.suffix == ".sqlite" else sqlite_path(root, db_id)


def count(records: list[dict], root: Path) -> dict:
    links: dict[Path, KeyLinks] = {}
    out = {"answers": 0, "unkeyed": 0, "unkeyed_right": 0, "rest_right": 0, "gold_unkeyed": 0}
    for r in records:
        path = database(root, r["db_id"])
        if path not in links:
            links[path] = KeyLinks(schema_at(str(path)))
        right = bool(r.get("ok"))
        out["answers"] += 1
        if unkeyed_joins(r.get("pred") or "", links[path]):
            out["unkeyed"] += 1
            out["unkeyed_right"] += right
        else:
            out["rest_right"] += right
        out["gold_unkeyed"] += bool(unkeyed_joins(r["gold"], links[path]))
    return out


def markdown(rows: dict[str, dict]) -> str:
    lines = [
        "# Answers joined on columns no key links (`app.nl2sql.joins`)",
        "",
        "| run | answers | with such a join | of them right | the rest right | gold queries with one |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in rows.items():
        rest = c["answers"] - c["unkeyed"]
        lines.append(
            f"| {name} | {c['answers']} | {c['unkeyed']} | {c['unkeyed_right']} | "
            f"{c['rest_right']} of {rest} | {c['gold_unkeyed']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RECORDS.jsonl=DB_ROOT or RECORDS.jsonl=FILE.sqlite")
    p.add_argument("--out", type=Path, default=REPORT_DIR / "unkeyed-joins")
    a = p.parse_args(argv)
    rows = {}
    for spec in a.runs:
        records, sep, root = spec.partition("=")
        if not sep or not Path(records).is_file() or not Path(root).exists():
            print(f"unkeyed_joins: {spec!r}: expected RECORDS.jsonl=DB_ROOT, both existing", file=sys.stderr)
            return 2
        rows[Path(records).stem] = count(read_jsonl(Path(records)), Path(root))
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()))}
    rows["all"] = total
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
