"""Spider-format datasets: loading, the by-database validation hold-out, schema prompts and tokenization.

A dataset is a questions JSON (`db_id`, `question`, `query`) plus a database root holding
`<db_id>/<db_id>.sqlite`. Schemas are read from the SQLite files with the same introspection the service uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

from app.db.schema import Schema, introspect
from app.nl2sql.prompt import build_followup, build_prompt, build_target, format_schema, normalize_sql


def _spider_dir() -> Path:
    """`SPIDER_DIR` if set, else the workplace's shared copy beside the checkout (or at /work/shared)."""
    if os.environ.get("SPIDER_DIR"):
        return Path(os.environ["SPIDER_DIR"])
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data" / "spider", Path("/work/shared/data/spider")]
    return next((c for c in candidates if c.exists()), candidates[0])


SPIDER_DIR = _spider_dir()
VAL_FRACTION = 0.05


@dataclass(frozen=True)
class Pair:
    db_id: str
    question: str
    sql: str
    split: str = ""


def sqlite_path(db_root: Path, db_id: str) -> Path:
    return Path(db_root) / db_id / f"{db_id}.sqlite"


def readonly_engine(path: Path) -> sa.Engine:
    """A read-only SQLite engine (URI `mode=ro`): nothing the model writes can change the file."""
    return sa.create_engine(f"sqlite:///file:{Path(path).resolve()}?mode=ro&uri=true")


@lru_cache(maxsize=512)
def schema_at(path: str, sample_values: int = 0, enum_values: int = 0) -> Schema:
    """The schema of one SQLite file, read with the service's introspection."""
    engine = readonly_engine(Path(path))
    try:
        return introspect(engine, sample_values=sample_values, enum_values=enum_values)
    finally:
        engine.dispose()


def schema_text(db_root: str, db_id: str, sample_values: int = 0) -> str:
    return format_schema(schema_at(str(sqlite_path(Path(db_root), db_id)), sample_values))


def load_pairs(path: Path, db_root: Path, split: str = "") -> tuple[list[Pair], int]:
    """Pairs whose database exists, and how many were dropped because it does not."""
    rows = json.loads(Path(path).read_text())
    kept = [
        Pair(r["db_id"], r["question"], r["query"], split) for r in rows if sqlite_path(db_root, r["db_id"]).exists()
    ]
    return kept, len(rows) - len(kept)


def is_validation_db(db_id: str) -> bool:
    """Stable ~5% of databases by hash: the hold-out never shares a schema with training."""
    h = int(hashlib.sha1(db_id.encode()).hexdigest()[:8], 16)
    return (h % 1000) < VAL_FRACTION * 1000


def spider_splits(spider_dir: Path = SPIDER_DIR) -> dict[str, list[Pair]]:
    db_root = spider_dir / "database"
    train: list[Pair] = []
    for name in ("train_spider_lite.json", "train_others_lite.json"):
        train += load_pairs(spider_dir / name, db_root)[0]
    dev, _ = load_pairs(spider_dir / "dev.json", db_root, "dev")
    return {
        "train": [Pair(p.db_id, p.question, p.sql, "train") for p in train if not is_validation_db(p.db_id)],
        "val": [Pair(p.db_id, p.question, p.sql, "val") for p in train if is_validation_db(p.db_id)],
        "dev": dev,
    }


def write_sample(out_dir: Path, tokenizer, sizes: dict[str, int], seed: int = 0, max_sql_chars: int = 80) -> Path:
    """`sizes[split]` random Spider pairs of each split with short SQL, tokenized into out_dir/<split>.jsonl: the
    handful of examples the tiny presets' tests and measurements train on."""
    splits, db_root = spider_splits(), SPIDER_DIR / "database"
    rng = random.Random(seed)
    for name, n in sizes.items():
        pairs = [p for p in splits[name] if len(p.sql) < max_sql_chars]
        write_jsonl(out_dir / f"{name}.jsonl", [encode(tokenizer, p, db_root) for p in rng.sample(pairs, n)])
    return out_dir


def encode(tokenizer, pair: Pair, db_root: Path, sample_values: int = 0) -> dict:
    """Token ids of prompt + target and where the target starts (loss is taken on the target only)."""
    prompt = build_prompt(schema_text(str(db_root), pair.db_id, sample_values), pair.question)
    p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    t_ids = tokenizer(build_target(pair.sql), add_special_tokens=False).input_ids
    return {"ids": p_ids + t_ids, "start": len(p_ids), "db_id": pair.db_id}


def sql_key(sql: str) -> str:
    """What makes two labels the same query for packing: case, spacing and quote style ignored."""
    s = normalize_sql(sql).lower().replace('"', "'")
    return re.sub(r"\s*([(),=<>])\s*", r"\1", s)


def _spread(pairs: list[Pair], rng: random.Random) -> list[Pair]:
    """A shuffled order in which questions with the same SQL are as far apart as the database allows: first one
    question of every distinct query, then a second of each, and so on."""
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(sql_key(p.sql), []).append(p)
    layers: list[list[Pair]] = []
    for g in groups.values():
        rng.shuffle(g)
        for i, p in enumerate(g):
            if i == len(layers):
                layers.append([])
            layers[i].append(p)
    order: list[Pair] = []
    for layer in layers:
        rng.shuffle(layer)
        order += layer
    return order


