"""Stage 1, prepare: Spider → tokenized train / val / dev JSONL under build/data/<base>, plus the exploration report.

python -m models.prepare                      # defaults below, tokenized for the base named by BASE_MODEL
python -m models.prepare --sample-values 3    # schema prompts with 3 example values per text column
python -m models.prepare --limit 64           # the first 64 examples of each split (a quick trial of the workflow)

Besides one row per example it writes `packed.jsonl`: Spider train and the synthetic demo pairs packed per
database (`models.data.pack`, sequences of at most `pack_len` tokens), what the Qwen presets train on, and
`packed_shared.jsonl`: the same pairs packed with a shared prefix (each question a first turn, masked apart).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models.base import load_tokenizer
from models.bases import get_base
from models.data import SPIDER_DIR, encode, pack, spider_splits, write_jsonl

# defaults
spider_dir = SPIDER_DIR
out_dir = get_base().data_dir
pack_len = 1024  # tokens per packed sequence
sample_values = 0
synth_n = (
    800  # pairs in synth_demo.jsonl (0 = none): templated pairs on the demo database, never the suite's structures
)
max_len = 512  # examples longer than this are dropped from train/val (counted in meta.json)


def write_synth(
    tok, out_dir: Path, sample_values: int, max_len: int, count: int
) -> tuple[dict, list[dict], list[dict]]:
    """`count` synthetic pairs on the demo database, encoded with the same prompt builder as Spider; also their
    packing."""
    from app.db.demo import build_sqlite
    from models.data import Pair
    from models.synth import generate_pairs

    db_root = out_dir / "demo_db"
    build_sqlite(db_root / "demo" / "demo.sqlite")
    pairs = [Pair("demo", r["question"], r["query"], "train") for r in generate_pairs(count)]
    rows = [encode(tok, pr, db_root, sample_values) | {"question": pr.question, "sql": pr.sql} for pr in pairs]
    rows = [r for r in rows if len(r["ids"]) <= max_len]
    n = write_jsonl(out_dir / "synth_demo.jsonl", rows)
    print(f"synth {n:6d} examples on the demo database")
    packed = pack(tok, pairs, db_root, pack_len, sample_values=sample_values)
    shared = pack(tok, pairs, db_root, pack_len, sample_values=sample_values, shared_prefix=True)
    return {"examples": n, "databases": 1, "tokens": sum(len(r["ids"]) for r in rows)}, packed, shared


def main() -> None:
    p = argparse.ArgumentParser(description="Tokenize Spider for training")
    p.add_argument("--spider-dir", type=Path, default=spider_dir)
    p.add_argument("--out-dir", type=Path, default=out_dir)
    p.add_argument("--sample-values", type=int, default=sample_values)
    p.add_argument("--max-len", type=int, default=max_len)
    p.add_argument("--no-synth", action="store_true")
    p.add_argument("--no-report", action="store_true")
    p.add_argument(
        "--limit", type=int, default=0, help="the first N examples of each split and N synthetic pairs (0: all)"
    )
    a = p.parse_args()
    if a.limit < 0:
        p.error(f"--limit {a.limit}: a number of examples, 0 for all")

    t0 = time.time()
    tok = load_tokenizer()
    splits = spider_splits(a.spider_dir)
    if a.limit:
        splits = {name: pairs[: a.limit] for name, pairs in splits.items()}
    db_root = a.spider_dir / "database"
    meta = {"spider_dir": str(a.spider_dir), "sample_values": a.sample_values, "max_len": a.max_len, "splits": {}}
    packed = pack(tok, splits["train"], db_root, pack_len, sample_values=a.sample_values)
    shared = pack(tok, splits["train"], db_root, pack_len, sample_values=a.sample_values, shared_prefix=True)
    for name, pairs in splits.items():
        rows = [encode(tok, pr, db_root, a.sample_values) | {"question": pr.question, "sql": pr.sql} for pr in pairs]
        too_long = [r for r in rows if len(r["ids"]) > a.max_len]
        if name != "dev":
            rows = [r for r in rows if len(r["ids"]) <= a.max_len]
        n = write_jsonl(a.out_dir / f"{name}.jsonl", rows)
        tokens = sum(len(r["ids"]) for r in rows)
        meta["splits"][name] = {
            "examples": n,
            "databases": len({r["db_id"] for r in rows}),
            "tokens": tokens,
            "target_tokens": sum(len(r["ids"]) - r["start"] for r in rows),
            "over_max_len": len(too_long),
        }
        print(f"{name:5s} {n:6d} examples {tokens:9d} tokens ({len(too_long)} over {a.max_len})")
    if synth_n and not a.no_synth:
        meta["splits"]["synth_demo"], synth_packed, synth_shared = write_synth(
            tok, a.out_dir, a.sample_values, a.max_len, min(a.limit or synth_n, synth_n)
        )
        packed += synth_packed
        shared += synth_shared
    for name, rows in (("packed", packed), ("packed_shared", shared)):
        write_jsonl(a.out_dir / f"{name}.jsonl", rows)
        meta["splits"][name] = {
            "sequences": len(rows),
            "examples": sum(len(r["spans"]) for r in rows),
            "tokens": sum(len(r["ids"]) for r in rows),
            "target_tokens": sum(e - s for r in rows for s, e in r["spans"]),
        }
        print(f"{name} {len(rows)} sequences, {meta['splits'][name]['tokens']} tokens")
    meta["limit"] = a.limit
    (a.out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    if not a.no_report:
        from models.report import write_data_report

        write_data_report(splits, a.out_dir, Path("reports"))
    print(f"prepared in {time.time() - t0:.0f}s → {a.out_dir}")


if __name__ == "__main__":
    main()
