"""Stage 2, train: fine-tune a registered base (`models.bases`) for NL→SQL on the CPU, nanoGPT style, with one of the
interchangeable methods of `models.methods` (`method`: lora, qlora, full, bitnet).

    python -m models.train models/configs/lora_top12.py            # a preset (a small file of assignments)
    python -m models.train models/configs/tiny.py --max_steps=5    # presets and --key=value overrides

Speed levers (measured in models/card.md):
- logits and loss only at target (SQL) positions: the vocabulary head (49k SmolLM2, 152k Qwen) is skipped for prompt
  tokens;
- in-context packing (`models.data.pack`, `train_files = ["packed.jsonl"]`): one sequence per chunk of a database's
  questions, the schema written once and loss on every SQL turn;
- length-grouped micro-batches under a token budget: almost no padding;
- `train_layers = k` trains the top k decoder layers only, whatever the method; the frozen lower layers' outputs
  never change, so they are computed once, cached on disk (float32 memmap), and each step runs only the top k layers.
Right padding plus a causal mask means real tokens never attend to padding, so no attention mask is needed.

Every eval_interval steps: validation loss, best weights kept in out_dir/best (the method's saved form; early stopping
on patience), resumable state in out_dir/last, and out_dir/log.json (config, losses, wall time, tokens/s, peak RSS).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import math
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import presets
from models.data import target_spans
from models.methods import METHODS, MethodError, get_method
from models.presets import config_keys

# ---------------------------------------------------------------- defaults (override by preset / --key=value)
out_dir = "models/runs/default"
data_dir = ""  # "" = build/data/<base> (tokenized for that base by models.prepare)
train_files = ["train.jsonl"]  # JSONL files in data_dir, concatenated (e.g. + "synth_demo.jsonl")
base = ""  # registry name (models.bases); "" = BASE_MODEL or the default base
base_dir = ""  # "" = the registry base's converted directory
method = "lora"  # lora | qlora | full | bitnet (models.methods)
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
lora_rank_pattern = {}  # lora/qlora: {module-name regex: rank} overriding lora_r there (models.rank proposes one)
qlora_block = 64  # qlora: weights per block (one float32 absmax each)
qlora_bits = 4  # qlora: the frozen base's precision, 4 (NF4) or 8 (int8 absmax)
prune_layers = 0  # prune: decoder layers removed (least block influence on calibration rows)
prune_mlp = 0.0  # prune: fraction of every layer's MLP channels removed (least activation RMS × down_proj column norm)
train_layers = 30  # top k decoder layers trained; the rest frozen and cached
lr = 5e-4
weight_decay = 0.0
warmup_steps = 30
min_lr_ratio = 0.1
batch_tokens = 4096  # padded tokens per micro-batch
grad_accum = 1
epochs = 1.0
max_steps = 0  # 0 = from epochs
max_len = 512
cache_max_len = 0  # 0 = max_len; else rows up to this length are cached and validated on, those up to max_len trained
cache_below_top = 0  # 0 = every frozen layer cached; N = only the layers below the top N (the frozen ones among
# those N run each step): runs of train_layers up to N share one cache
limit_train = 0  # 0 = all
limit_val = 200
eval_interval = 100
patience = 4
resume_from = ""  # a run's `last` dir to continue from (new schedule, same weights/optimizer) when out_dir has none
init_adapter = ""  # saved weights (a run's best, models/adapters/<name>) to start from; fresh optimizer/schedule
threads = 0  # torch threads; 0 = torch's default (OMP_NUM_THREADS where set, else every core)
device = "auto"  # auto = cuda when torch sees a GPU, else cpu; or "cpu", "cuda", "cuda:1"
max_minutes = 0.0  # 0 = no limit; else the run stops after this many minutes of training (a sweep trial's budget)
autocast = ""  # "bf16": matmuls in bfloat16 (AVX512-BF16 CPUs: ~4x the fp32 speed here), trained weights stay fp32
seed = 1337
log_interval = 10
# ---------------------------------------------------------------------------------------------------------------
CONFIG_KEYS = config_keys(globals())
DEFAULTS = {k: globals()[k] for k in CONFIG_KEYS}  # the module's own values: `configure` never changes them


def configure(argv: list[str]) -> dict:
    """Presets and --key=value overrides (`models.presets`) over this module's defaults (a copy: one process may
    configure many runs, as a sweep does); the registry base's folders where base_dir or data_dir is left empty."""
    try:
        cfg = presets.configure(argv, {k: copy.deepcopy(v) for k, v in DEFAULTS.items()}, CONFIG_KEYS)
    except presets.PresetError as exc:
        sys.exit(str(exc))
    if cfg["method"] not in METHODS:
        sys.exit(f"unknown method {cfg['method']!r}: choose one of {', '.join(METHODS)}")
    if not (cfg["base_dir"] and cfg["data_dir"]):
        from models.bases import get_base

        spec = get_base(cfg["base"] or None)
        cfg["base_dir"] = cfg["base_dir"] or str(spec.model_dir)
        cfg["data_dir"] = cfg["data_dir"] or str(spec.data_dir)
    return cfg