def pack(
    tokenizer,
    pairs: list[Pair],
    db_root: Path,
    max_len: int,
    seed: int = 0,
    sample_values: int = 0,
    max_turns: int = 0,
    schema_of: Callable[[str], str] | None = None,
    shared_prefix: bool = False,
    examples: Sequence = (),
) -> list[dict]:
    """In-context packing: one sequence per chunk of a database's questions, the schema written once.

    A sequence is the first example's prompt (system, schema, question) and SQL, then `Question: …` / SQL turns of
    the same database (`build_followup`) until `max_len` tokens. Loss is taken on every SQL turn (`spans`). The
    schema is most of each single-example prompt, so this cuts training tokens several-fold, and it teaches the
    model to use earlier question/SQL pairs of the same database (the service's verified examples).

    No sequence holds two questions with the same SQL. Spider asks most queries twice in different words; packed
    together, the second turn is learned as "copy the earlier SQL", and a model trained so wrote the joins of
    remembered queries into answers that needed none. Twins are spread apart (`_spread`) and a twin of a turn
    already in the sequence starts a new one.

    `max_turns` > 0 caps each sequence at a number of turns drawn uniformly from 1..max_turns, so first turns (the
    only kind a question without verified examples gets) are a larger share, at some token cost.

    `schema_of(db_id)` gives the schema text instead of reading `db_root` (a live database, as the service shows it).

    `examples`: format examples in each first turn's system text (`build_prompt`), for a model served few-shot.

    `shared_prefix` packs differently (`_pack_shared`): every question is a first turn that sees the schema and
    itself only, as a question without verified examples is asked in service.
    """
    rng = random.Random(seed)
    by_db: dict[str, list[Pair]] = {}
    for p in pairs:
        by_db.setdefault(p.db_id, []).append(p)
    rows = []
    for db_id in sorted(by_db):
        schema = schema_of(db_id) if schema_of else schema_text(str(db_root), db_id, sample_values)
        if shared_prefix:
            rows += _pack_shared(tokenizer, _spread(by_db[db_id], rng), schema, db_id, max_len)
            continue
        ids: list[int] = []
        spans: list[list[int]] = []
        seen: set[str] = set()
        turns = rng.randint(1, max_turns) if max_turns else 0
        for p in _spread(by_db[db_id], rng):
            key = sql_key(p.sql)
            t_ids = tokenizer(build_target(p.sql), add_special_tokens=False).input_ids
            follow = tokenizer(build_followup(p.question), add_special_tokens=False).input_ids if ids else None
            full = follow is not None and (
                len(ids) + len(follow) + len(t_ids) > max_len or len(spans) == turns or key in seen
            )
            if full:  # start a new sequence
                rows.append({"ids": ids, "spans": spans, "db_id": db_id})
                ids, spans, follow, seen = [], [], None, set()
                turns = rng.randint(1, max_turns) if max_turns else 0
            h_ids = (
                follow
                if follow is not None
                else tokenizer(build_prompt(schema, p.question, examples), add_special_tokens=False).input_ids
            )
            if len(h_ids) + len(t_ids) > max_len:
                continue
            spans.append([len(ids) + len(h_ids), len(ids) + len(h_ids) + len(t_ids)])
            ids = ids + h_ids + t_ids
            seen.add(key)
        if ids:
            rows.append({"ids": ids, "spans": spans, "db_id": db_id})
    return rows


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _pack_shared(tokenizer, pairs: list[Pair], schema: str, db_id: str, max_len: int) -> list[dict]:
    """Shared-prefix packing: the tokens all of a database's prompts begin with (system and schema) once, then one
    segment per question (the rest of its prompt and its SQL).

    `segments` lists each segment's [start, end); training masks attention so that a segment sees the prefix and
    itself only, and numbers its positions on from the prefix (`models.train.attention_layout`). Each answer is
    then learned exactly as the single-example prompt would give it, a first turn, at the cost of a packed sequence.
    Questions with the same SQL may share a sequence: they cannot see each other.
    """
    prompts = [tokenizer(build_prompt(schema, p.question), add_special_tokens=False).input_ids for p in pairs]
    targets = [tokenizer(build_target(p.sql), add_special_tokens=False).input_ids for p in pairs]
    if not prompts:
        return []
    # every segment keeps at least one prompt token: its first answer token is predicted from inside the segment
    n = min(min(_common_prefix(prompts[0], x) for x in prompts), min(len(x) for x in prompts) - 1)
    prefix = prompts[0][:n]
    rows: list[dict] = []
    ids: list[int] = []
    spans: list[list[int]] = []
    segments: list[list[int]] = []
    for p_ids, t_ids in zip(prompts, targets, strict=True):
        seg = p_ids[n:] + t_ids
        if n + len(seg) > max_len:
            continue
        if ids and len(ids) + len(seg) > max_len:
            rows.append({"ids": ids, "spans": spans, "segments": segments, "db_id": db_id})
            ids, spans, segments = [], [], []
        if not ids:
            ids = list(prefix)
        start = len(ids)
        segments.append([start, start + len(seg)])
        spans.append([start + len(p_ids) - n, start + len(seg)])
        ids = ids + seg
    if ids:
        rows.append({"ids": ids, "spans": spans, "segments": segments, "db_id": db_id})
    return rows


def target_spans(row: dict) -> list[list[int]]:
    """Where the loss is taken: packed rows list their SQL turns; single examples are prompt then target."""
    return row["spans"] if "spans" in row else [[row["start"], len(row["ids"])]]


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict]:
    with Path(path).open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
