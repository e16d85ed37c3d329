"""Specialize: fine-tune the served adapter on one database's verified question/SQL pairs, publish it only if better.

    python -m models.specialize models/configs/specialize.py                  # the served base, DATABASE_URL's pairs
    python -m models.specialize models/configs/specialize_tiny.py --max_steps=4   # presets and --key=value overrides

1. read the verified pairs of the database (`DATABASE_URL`) from the application database (`QUERYLOG_URL`) and split
   them, stably by id (a hash), into train and a held-out part; a train pair that asks a business-suite question is
   dropped, so the suite stays unseen;
2. pack the train part with `models.data.pack` (the conversation format the service prompts with: the schema as the
   service shows it, the glossary under it, earlier pairs as turns), mixed with a replay sample of the general
   training data (`build/data/<base>/packed.jsonl`, when present), so the model does not forget Spider;
3. train from the base's committed adapter (`models.train`, `init_adapter`: its weights, a fresh optimizer/schedule);
   a base served few-shot (the 1.5B) has none: a fresh LoRA (`fresh_*`) on its top layers, the rest cached;
4. publish the adapter (row-wise int8) and export it to ONNX (`models.export.build`) into a temp directory; a fresh
   LoRA is instead patched into a copy of the base's own export (`models.patch`: the adapted MatMuls' weights
   rewritten, no re-trace), which is how the 1.5B specializes beside a live server (its re-export peaks at ~21 GB);
5. evaluate the candidate and the current model (`current_model_dir`, what the server serves) with
   `models.evaluate` on the same questions: the held-out pairs (prompted as the service would: glossary and the k
   nearest train pairs) and the business suite;
6. the rule (`decide`): publish when the candidate is better on the held-out pairs (strictly more right) and not
   worse on the business suite (at most `suite_tolerance` points below). Then the temp directory is renamed to
   `<exports_dir>/<base>/specialized-<timestamp>` (one atomic rename: a server never sees half a model); else it is
   deleted. Either way a JSON report goes to `reports_dir` (and the run directory).

Progress: a text bar in the log (`log.txt` in the run directory, which the server tails) and `status.json` beside
it (stage, percent, verdict). One run per base at a time (a lock file beside the run directories). Not resumable.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from app.knowledge.context import DEMO_GLOSSARY
from models import presets
from models.presets import config_keys
from models.scenarios import SCENARIO_DIR, load_suite

# ---------------------------------------------------------------- defaults (override by preset / --key=value)
base = ""  # registry name (models.bases); "" = BASE_MODEL
database_url = ""  # whose verified pairs; "" = DATABASE_URL (SQLite: the held-out pairs are executed to judge them)
querylog_url = ""  # the application database holding them; "" = QUERYLOG_URL
current_model_dir = ""  # the model to beat; "" = MODEL_DIR
exports_dir = ""  # "" = MODEL_EXPORTS_DIR (build/onnx): published to <exports_dir>/<base>/specialized-<timestamp>
run_dir = ""  # log, status, data, training run; "" = build/specialize/<base>/<timestamp>
reports_dir = "reports/specialize"  # the JSON report (also in run_dir); "" = run_dir only
init_adapter = ""  # "" = the base's committed adapter (models/adapters/<adapter>), else a fresh LoRA (below); "fresh"
fresh_lora_r = 16  # a fresh LoRA (a base without an adapter): rank, alpha, how many top layers, which projections
fresh_lora_alpha = 32
fresh_train_layers = 4
fresh_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
replay_file = ""  # "" = build/data/<base>/packed.jsonl; a base with the same tokenizer's data serves as well
holdout_fraction = 0.2  # of the pairs, by a hash of their id: the same pair stays on its side as pairs are added
heldout_complement = False  # hold out the pairs the split would train on, and train on the others
min_pairs = 20
min_holdout = 4
replay_ratio = 1.0  # replay rows per specialized row
max_len = 1024
epochs = 3.0
val_pairs = 32  # train pairs the run reports its fit on (0 = all; each costs a forward pass of the frozen layers)
max_steps = 0  # 0 = from epochs
lr = 2e-4
warmup_steps = 5
batch_tokens = 4096
threads = 0  # torch and onnxruntime threads; 0 = their defaults (OMP_NUM_THREADS, ORT_THREADS, else all cores)
autocast = "auto"  # "bf16" (see models/train.py), "" (fp32), or "auto": bf16 where the CPU has AVX512-BF16 or AMX
examples_k = 3  # held-out questions are prompted with the k nearest train pairs, as the service would
suite = str(SCENARIO_DIR)  # business suite, on the demo database; "" = none (the pairs are the suite's own questions:
# a measurement of what specializing on a suite split buys on its other part; the rule then reads the held-out only)
suite_limit = 0  # 0 = every case; else N spread evenly (the same N for both models)
suite_glossary = str(DEMO_GLOSSARY)  # the suite is prompted with the demo glossary, as the service does
suite_tolerance = 0.0  # percentage points the suite may drop
publish = "if_better"  # if_better | always (the comparison is still reported) | never
bits = 8
eval_batch_size = 8
seed = 1337
# ---------------------------------------------------------------------------------------------------------------
CONFIG_KEYS = config_keys(globals())
STAGES = {"read": (0, 5), "train": (5, 50), "export": (50, 70), "evaluate": (70, 99), "publish": (99, 100)}


class Refused(Exception):
    """The run cannot start or go on (too few pairs, another run, a bad setting); the message is for the operator."""


def configure(argv: list[str]) -> dict:
    """Presets and --key=value overrides (`models.presets`) into this module's defaults."""
    try:
        return presets.configure(argv, globals(), CONFIG_KEYS)
    except presets.PresetError as exc:
        raise Refused(str(exc)) from None