def resolve_device(name: str) -> torch.device:
    """`auto`: the first CUDA device when this torch build sees one (a lent GPU machine), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"device {name!r}: this torch build sees no CUDA device (device = 'auto' falls back to the CPU)")
    return device


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_rows(path: Path, limit: int, max_len: int) -> list[dict]:
    """The file's rows of at most max_len tokens; with a limit, that many spread evenly over the file (the files
    are grouped by database: the first rows would be a few databases only)."""
    rows = [json.loads(line) for line in path.open()]
    rows = [r for r in rows if len(r["ids"]) <= max_len]
    return rows[:: max(1, len(rows) // limit)][:limit] if limit else rows


def make_batches(lengths: list[int | None], budget: int, rng: random.Random) -> list[list[int]]:
    """Group indices of similar length so that batch_size * max_len <= budget; batch order shuffled. A length of
    None leaves its row out (longer than this run's max_len, loaded for a shared cache)."""
    kept = [i for i, n in enumerate(lengths) if n is not None]
    order = sorted(kept, key=lambda i: (lengths[i], rng.random()))
    batches, cur, cur_max = [], [], 0
    for i in order:
        m = max(cur_max, lengths[i])
        if cur and m * (len(cur) + 1) > budget:
            batches.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


Layout = tuple[torch.Tensor, torch.Tensor | None] | None  # (position ids, attention mask or None for causal)


def attention_layout(rows: list[dict], T: int) -> Layout:
    """Position ids and attention mask for a batch padded to T tokens; None (plain causal) unless a row was packed
    with a shared prefix (`models.data._pack_shared`). There each segment attends to the prefix and to itself, and
    its positions continue from the prefix, as if it were the only question after the schema."""
    if not any(r.get("segments") for r in rows):
        return None
    pos = torch.arange(T).repeat(len(rows), 1)
    mask = torch.ones(T, T, dtype=torch.bool).tril().repeat(len(rows), 1, 1, 1)  # (batch, 1, query, key)
    for i, r in enumerate(rows):
        segments = r.get("segments") or []
        prefix = segments[0][0] if segments else 0
        for start, end in segments:
            mask[i, 0, start:end, prefix:start] = False
            pos[i, start:end] = torch.arange(prefix, prefix + end - start)
    return pos, mask


class Backbone:
    """The split model: frozen lower layers (run once, cached) and the trained top layers. With `cache_split` below
    `split`, only the layers under it are cached and the frozen layers between run (without gradients) every step:
    runs that train different numbers of layers share one cache (a sweep over `train_layers`)."""

    def __init__(
        self, model, split: int, autocast: str = "", device: torch.device | None = None, cache_split: int | None = None
    ):
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device)
        self.autocast = autocast == "bf16"
        self.inner = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
        self.lm_head = (model.get_base_model() if hasattr(model, "get_base_model") else model).lm_head
        self.split = split
        self.cache_split = split if cache_split is None else min(cache_split, split)

    def _run(self, h: torch.Tensor, layers, layout: Layout = None) -> torch.Tensor:
        pos, mask = layout or (torch.arange(h.shape[1]).unsqueeze(0).expand(h.shape[0], -1), None)
        pos, mask = pos.to(h.device), None if mask is None else mask.to(h.device)
        cos_sin = self.inner.rotary_emb(h, pos)
        for layer in layers:
            out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def _cast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    @torch.no_grad()
    def lower(self, ids: torch.Tensor, layout: Layout = None) -> torch.Tensor:
        with self._cast():
            h = self.inner.embed_tokens(ids.to(self.device))
            return self._run(h, self.inner.layers[: self.cache_split], layout).float().cpu()

    def loss(self, h: torch.Tensor, ids: torch.Tensor, tmask: torch.Tensor, layout: Layout = None) -> torch.Tensor:
        """Mean cross-entropy over target tokens; logits computed only where the next token is a target."""
        with self._cast():
            if self.cache_split < self.split:
                with torch.no_grad():
                    h = self._run(h, self.inner.layers[self.cache_split : self.split], layout)
            h = self.inner.norm(self._run(h, self.inner.layers[self.split :], layout))
            sel = tmask[:, 1:]
            logits = self.lm_head(h[:, :-1][sel])
        return F.cross_entropy(logits.float(), ids[:, 1:][sel])  # ids, tmask on the model's device


def collate(rows: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    tmask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r["ids"])] = torch.tensor(r["ids"])
        for start, end in target_spans(r):
            tmask[i, start:end] = True
    return ids, tmask


class HiddenCache:
    """Outputs of the frozen lower layers for every example, in one float32 memmap on disk.

    Several processes may want one cache at once (a sweep's workers, a comparison beside it): a lock file beside it
    lets the first compute it while the others wait, then read it. Its .json (the key) is written last and removed
    before a recomputation, so a cache whose computation was stopped is never read."""

    def __init__(self, path: Path, rows: list[dict], backbone: Backbone, dim: int, pad_id: int):
        self.offsets = np.cumsum([0] + [len(r["ids"]) for r in rows])
        with path.with_suffix(".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self._open(path, rows, backbone, dim, pad_id)

    def _open(self, path: Path, rows: list[dict], backbone: Backbone, dim: int, pad_id: int) -> None:
        meta = path.with_suffix(".json")
        key = {"n": len(rows), "tokens": int(self.offsets[-1]), "split": backbone.cache_split, "dim": dim}
        fresh = not (path.exists() and meta.exists() and json.loads(meta.read_text()) == key)
        if fresh:
            meta.unlink(missing_ok=True)
        mode = "w+" if fresh else "r"
        self.mm = np.memmap(path, dtype=np.float32, mode=mode, shape=(int(self.offsets[-1]), dim))
        if fresh:
            t0 = time.time()
            order = make_batches([len(r["ids"]) for r in rows], 8192, random.Random(0))
            for n, b in enumerate(order):
                ids, _ = collate([rows[i] for i in b], pad_id)
                h = backbone.lower(ids, attention_layout([rows[i] for i in b], ids.shape[1])).numpy()
                for j, i in enumerate(b):
                    L = len(rows[i]["ids"])
                    self.mm[self.offsets[i] : self.offsets[i] + L] = h[j, :L]
                if n % 20 == 0:
                    print(f"  caching lower layers {n}/{len(order)} batches ({time.time() - t0:.0f}s)", flush=True)
            self.mm.flush()
            meta.write_text(json.dumps(key))

    def batch(self, idx: list[int], T: int) -> torch.Tensor:
        out = torch.zeros((len(idx), T, self.mm.shape[1]))
        for j, i in enumerate(idx):
            out[j, : self.offsets[i + 1] - self.offsets[i]] = self.row(i)
        return out

    def row(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.mm[self.offsets[i] : self.offsets[i + 1]]))