class Progress:
    """A text progress bar in the log and status.json for the server (written atomically: it polls it)."""

    def __init__(self, run_dir: Path, run_id: str):
        self.path, self.status = run_dir / "status.json", {"run_id": run_id, "state": "running", "percent": 0}
        self.status["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self._last = (None, -1)

    def write(self, **fields) -> None:
        self.status |= fields
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, indent=2))
        tmp.replace(self.path)

    def stage(self, name: str, done: int = 0, total: int = 1, note: str = "") -> None:
        lo, hi = STAGES[name]
        pct = int(lo + (hi - lo) * min(done, total) / max(total, 1))
        if (name, pct) == self._last:
            return
        self._last = (name, pct)
        bar = "#" * (pct // 5) + "-" * (20 - pct // 5)
        print(f"[{bar}] {pct:3d}% {name} {done}/{total} {note}".rstrip(), flush=True)
        self.write(stage=name, percent=pct, message=note or name)


def training_precision(setting: str) -> str:
    """The training precision: "auto" is bf16 where the CPU multiplies bf16 natively (~4x fp32 on the Xeon here;
    emulated elsewhere, and slower than fp32)."""
    if setting != "auto":
        return setting
    from models.machine import cpu

    flags = cpu()["flags"]
    return "bf16" if flags.get("avx512_bf16") or flags.get("amx_bf16") else ""


def held_out(example_id: int, fraction: float) -> bool:
    """Stable by id: a pair's side never changes as pairs are added (a hash, not every k-th id)."""
    return int(hashlib.sha1(str(example_id).encode()).hexdigest()[:8], 16) % 1000 < fraction * 1000


def decide(cand: dict, cur: dict, tolerance: float = 0.0) -> tuple[bool, str]:
    """The publish rule: strictly better on the held-out pairs, and on the business suite not worse than
    `tolerance` points. (Better on both passes it too.) Returns (publish?, the reason in words)."""
    h_c, h_0, s_c, s_0 = cand["heldout_ex"], cur["heldout_ex"], cand.get("suite_ex"), cur.get("suite_ex")
    if h_c <= h_0:
        return False, f"not better on the held-out pairs ({h_c}% vs {h_0}%)"
    if s_c is None or s_0 is None:
        return True, f"better on the held-out pairs ({h_c}% vs {h_0}%); no business suite"
    if s_c < s_0 - tolerance:
        return False, f"worse on the business suite ({s_c}% vs {s_0}%, tolerance {tolerance} points)"
    return True, f"better on the held-out pairs ({h_c}% vs {h_0}%), suite {s_c}% vs {s_0}%"


class TrainPoolContext:
    """What the service would put in a held-out question's prompt: the glossary (as selected for the question) and
    its k nearest train pairs as earlier turns. The same for both models (`models.evaluate.run`'s `context`)."""

    def __init__(self, train: list[dict], entries, k: int, budget: int, count_tokens):
        from app.knowledge.examples import ExampleIndex

        self.train, self.entries, self.k, self.budget, self.count = train, entries, k, budget, count_tokens
        self.index = ExampleIndex([p["question"] for p in train])

    def for_item(self, item: dict) -> tuple[list[tuple[str, str]], str, dict]:
        from app.knowledge import glossary

        chosen = glossary.select(self.entries, item["question"], self.budget, self.count) if self.entries else []
        picked = [self.train[i] for i in self.index.nearest(item["question"], self.k)]
        used = {"examples": [p["id"] for p in picked], "glossary": [e.name for e in chosen]}
        return [(p["question"], p["sql"]) for p in picked], glossary.format_entries(chosen), used


def acquire_lock(path: Path) -> None:
    """One run per base: the lock holds the pid; a lock whose process is gone is taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale
                continue
            except PermissionError:
                pass
            raise Refused(f"another specialize run is in progress (pid {pid}, lock {path})") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise Refused(f"cannot take the lock {path}")


def read_pairs(cfg: dict, settings) -> tuple[list[dict], list, str]:
    import sqlalchemy as sa

    from app.knowledge.store import KnowledgeStore, database_key

    engine = sa.create_engine(cfg["querylog_url"])
    try:
        store = KnowledgeStore(engine)
        key = database_key(cfg["database_url"])
        return store.examples(key), store.glossary(key), key
    finally:
        engine.dispose()


def sqlite_file(url: str) -> Path:
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        raise Refused(
            f"specialize judges held-out pairs by running them on SQLite; {u.get_backend_name()} is not supported yet"
        )
    return Path(u.database).resolve()


def lora_shape(adapter: Path, base_dir: Path) -> dict:
    """The training keys that make the run's LoRA the adapter's own shape (so its weights load)."""
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    n_layers = json.loads((base_dir / "config.json").read_text())["num_hidden_layers"]
    layers = acfg.get("layers_to_transform") or list(range(n_layers))
    return {
        "lora_r": acfg["r"],
        "lora_alpha": acfg["lora_alpha"],
        "lora_dropout": acfg.get("lora_dropout", 0.0),
        "target_modules": sorted(acfg["target_modules"]),
        "train_layers": n_layers - min(layers),
    }


def prepare(cfg: dict, spec, pairs: list[dict], entries, data_dir: Path, settings, examples=()) -> dict:
    """Tokenized training data in data_dir: the packed train pairs, a replay sample, and val (the train pairs one by
    one, which the run reports as its fit). `examples`: the few-shot format examples the model is prompted with (a
    fresh LoRA over a few-shot base keeps them)."""
    import sqlalchemy as sa

    from app.db.schema import introspect
    from app.knowledge import glossary
    from app.nl2sql.prompt import build_prompt, build_target, format_schema
    from models.base import load_tokenizer
    from models.data import Pair, pack, read_jsonl, write_jsonl

    tok = load_tokenizer(spec.model_dir)
    engine = sa.create_engine(cfg["database_url"])
    try:
        schema = format_schema(
            introspect(engine, sample_values=settings.schema_sample_values, enum_values=settings.schema_enum_values)
        )
    finally:
        engine.dispose()
    count = lambda s: len(tok(s, add_special_tokens=False).input_ids)  # noqa: E731
    # The glossary lines the service writes under the schema when they all fit its budget (past it, it picks per
    # question, which one packed sequence cannot follow: then none).
    notes = (
        glossary.format_entries(entries)
        if entries and count(glossary.format_entries(entries)) <= (settings.glossary_token_budget)
        else ""
    )
    schema_text = f"{schema}\n{notes}" if notes else schema
    db_pairs = [Pair("db", p["question"], p["sql"]) for p in pairs]
    packed = pack(tok, db_pairs, Path("."), cfg["max_len"], seed=cfg["seed"], schema_of=lambda _: schema_text,
                  examples=examples)  # fmt: skip
    if not packed:
        raise Refused(f"no train pair fits in {cfg['max_len']} tokens with the schema")
    write_jsonl(data_dir / "specialize.jsonl", packed)
    files = ["specialize.jsonl"]
    replay_src = Path(cfg["replay_file"]) if cfg.get("replay_file") else spec.data_dir / "packed.jsonl"
    n_replay = 0
    if replay_src.exists() and cfg["replay_ratio"] > 0:
        rows = [r for r in read_jsonl(replay_src) if len(r["ids"]) <= cfg["max_len"]]
        n_replay = min(len(rows), max(1, round(cfg["replay_ratio"] * len(packed))))
        if n_replay:  # train.py caches each file's hidden states: an empty file has none to cache
            write_jsonl(data_dir / "replay.jsonl", random.Random(cfg["seed"]).sample(rows, n_replay))
            files.append("replay.jsonl")
    val = []
    for p in db_pairs:
        p_ids = tok(build_prompt(schema_text, p.question, examples), add_special_tokens=False).input_ids
        t_ids = tok(build_target(p.sql), add_special_tokens=False).input_ids
        if len(p_ids) + len(t_ids) <= cfg["max_len"]:
            val.append({"ids": p_ids + t_ids, "start": len(p_ids), "db_id": "db"})
    write_jsonl(data_dir / "val.jsonl", val)
    return {
        "train_files": files,
        "packed_sequences": len(packed),
        "replay_sequences": n_replay,
        "replay_source": str(replay_src) if n_replay else None,
        "glossary_in_schema": bool(notes),
    }


def evaluate_pair(cfg: dict, run_dir: Path, gens: dict, heldout: list[dict], train: list[dict], entries, db_path,
                  progress: Progress, settings) -> dict:  # fmt: skip
    """EX of every generator on the held-out pairs and the business suite: the same questions for all."""
    from app.core.config import DEMO_DB_PATH
    from app.knowledge import glossary
    from models import evaluate
    from models.context import BusinessContext

    demo = DEMO_DB_PATH  # the suite's gold SQL expects the demo database (seed 0)
    if not demo.exists():
        from app.db.demo import build_sqlite

        build_sqlite(demo)
    h_items = [
        {"id": p["id"], "db_id": "db", "db_path": str(db_path), "question": p["question"], "gold": p["sql"],
         "group": "held-out"}
        for p in heldout
    ]  # fmt: skip
    s_all = evaluate.suite_items(Path(cfg["suite"]), demo) if cfg["suite"] else []
    n = cfg["suite_limit"]
    s_items = [s_all[i * len(s_all) // n] for i in range(n)] if n and n < len(s_all) else s_all
    suite_entries = glossary.parse_yaml(Path(cfg["suite_glossary"]).read_text()) if cfg["suite_glossary"] else []
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = ("heldout", "suite") if s_items else ("heldout",)
    results, jobs = {}, [(name, part) for name in gens for part in parts]
    for i, (name, part) in enumerate(jobs):
        gen = gens[name]
        progress.stage(
            "evaluate",
            i,
            len(jobs),
            f"{name} on the {part} ({len(h_items if part == 'heldout' else s_items)} questions)",
        )
        count = gen.count_tokens
        if part == "heldout":
            items = h_items
            ctx = TrainPoolContext(train, entries, cfg["examples_k"], settings.glossary_token_budget, count)
        else:
            items = s_items
            ctx = (
                BusinessContext(s_all, suite_entries, 0, 5, settings.glossary_token_budget, count)
                if suite_entries
                else None
            )
        out = out_dir / f"{name}_{part}.jsonl"
        out.unlink(missing_ok=True)
        # as the service answers: its schema text (value samples, value lists), identifiers held to the schema,
        # sampled candidates where the greedy answer fails or is empty
        evaluate.run(items, gen, out, cfg["eval_batch_size"], context=ctx, sample_values=settings.schema_sample_values,
                     enum_values=settings.schema_enum_values, constrained=settings.schema_constrained,
                     candidates=settings.exec_guided_candidates)  # fmt: skip
        s = evaluate.summarize(out, {"run": f"{name}_{part}", "model_id": gen.model_id})
        results.setdefault(name, {"model_id": gen.model_id})[f"{part}_ex"] = s["ex"]
        results[name][f"{part}_n"] = s["n"]
        results[name][f"{part}_ex_lenient"] = s["ex_lenient"]
        results[name][f"{part}_categories"] = s["categories"]
    progress.stage("evaluate", len(jobs), len(jobs))
    return results


def fill_defaults(cfg: dict, settings):
    """The registry base; every setting left empty filled from the service's (what it serves, where it publishes)."""
    from models.bases import BaseModelError, get_base

    try:
        spec = get_base(cfg["base"] or None)
    except BaseModelError as exc:
        raise Refused(str(exc)) from None
    cfg["base"] = spec.name
    cfg["database_url"] = cfg["database_url"] or settings.database_url
    cfg["querylog_url"] = cfg["querylog_url"] or settings.querylog_url
    cfg["current_model_dir"] = cfg["current_model_dir"] or str(settings.model_dir)
    cfg["exports_dir"] = cfg["exports_dir"] or str(settings.model_exports_dir)
    # a missing adapter named by hand is an error, not a reason for a fresh LoRA
    cfg["init_adapter_given"] = bool(cfg["init_adapter"])
    cfg["init_adapter"] = cfg["init_adapter"] or str(spec.adapter_dir)
    if cfg["publish"] not in ("if_better", "always", "never"):
        raise Refused(f"publish must be if_better, always or never, not {cfg['publish']!r}")
    return spec


def split_pairs(cfg: dict, pairs: list[dict]) -> tuple[list[dict], list[dict], int]:
    """(train, held out, how many train pairs were dropped for asking a business-suite question)."""
    from models.synth import normalize_question

    # the complement: the other fold of a two-fold measurement (holdout_fraction 0.5, run once each way)
    side = lambda p: held_out(p["id"], cfg["holdout_fraction"]) != cfg["heldout_complement"]  # noqa: E731
    heldout = [p for p in pairs if side(p)]
    suite_q = {normalize_question(c.question) for c in load_suite(Path(cfg["suite"]))} if cfg["suite"] else set()
    train_all = [p for p in pairs if not side(p)]
    train = [p for p in train_all if normalize_question(p["question"]) not in suite_q]
    return train, heldout, len(train_all) - len(train)


class SpecializeRun:
    """One run's settings, folders and progress; its stages (read, train, export, evaluate, publish) as methods, to
    be called in that order (`read` keeps the pairs, glossary and data the later stages use)."""

    def __init__(self, cfg: dict, spec, settings, run_dir: Path, stamp: str, progress: Progress):
        self.cfg, self.spec, self.settings, self.run_dir, self.progress = cfg, spec, settings, run_dir, progress
        self.name = f"specialized-{stamp}"
        self.final = Path(cfg["exports_dir"]) / spec.name / self.name
        # written here, renamed to `final` in one step: a server never loads it half-written
        self.tmp = self.final.with_name(f".{self.name}.tmp")
        self.current = Path(cfg["current_model_dir"])

    def read(self) -> dict:
        """The verified pairs, split into train and held out; the training data written. Returns their counts."""
        cfg, progress = self.cfg, self.progress
        progress.stage("read", 0, 1, "reading verified pairs")
        self.db_path = sqlite_file(cfg["database_url"])
        if not (self.current / "model.onnx").exists():
            raise Refused(f"no current model at {self.current} (model.onnx): set current_model_dir")
        fresh_asked = cfg["init_adapter"] == "fresh"
        self.fresh = fresh_asked or not (Path(cfg["init_adapter"]) / "adapter_config.json").exists()
        if self.fresh and cfg["init_adapter_given"] and not fresh_asked:
            raise Refused(f"no adapter to start from at {cfg['init_adapter']} (adapter_config.json)")
        if self.fresh:
            self.patch_src = self.patch_source()
        pairs, self.entries, self.db_key = read_pairs(cfg, self.settings)
        self.train, self.heldout, dropped = split_pairs(cfg, pairs)
        print(f"{len(pairs)} verified pairs of {self.db_key}: {len(self.train)} train, {len(self.heldout)} held out"
              f" ({dropped} train pairs dropped: business-suite questions)", flush=True)  # fmt: skip
        if len(pairs) < cfg["min_pairs"] or len(self.heldout) < cfg["min_holdout"] or not self.train:
            raise Refused(
                f"too few verified pairs: {len(pairs)} ({len(self.heldout)} held out, {len(self.train)} to train on); "
                f"at least {cfg['min_pairs']} with {cfg['min_holdout']} held out are needed: approve or correct more "
                "answers"
            )
        from app.nl2sql.fewshot import EXAMPLES

        self.data = prepare(cfg, self.spec, self.train, self.entries, self.run_dir / "data", self.settings,
                            examples=EXAMPLES if self.fresh else ())  # fmt: skip
        progress.stage("read", 1, 1, f"{self.data['packed_sequences']} packed sequences, "
                       f"{self.data['replay_sequences']} replay")  # fmt: skip
        return {"total": len(pairs), "train": len(self.train), "heldout": len(self.heldout),
                "dropped_suite_questions": dropped, "heldout_ids": [p["id"] for p in self.heldout]}  # fmt: skip

    def variant(self) -> str:
        """The export variant (fp32, int8, int4) the candidate is built as: the current model's, where it is one."""
        return self.current.name if self.current.name in ("fp32", "int8", "int4") else f"int{self.cfg['bits']}"

    def patch_source(self) -> Path:
        """The base's own export of the served variant, which a fresh LoRA is patched into (`models.patch`): the
        weights it was trained over, whatever the server serves now (perhaps an earlier specialized model)."""
        from models.export import read_manifest

        src = Path(self.cfg["exports_dir"]) / self.spec.name / self.variant()
        if not (src / "model.onnx").exists() or read_manifest(src).get("adapter"):
            raise Refused(
                f"{self.spec.name} has no adapter to start from, so specialize trains a fresh LoRA and patches it into "
                f"the base's own {self.variant()} export, expected at {src} (`make model` writes it)"
            )
        return src

    def train_candidate(self) -> dict:
        """`models.train` from the committed adapter, in its LoRA shape; returns the training log."""
        from models import train as trainer
        from models.base import convert

        cfg, spec, progress = self.cfg, self.spec, self.progress
        progress.stage("train", 0, 1, "preparing the base")
        convert(spec)  # once (a lean `make model` reads the GGUF without keeping a converted copy)
        if self.fresh:
            shape = {"lora_r": cfg["fresh_lora_r"], "lora_alpha": cfg["fresh_lora_alpha"], "lora_dropout": 0.0,
                     "target_modules": list(cfg["fresh_target_modules"]), "train_layers": cfg["fresh_train_layers"]}  # fmt: skip
        else:
            shape = lora_shape(Path(cfg["init_adapter"]), spec.model_dir)
        keys = {"base": spec.name, "base_dir": str(spec.model_dir), "data_dir": str(self.run_dir / "data"),
                "out_dir": str(self.run_dir / "train"), "train_files": self.data["train_files"],
                "init_adapter": "" if self.fresh else cfg["init_adapter"], "method": "lora", "max_len": cfg["max_len"],
                "epochs": cfg["epochs"], "max_steps": cfg["max_steps"], "lr": cfg["lr"],
                "warmup_steps": cfg["warmup_steps"], "batch_tokens": cfg["batch_tokens"], "threads": cfg["threads"],
                "autocast": training_precision(cfg["autocast"]), "seed": cfg["seed"], "limit_train": 0,
                "limit_val": cfg["val_pairs"],
                "eval_interval": 10**9, "log_interval": 1, "resume_from": ""} | shape  # fmt: skip
        progress.stage("train", 0, 1, "loading the base")
        trainer.main([f"--{k}={v!r}" for k, v in keys.items()],
                     on_step=lambda s, n: progress.stage("train", s, n, f"step {s}/{n}"))  # fmt: skip
        return json.loads((self.run_dir / "train" / "log.json").read_text())

    def export(self) -> str:
        """The candidate published (row-wise int8 adapter) and exported into the temp folder; returns the variant
        (fp32, int8, int4) evaluated: the one the current model is, where the export has it."""
        from models.export import build
        from models.patch import PatchError, patch_export
        from models.publish import publish as publish_adapter

        cfg = self.cfg
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        adapter = publish_adapter(self.run_dir / "train", self.tmp / "adapter")
        if self.fresh:
            self.progress.stage("export", 0, 1, f"patching the adapter into {self.patch_src}")
            try:
                counts = patch_export(self.patch_src, adapter, self.tmp / self.variant(), label=self.name)
            except PatchError as exc:
                raise Refused(str(exc)) from None
            print(f"patched {counts['modules']} modules ({counts['blocks_rescaled']} blocks rescaled)", flush=True)
            self.progress.stage("export", 1, 1)
            return self.variant()
        self.progress.stage("export", 0, 1, "merging and exporting to ONNX")
        # the fp32 export stays only where fp32 is what the server serves (the candidate is served like the current)
        keep = self.current.name == "fp32"
        build(self.spec, adapter, cfg["bits"], out_dir=self.tmp, label=self.name, force=True, keep=keep)
        self.progress.stage("export", 1, 1)
        variant = self.variant()
        return variant if (self.tmp / variant).exists() else f"int{cfg['bits']}"

    def evaluate(self, variant: str) -> dict:
        from app.nl2sql.engine import OnnxGenerator

        gens = {
            "current": OnnxGenerator(self.current, self.cfg["threads"]),
            "candidate": OnnxGenerator(self.tmp / variant, self.cfg["threads"]),
        }
        return evaluate_pair(self.cfg, self.run_dir, gens, self.heldout, self.train, self.entries, self.db_path,
                             self.progress, self.settings)  # fmt: skip

    def report(self, pairs: dict, train_log: dict, variant: str, results: dict, wall_s: float) -> dict:
        """The verdict by the publish rule (`decide`), and everything that led to it."""
        cfg, spec = self.cfg, self.spec
        ok, reason = decide(results["candidate"], results["current"], cfg["suite_tolerance"])
        published = cfg["publish"] == "always" or (cfg["publish"] == "if_better" and ok)
        return {
            "run_id": self.run_dir.name,
            "database": self.db_key,
            "base": spec.name,
            "rule": "publish when strictly better on the held-out pairs and not worse on the business suite "
            f"(tolerance {cfg['suite_tolerance']} points); publish={cfg['publish']}",
            "started_from": f"a fresh LoRA (top {cfg['fresh_train_layers']} layers)"
            if self.fresh
            else cfg["init_adapter"],
            "export": f"patched into {self.patch_src} (models.patch)" if self.fresh else "merged and exported",
            "verdict": "better" if ok else "not better",
            "reason": reason,
            "published": published,
            "model_id": f"{spec.name}+{self.name}" if published else None,
            "export_dir": str(self.final / variant) if published else None,
            "pairs": pairs,
            "data": self.data,
            "train": {
                k: train_log.get(k)
                for k in ("step", "steps_total", "best_val", "tokens_per_s", "wall_s", "peak_rss_mb")
            },
            "evaluation": results,
            "config": cfg,
            "wall_s": wall_s,
        }

    def publish(self, report: dict) -> None:
        """Rename the candidate into the exports folder, or delete it; the report and the final status written."""
        reason = report["reason"]
        self.progress.stage("publish", 0, 1, reason)
        if report["published"]:
            (self.tmp / "specialize_report.json").write_text(json.dumps(report, indent=2))
            self.tmp.replace(self.final)  # atomic: the server only ever loads complete directories
            print(f"published {self.final} (publish={self.cfg['publish']}; {reason})", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            print(f"not published: {reason}", flush=True)
        write_report(report, self.run_dir, self.cfg["reports_dir"])
        self.progress.write(state="published" if report["published"] else "rejected", percent=100, stage="done",
                            message=reason, export_dir=report["export_dir"], model_id=report["model_id"],
                            report=report)  # fmt: skip


def main(argv: list[str]) -> int:
    from app.core.config import get_settings

    cfg = configure(argv)
    settings = get_settings()
    spec = fill_defaults(cfg, settings)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg["run_dir"] or settings.specialize_dir / spec.name / stamp)  # where the server looks for runs
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(run_dir, run_dir.name)
    try:
        acquire_lock(run_dir.parent / "lock")
    except Refused as exc:
        progress.write(state="failed", message=str(exc))
        raise
    run = SpecializeRun(cfg, spec, settings, run_dir, stamp, progress)
    t0 = time.time()
    try:
        progress.write(config=cfg)
        pairs = run.read()
        train_log = run.train_candidate()
        variant = run.export()
        results = run.evaluate(variant)
        run.publish(run.report(pairs, train_log, variant, results, round(time.time() - t0, 1)))
        return 0
    except (Refused, SystemExit) as exc:  # train.py exits with a message on bad data or settings
        message = str(exc) if not isinstance(exc, SystemExit) else str(exc.code)
        print(f"refused: {message}", flush=True)
        progress.write(state="failed", message=message)
        return 2
    except BaseException as exc:
        progress.write(state="failed", message=f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        shutil.rmtree(run.tmp, ignore_errors=True)  # a finished run renamed it away; anything left here is partial
        (run_dir.parent / "lock").unlink(missing_ok=True)


def write_report(report: dict, run_dir: Path, reports_dir: str) -> None:
    body = json.dumps(report, indent=2)
    (run_dir / "report.json").write_text(body)
    if reports_dir:
        d = Path(reports_dir)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{report['run_id']}.json.tmp"
        tmp.write_text(body)
        tmp.replace(d / f"{report['run_id']}.json")


if __name__ == "__main__":
    # stopped by the server (shutdown) or an operator: unwind, so the temp export and the lock are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM)"))
    try:
        sys.exit(main(sys.argv[1:]))
    except Refused as exc:  # before the run directory exists (a bad key, the lock)
        print(f"refused: {exc}", file=sys.stderr)
        sys.exit(2)