class CacheSet:
    """Several caches (one per training file) addressed by one index over the concatenated rows, so adding a
    file to a mixture does not recompute the caches of the others."""

    def __init__(self, parts: list[tuple[int, HiddenCache]]):
        self.parts = parts  # (first global index, cache)

    def batch(self, idx: list[int], T: int) -> torch.Tensor:
        first = self.parts[0][1]
        out = torch.zeros((len(idx), T, first.mm.shape[1]))
        for j, i in enumerate(idx):
            start, cache = next((s, c) for s, c in reversed(self.parts) if i >= s)
            r = cache.row(i - start)
            out[j, : r.shape[0]] = r
        return out


def build_model(cfg: dict):
    """The base with the run's method in place (`models.methods`): (model, index of the first trained layer)."""
    from models.base import load_model

    model = load_model(cfg["base_dir"])  # a registry base never converted is read from its GGUF
    model = get_method(cfg["method"]).prepare(model, cfg)
    n_layers = model.config.num_hidden_layers  # after prepare: `prune` removes layers
    return model, n_layers - min(cfg["train_layers"], n_layers)


def save_adapter(model, path: Path, cfg: dict, extra: dict) -> None:
    """The method's saved form of the trained weights, with the run's config beside it."""
    get_method(cfg["method"]).save(model, path, cfg)
    (path / "train_config.json").write_text(json.dumps({"config": cfg, **extra}, indent=2))


def load_init_adapter(model, path: Path, method: str = "lora") -> None:
    """Start from saved weights (not their optimizer or data order: that is `resume_from`). The run's shape (LoRA's
    r, target modules, trained layers) must be theirs: every trained tensor must be filled."""
    try:
        get_method(method).init_from(model, path)
    except MethodError as exc:
        sys.exit(str(exc))
    print(f"initialized the trained tensors from {path}")


def loaded_len(cfg: dict) -> int:
    """The longest row loaded (and cached): `cache_max_len` when set, so runs of several max_len share a cache."""
    return max(cfg["cache_max_len"], cfg["max_len"])


def load_examples(cfg: dict) -> tuple[list[list[dict]], list[dict]]:
    """The rows of each training file (apart: each file gets its own lower-layer cache) and the validation rows."""
    files = [load_rows(Path(cfg["data_dir"]) / f, cfg["limit_train"], loaded_len(cfg)) for f in cfg["train_files"]]
    if not any(len(r["ids"]) <= cfg["max_len"] for rows in files for r in rows):
        sys.exit(f"no training examples of at most {cfg['max_len']} tokens in {cfg['data_dir']}/{cfg['train_files']}")
    return files, load_rows(Path(cfg["data_dir"]) / "val.jsonl", cfg["limit_val"], loaded_len(cfg))


def base_tag(cfg: dict) -> str:
    """Empty for the registry base's converted weights; else a short hash of the weights' folder, so that a run from a
    merged adapter or an operator's BASE_MODEL_DIR never reads lower-layer outputs cached for other weights."""
    from models.bases import BUILD_DIR

    base_dir = Path(cfg["base_dir"]).resolve()
    if base_dir == (BUILD_DIR / "base" / (cfg["base"] or base_dir.name)).resolve():
        return ""
    return "_b" + hashlib.sha1(str(base_dir).encode()).hexdigest()[:8]


def lower_layer_caches(cfg: dict, bb: Backbone, files: list[list[dict]], val: list[dict], pad_id: int) -> dict | None:
    """The frozen lower layers' outputs for train and val, computed once and kept under data_dir/cache (a file's
    cache is reused by any run with the same split and limits); None when every layer is trained."""
    if not bb.cache_split:
        return None
    print(f"caching outputs of the {bb.cache_split} frozen lower layers ...", flush=True)
    cdir = Path(cfg["data_dir"]) / "cache"
    cdir.mkdir(exist_ok=True)
    # a method that changes the frozen layers (prune) adds its own tag, and so does a base other than the registry's
    # converted one (a merged adapter, an operator's weights): their outputs are not the registry base's
    tag = (
        f"{bb.cache_split}_{loaded_len(cfg)}_{cfg['limit_train']}_{cfg['limit_val']}"
        f"{get_method(cfg['method']).cache_tag(cfg)}{base_tag(cfg)}"
    )
    dim = bb.model.config.hidden_size
    parts, start = [], 0
    for name, rows in zip(cfg["train_files"], files, strict=True):
        parts.append((start, HiddenCache(cdir / f"{Path(name).stem}_{tag}.f32", rows, bb, dim, pad_id)))
        start += len(rows)
    return {"train": CacheSet(parts), "val": HiddenCache(cdir / f"val_{tag}.f32", val, bb, dim, pad_id)}


def cosine_lr(cfg: dict, step: int, total: int) -> float:
    """Linear warmup over warmup_steps, then cosine decay from lr to min_lr_ratio * lr at step `total`."""
    if step < cfg["warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    frac = min(1.0, (step - cfg["warmup_steps"]) / max(1, total - cfg["warmup_steps"]))
    return cfg["lr"] * (cfg["min_lr_ratio"] + (1 - cfg["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * frac)))


class Trainer:
    """One run's moving parts (trained parameters, optimizer, data order, progress state) and what it leaves in
    out_dir: the best adapter, the resumable `last` checkpoint and log.json."""

    def __init__(self, cfg: dict, bb: Backbone, caches: dict | None, pad_id: int, train: list[dict], val: list[dict]):
        self.cfg, self.bb, self.model, self.caches, self.pad_id = cfg, bb, bb.model, caches, pad_id
        self.train, self.val = train, val
        self.out = Path(cfg["out_dir"])
        self.last = self.out / "last"
        self.method = get_method(cfg["method"])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        n_layers = self.model.config.num_hidden_layers
        print(f"trainable parameters: {sum(p.numel() for p in self.params):,} (layers {bb.split}..{n_layers - 1})")
        self.opt = torch.optim.AdamW(self.params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.rng = random.Random(cfg["seed"])
        self.lengths = [len(r["ids"]) if len(r["ids"]) <= cfg["max_len"] else None for r in train]
        n_batches = len(make_batches(self.lengths, cfg["batch_tokens"], random.Random(0)))
        steps_per_epoch = math.ceil(n_batches / cfg["grad_accum"])
        self.total = cfg["max_steps"] or max(1, int(steps_per_epoch * cfg["epochs"]))
        self.state = {
            "step": 0,
            "epoch": 0,
            "batch_pos": 0,
            "best_val": float("inf"),
            "bad_evals": 0,
            "history": [],
            "wall_s": 0.0,
            "tokens": 0,
            "target_tokens": 0,
        }

    def inputs(self, split_name: str, rows: list[dict], idx: list[int]):
        """A micro-batch: the top layers' input (cached lower-layer outputs, or embeddings), ids, targets, layout."""
        ids, tmask = collate([rows[i] for i in idx], self.pad_id)
        ids, tmask, dev = ids.to(self.bb.device), tmask.to(self.bb.device), self.bb.device
        h = self.caches[split_name].batch(idx, ids.shape[1]).to(dev) if self.caches else self.bb.inner.embed_tokens(ids)
        return h, ids, tmask, attention_layout([rows[i] for i in idx], ids.shape[1])

    @torch.no_grad()
    def val_loss(self) -> float:
        self.model.eval()
        tot, n = 0.0, 0
        for b in make_batches([len(r["ids"]) for r in self.val], self.cfg["batch_tokens"], random.Random(0)):
            h, ids, tmask, layout = self.inputs("val", self.val, b)
            k = int(tmask[:, 1:].sum())
            tot += float(self.bb.loss(h, ids, tmask, layout)) * k
            n += k
        self.model.train()
        return tot / max(n, 1)

    def resume(self) -> list[list[int]] | None:
        """Continue from out_dir/last, else from `resume_from` (its weights, optimizer, data order and progress);
        returns the saved batch order, or None on a fresh start."""
        resume_from = self.cfg["resume_from"]
        source = self.last if (self.last / "state.pt").exists() else Path(resume_from) if resume_from else None
        if source is None:
            return None
        if not (source / "state.pt").exists():
            sys.exit(f"resume_from: no state.pt in {source}")
        ck = torch.load(source / "state.pt", weights_only=False)
        self.model.load_state_dict(ck["trainable"], strict=False)
        self.opt.load_state_dict(ck["opt"])
        self.state = ck["state"]
        self.rng.setstate(ck["rng"])
        print(f"resumed from {source} at step {self.state['step']} (best val {self.state['best_val']:.4f})")
        return ck.get("batches")

    def checkpoint(self, batches: list[list[int]]) -> None:
        self.last.mkdir(parents=True, exist_ok=True)
        trainable = self.method.trainable_state(self.model)
        tmp = self.last / "state.pt.tmp"
        ck = {"trainable": trainable, "opt": self.opt.state_dict(), "state": self.state, "rng": self.rng.getstate()}
        torch.save(ck | {"batches": batches}, tmp)
        tmp.replace(self.last / "state.pt")  # a run stopped while saving keeps the previous checkpoint

    def write_log(self, status: str) -> None:
        state = self.state
        log = {
            "config": self.cfg,
            "status": status,
            "split_layer": self.bb.split,
            "trainable_params": sum(p.numel() for p in self.params),
            "steps_total": self.total,
            "peak_rss_mb": round(peak_rss_mb()),
            **{k: state[k] for k in state if k != "history"},
            "tokens_per_s": round(state["tokens"] / max(state["wall_s"], 1e-9), 1),
            "history": state["history"],
        }
        (self.out / "log.json").write_text(json.dumps(log, indent=2))

    def optimizer_step(self, batches: list[list[int]]) -> float:
        """One optimizer step over grad_accum micro-batches, taken from the batch order at batch_pos; its loss."""
        state, accum = self.state, self.cfg["grad_accum"]
        t0 = time.time()
        for g in self.opt.param_groups:
            g["lr"] = cosine_lr(self.cfg, state["step"], self.total)
        step_loss = 0.0
        for _ in range(accum):
            b = batches[state["batch_pos"] % len(batches)]
            state["batch_pos"] += 1
            h, ids, tmask, layout = self.inputs("train", self.train, b)
            loss = self.bb.loss(h, ids, tmask, layout) / accum
            loss.backward()
            step_loss += float(loss.detach())
            state["tokens"] += sum(len(self.train[i]["ids"]) for i in b)
            state["target_tokens"] += int(tmask.sum())
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["wall_s"] += time.time() - t0
        return step_loss

    def evaluate(self, batches: list[list[int]]) -> bool:
        """Validation loss; the best adapter so far kept in out_dir/best; checkpoint and log written. True when
        the last `patience` evaluations brought no improvement (early stop)."""
        state = self.state
        vl = self.val_loss()
        state["history"].append(
            {
                "step": state["step"],
                "val_loss": round(vl, 5),
                "wall_s": round(state["wall_s"], 1),
                "tokens": state["tokens"],
            }
        )
        improved = vl < state["best_val"]
        print(f"  val loss {vl:.4f} {'(best)' if improved else ''}", flush=True)
        if improved:
            state["best_val"], state["bad_evals"] = vl, 0
            save_adapter(self.model, self.out / "best", self.cfg, {"step": state["step"], "val_loss": vl})
        else:
            state["bad_evals"] += 1
        self.checkpoint(batches)
        self.write_log("running")
        return state["bad_evals"] >= self.cfg["patience"]

    def fit(self, batches: list[list[int]] | None, on_step=None, on_eval=None) -> str:
        """Optimizer steps until the total (a new epoch reshuffles the batch order), an early stop or `max_minutes`
        of training, from the resumed batch order if any; returns how the run ended. `on_eval(step, val_loss)`
        after each evaluation may raise to end the run (a sweep prunes a trial so)."""
        state, cfg = self.state, self.cfg
        self.model.train()
        batches = batches if batches is not None else make_batches(self.lengths, cfg["batch_tokens"], self.rng)
        t_last, tok_last, loss_acc, loss_n = time.time(), state["tokens"], 0.0, 0
        while state["step"] < self.total:
            if state["batch_pos"] >= len(batches):
                state["epoch"] += 1
                state["batch_pos"] = 0
                batches = make_batches(self.lengths, cfg["batch_tokens"], self.rng)
            loss_acc += self.optimizer_step(batches)
            loss_n += 1
            if on_step is not None:
                on_step(state["step"], self.total)
            if state["step"] % cfg["log_interval"] == 0:
                tok_s = (state["tokens"] - tok_last) / (time.time() - t_last)
                print(
                    f"step {state['step']}/{self.total} ep {state['epoch']} loss {loss_acc / loss_n:.4f} "
                    f"lr {cosine_lr(cfg, state['step'], self.total):.2e} {tok_s:.0f} tok/s",
                    flush=True,
                )
                t_last, tok_last, loss_acc, loss_n = time.time(), state["tokens"], 0.0, 0
            out_of_time = 0 < cfg["max_minutes"] * 60 <= state["wall_s"]
            if out_of_time or state["step"] % cfg["eval_interval"] == 0 or state["step"] == self.total:
                stop = self.evaluate(batches)
                if on_eval is not None:
                    on_eval(state["step"], state["history"][-1]["val_loss"])
                if stop:
                    print(f"early stop: no improvement in {cfg['patience']} evaluations")
                    return "early_stopped"
                if out_of_time:
                    print(f"time budget: {cfg['max_minutes']} minutes of training reached")
                    return "time_budget"
        return "max_steps"


def run(cfg: dict, on_step=None, on_eval=None) -> dict:
    """One training run of a complete config (`configure`'s); returns its log (log.json's content).
    `on_step(step, total)` is called after every optimizer step (a caller's progress bar), `on_eval` as in `fit`."""
    torch.manual_seed(cfg["seed"])  # before the model is built: LoRA's initial weights come from it
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    Path(cfg["out_dir"]).mkdir(parents=True, exist_ok=True)
    from models.base import load_tokenizer

    pad_id = load_tokenizer(cfg["base_dir"]).pad_token_id
    files, val = load_examples(cfg)
    model, split = build_model(cfg)
    n_layers = model.config.num_hidden_layers
    cache_split = max(0, n_layers - cfg["cache_below_top"]) if cfg["cache_below_top"] else None
    bb = Backbone(model, split, cfg["autocast"], resolve_device(cfg["device"]), cache_split)
    caches = lower_layer_caches(cfg, bb, files, val, pad_id)
    if cfg["init_adapter"]:
        load_init_adapter(model, Path(cfg["init_adapter"]), cfg["method"])
    trainer = Trainer(cfg, bb, caches, pad_id, [r for rows in files for r in rows], val)
    status = trainer.fit(trainer.resume(), on_step, on_eval)
    trainer.write_log(status)
    state = trainer.state
    print(
        f"done: {state['step']} steps, best val {state['best_val']:.4f}, "
        f"{state['tokens'] / max(state['wall_s'], 1e-9):.0f} tok/s, peak RSS {peak_rss_mb():.0f} MB"
    )
    return json.loads((Path(cfg["out_dir"]) / "log.json").read_text())


def main(argv: list[str], on_step=None) -> dict:
    """The command line: presets and overrides (`configure`), then `run`; settings a method refuses (a rank pattern
    that matches no module, a pruning amount past the model) end it with their message."""
    try:
        return run(configure(argv), on_step)
    except MethodError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
