"""ONNX Runtime text generation (`OnnxGenerator`, the `Generator` that serves): decoding with the KV cache, several
prompts at once, whole batches (`generate`) or step by step (`DecodeBatch`, what continuous batching drives).

The model is the optimum export (`text-generation-with-past`) of the registered base plus adapter, weight-only int8
as served (models.export).
Prompts are prefilled one by one and decoded together with left-padded KV caches; the attention mask hides the
padding and position ids count real tokens only, so each answer is the same as decoding that prompt alone. Decoding
stops at `<|im_end|>` (end of SQL).

Prefix caching: every prompt for one database starts with the same instructions and schema, so the KV cache of
recent prompts is kept and a new prompt prefills only the tokens after its longest shared prefix.
Rows may ask for sampling (temperature > 0, seeded) instead of greedy: execution-guided decoding draws candidates.
A row may also be constrained to the names of a schema (app.nl2sql.constrain): its identifiers must exist.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from app.core.config import get_settings
from app.nl2sql.constrain import IdentifierConstraint, pick_allowed, token_texts
from app.nl2sql.generator import GREEDY, MAX_NEW_TOKENS, Generation, Sampling

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
CONSTRAINED_TOP_K = 64  # how far down the model's ranking a constrained row looks for an allowed token


class ModelLoadError(RuntimeError):
    """The model artifact is missing or unreadable: the service must not start."""


class PrefixCache:
    """KV caches of the last few prompts; a lookup returns the longest cached prefix of a token sequence.

    Causal attention makes the keys and values at position i depend on tokens 0..i only, so the cached KV of any
    prompt is exact for every other prompt that shares its first n tokens.
    """

    def __init__(self, max_entries: int = 4, min_tokens: int = 32):
        self.max_entries, self.min_tokens = max_entries, min_tokens
        self._entries: OrderedDict[tuple[int, ...], list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.tokens_saved = 0

    def lookup(self, ids: list[int]) -> tuple[int, list[np.ndarray] | None]:
        best_n, best_key = 0, None
        with self._lock:
            for key in self._entries:
                n = _common_prefix(key, ids)
                if n > best_n:
                    best_n, best_key = n, key
            best_n = min(best_n, len(ids) - 1)  # at least one token is run to get the next-token logits
            if best_key is None or best_n < self.min_tokens:
                self.misses += 1
                return 0, None
            self._entries.move_to_end(best_key)
            self.hits += 1
            self.tokens_saved += best_n
            return best_n, [_arena_copy(kv[:, :, :best_n]) for kv in self._entries[best_key]]

    def store(self, ids: list[int], kv: list[np.ndarray]) -> None:
        if self.max_entries <= 0 or len(ids) < self.min_tokens:
            return
        key = tuple(ids)
        with self._lock:
            longer = next((k for k in self._entries if len(k) >= len(key) and k[: len(key)] == key), None)
            if longer is not None:  # an entry holding all of this already: it serves every lookup this one would
                self._entries.move_to_end(longer)
                return
            # an entry this one extends answers no lookup better than it: it goes (the warm-up stores a prompt in
            # growing pieces, and each would otherwise take a place from a prompt of its own)
            for old in [k for k in self._entries if len(k) < len(key) and key[: len(k)] == k]:
                del self._entries[old]
            self._entries[key] = kv
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _arena_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in ONNX Runtime's CPU arena. A KV-sized numpy allocation comes fresh from the OS and
    page-faults on first touch, which here costs several times the copy into it (merging a row into a batch of
    8 × 600 tokens: ~60k faults); the arena hands back memory it already holds."""
    return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype).numpy()


def _arena_copy(a: np.ndarray) -> np.ndarray:
    out = _arena_empty(a.shape, a.dtype)
    out[...] = a
    return out


def _common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


def pick_token(
    logits: np.ndarray,
    sampling: Sampling,
    rng: np.random.Generator | None,
    constraint: IdentifierConstraint | None = None,
) -> int:
    """The next token from one row's last-position logits: greedy or seeded top-k sampling, and within the schema's
    names when the row is constrained (also used by the torch generator, so both engines pick alike).

    A refused token is never replaced by a stop token: ending the SQL mid-clause (`... JOIN products` and stop) is
    always wrong, while the model's own choice, taken against the constraint, may not be."""
    if sampling.temperature <= 0 or rng is None:
        tok = int(logits.argmax())
        if constraint is not None and not constraint.allows(tok):
            k = min(CONSTRAINED_TOP_K, logits.shape[-1])
            top = np.argpartition(logits, -k)[-k:]
            order = top[np.argsort(-logits[top], kind="stable")]
            tok = pick_allowed(map(int, order), constraint.allows_instead) or tok  # none: the model's own choice
    else:
        k = min(sampling.top_k, logits.shape[-1])
        top = np.argpartition(logits, -k)[-k:]
        z = logits[top].astype(np.float64) / sampling.temperature
        p = np.exp(z - z.max())
        tok = int(top[rng.choice(k, p=p / p.sum())])
        if constraint is not None and not constraint.allows(tok):
            p = p * np.array([constraint.allows_instead(int(t)) for t in top])
            if p.sum() > 0:
                tok = int(top[rng.choice(k, p=p / p.sum())])
    if constraint is not None:
        constraint.advance(tok)
    return tok


def served_session_options(threads: int = 0) -> ort.SessionOptions:
    """How the served model's session runs: all graph optimizations, sequential, `threads` intra-op threads (0: the
    `ORT_THREADS` setting, whose 0 is one per core)."""
    threads = threads or get_settings().ort_threads
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class OnnxGenerator:
    def __init__(
        self,
        model_dir: Path,
        threads: int = 0,
        prefix_cache_entries: int = 4,
        io_binding: bool = True,
        *,
        session_options: ort.SessionOptions | None = None,
        wrap_session: Callable[[ort.InferenceSession], ort.InferenceSession] | None = None,
    ):
        """`io_binding=False` runs decode steps with `session.run` and numpy feeds (the earlier path, kept for
        bench.experiments.kv_binding to compare against). For benchmarks only: `session_options` replaces the
        served ones (`threads` is then theirs to set), and `wrap_session` gets the session and returns what the
        engine calls instead (a stand-in that times or records its runs and passes everything else through)."""
        model_dir = self._model_dir = Path(model_dir)
        onnx_path = model_dir / "model.onnx"
        if not onnx_path.exists():
            raise ModelLoadError(f"no model at {onnx_path}: run `make model` to build it")
        try:
            self.manifest = json.loads((model_dir / "querywise.json").read_text())
        except (OSError, ValueError):
            self.manifest = {}
        opts = session_options or served_session_options(threads)
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # onnxruntime raises several unrelated types for a corrupt file
            raise ModelLoadError(f"cannot load the model at {model_dir}: {str(exc).splitlines()[0][:200]}") from exc
        if wrap_session is not None:
            self.session = wrap_session(self.session)
        self.kv_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        shape = self.session.get_inputs()[3].shape  # [batch, kv_heads, past, head_dim]
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        outputs = self.session.get_outputs()  # logits, then present.* in the order of kv_names
        self.present_names = [o.name for o in outputs[1:]]
        vocab = outputs[0].shape[-1]
        self.vocab = vocab if isinstance(vocab, int) else None
        self.io_binding = io_binding
        self.stop_ids = {self.tokenizer.token_to_id(t) for t in STOP_TOKENS} - {None}
        self.pad_id = self.tokenizer.token_to_id("<|endoftext|>") or 0
        self.prefix_cache = PrefixCache(prefix_cache_entries)
        self._token_texts: list[str] | None = None

    @property
    def model_id(self) -> str:
        return self.manifest.get("model_id", "unknown")

    @property
    def model_dir(self) -> Path:
        return self._model_dir

    @property
    def fine_tuned(self) -> bool:
        """Prompted without the few-shot format examples: an adapter taught it the format. A LoRA patched into a
        few-shot base (`models.patch`) was trained with them in its prompts, and keeps them."""
        return bool(self.manifest.get("adapter")) and not self.manifest.get("prompt_examples")

    stepwise = True

    def decode_batch(self) -> DecodeBatch:
        return DecodeBatch(self)

    @property
    def token_texts(self) -> list[str]:
        """The text of every token (for schema-constrained decoding), computed on first use."""
        if self._token_texts is None:
            self._token_texts = token_texts(self.tokenizer)
        return self._token_texts

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def prefill(self, ids: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One prompt alone: last-position logits and its KV cache (only the part after a cached prefix is run)."""
        n = len(ids)
        done, past = self.prefix_cache.lookup(ids)
        if past is None:
            past = [np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)] * len(self.kv_names)
        feed = {
            "input_ids": np.array([ids[done:]], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(done, n, dtype=np.int64)[None],
        } | dict(zip(self.kv_names, past, strict=True))
        logits, *present = self.session.run(None, feed)
        self.prefix_cache.store(ids, present)
        return logits[0, -1], present

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS, sampling: Sequence[Sampling] | None = None
    ) -> list[Generation]:
        """Decode several prompts together (greedy unless `sampling` says otherwise for a row).

        Each prompt is prefilled alone (prefill is compute-bound, so batching it gains little), then the KV caches
        are left-padded to one length and decoded together (decoding is bandwidth-bound: a batch of 8 costs little
        more than one). Padding never enters a weight matmul, only masked attention over zero keys, so every answer
        is identical to decoding that prompt alone (in fp32; the int8 MatMulNBits kernels are not batch-invariant).
        """
        sampling = sampling or [GREEDY] * len(prompts)
        batch = self.decode_batch()
        results: dict[int, Generation] = {}
        for i, (prompt, s) in enumerate(zip(prompts, sampling, strict=True)):
            finished = batch.add(i, prompt, max_new_tokens, s)
            if finished is not None:
                results[i] = finished
        while len(batch):
            results.update(batch.step())
        return [results[i] for i in range(len(prompts))]


@dataclass
class _Row:
    key: object
    prompt_tokens: int
    max_new_tokens: int
    sampling: Sampling
    rng: np.random.Generator | None
    constraint: IdentifierConstraint | None
    pos: int  # position id of the pending token
    tokens: list[int]  # generated so far; the last one is pending (not yet fed to the model)


class DecodeBatch:
    """Rows decoding together. A row joins at a step boundary (prefilled alone, its KV merged, left-padded) and
    leaves as soon as it finishes, so the others stop paying for it; this is what continuous batching builds on."""

    def __init__(self, gen: OnnxGenerator, *, ignore_stop: bool = False, io_binding: bool | None = None):
        """For benchmarks only: `ignore_stop` decodes every row to exactly its `max_new_tokens` (the same work
        whatever the weights write); `io_binding` picks this batch's decode path (None: the generator's)."""
        self.gen = gen
        self.stop_ids = set() if ignore_stop else gen.stop_ids
        self._io_binding = io_binding
        self.rows: list[_Row] = []
        self.kv: list[np.ndarray | ort.OrtValue] = []  # OrtValues straight from the last step, arrays after a join
        self.mask = np.zeros((0, 0), dtype=np.int64)
        self._io: ort.IOBinding | None = None
        self._logits = np.empty((0, 1, 0), np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def _generation(self, row: _Row) -> Generation:
        text = self.gen.tokenizer.decode(row.tokens, skip_special_tokens=True)
        return Generation(text, row.prompt_tokens, len(row.tokens), self.gen.model_id)

    def add(self, key: object, prompt: str, max_new_tokens: int, sampling: Sampling = GREEDY) -> Generation | None:
        """Prefill `prompt` and join the batch; returns its Generation at once if it is already finished."""
        ids = self.gen.tokenizer.encode(prompt, add_special_tokens=False).ids
        rng = np.random.default_rng(sampling.seed) if sampling.temperature > 0 else None
        constraint = (
            IdentifierConstraint(sampling.names, self.gen.token_texts, self.gen.stop_ids) if sampling.names else None
        )
        logits, present = self.gen.prefill(ids)
        first = pick_token(logits, sampling, rng, constraint)
        row = _Row(key, len(ids), max_new_tokens, sampling, rng, constraint, len(ids), [])
        if first in self.stop_ids or max_new_tokens < 1:
            return self._generation(row)
        row.tokens.append(first)
        if len(row.tokens) >= max_new_tokens:
            return self._generation(row)
        self._merge(len(ids), present)
        self.rows.append(row)
        return None

    def _merge(self, n: int, present: list[np.ndarray]) -> None:
        """The newcomer's KV (n tokens) joins as a new last row; whichever is shorter, it or the batch, is padded
        on the left. One copy of the cache, into arena memory; a first row is taken as it is."""
        B, t_old = len(self.rows), self.mask.shape[1]
        T = max(t_old, n)
        mask = np.zeros((B + 1, T), np.int64)
        mask[:B, T - t_old :] = self.mask
        mask[B, T - n :] = 1
        self.mask = mask
        if not B:
            self.kv = list(present)
            return
        merged = []
        for k, p in zip(self._kv_arrays(), present, strict=True):
            kv = _arena_empty((B + 1, p.shape[1], T, p.shape[3]), p.dtype)
            kv[:B, :, : T - t_old] = 0
            kv[:B, :, T - t_old :] = k
            kv[B, :, : T - n] = 0
            kv[B, :, T - n :] = p[0]
            merged.append(kv)
        self.kv = merged

    def step(self) -> dict[object, Generation]:
        """Feed every row its pending token, pick the next ones; finished rows leave. Returns {key: Generation}."""
        B = len(self.rows)
        self.mask = np.concatenate([self.mask, np.ones((B, 1), np.int64)], axis=1)
        ids = np.array([[r.tokens[-1]] for r in self.rows], dtype=np.int64)
        pos = np.array([[r.pos] for r in self.rows], dtype=np.int64)
        bound = self.gen.io_binding if self._io_binding is None else self._io_binding
        logits = self._run_bound(ids, pos) if bound else self._run_feed(ids, pos)
        finished, keep = {}, []
        for i, r in enumerate(self.rows):
            r.pos += 1
            tok = pick_token(logits[i, -1], r.sampling, r.rng, r.constraint)
            if tok not in self.stop_ids:
                r.tokens.append(tok)
            if tok in self.stop_ids or len(r.tokens) >= r.max_new_tokens:
                finished[r.key] = self._generation(r)
            else:
                keep.append(i)
        if finished:
            self._keep(keep)
        return finished

    def drop(self, keys: set[object]) -> None:
        """Rows whose answer nobody waits for any more (a cancelled candidate) leave now; the others go on as they
        were (rows never mix in the graph, so their answers do not change)."""
        idx = [i for i, r in enumerate(self.rows) if r.key not in keys]
        if len(idx) < len(self.rows):
            self._keep(idx)

    def _keep(self, idx: list[int]) -> None:
        self.rows = [self.rows[i] for i in idx]
        if not idx:
            self.kv, self.mask = [], np.zeros((0, 0), dtype=np.int64)
            return
        mask = self.mask[idx]
        start = int(mask.any(axis=0).argmax())  # columns that are padding for every remaining row go too
        self.mask = np.ascontiguousarray(mask[:, start:])
        kept = []
        for k in self._kv_arrays():  # one copy, into arena memory (see _arena_empty)
            kv = _arena_empty((len(idx), k.shape[1], k.shape[2] - start, k.shape[3]), k.dtype)
            for j, i in enumerate(idx):
                kv[j] = k[i, :, start:]
            kept.append(kv)
        self.kv = kept

    def _kv_arrays(self) -> list[np.ndarray]:
        """The cache as numpy arrays for a join or a leave: views of the step's OrtValues, nothing is copied."""
        return [k.numpy() if isinstance(k, ort.OrtValue) else k for k in self.kv]

    def _run_feed(self, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """One step through `session.run` with numpy feeds (the path before IO binding)."""
        feed = {"input_ids": ids, "attention_mask": self.mask, "position_ids": pos}
        feed |= dict(zip(self.gen.kv_names, self._kv_arrays(), strict=True))
        logits, *self.kv = self.gen.session.run(None, feed)
        return logits

    def _run_bound(self, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """One step with IO binding: each present OrtValue is bound as the next step's past as it is, and logits
        land in a buffer kept for the batch size. (`session.run` on ORT 1.2x+ shares numpy memory both ways as
        well; the KV copies that remain are in the graph: see models.attention_graph and
        bench.experiments.kv_binding.)"""
        if self._io is None:
            self._io = self.gen.session.io_binding()
        io, B = self._io, len(ids)
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", self.mask)
        io.bind_cpu_input("position_ids", pos)
        for name, kv in zip(self.gen.kv_names, self.kv, strict=True):
            if isinstance(kv, ort.OrtValue):
                io.bind_ortvalue_input(name, kv)
            else:
                io.bind_cpu_input(name, kv)
        if self.gen.vocab:
            if self._logits.shape[0] != B:
                self._logits = np.empty((B, 1, self.gen.vocab), np.float32)
            io.bind_output("logits", "cpu", 0, np.float32, list(self._logits.shape), self._logits.ctypes.data)
        else:
            io.bind_output("logits", "cpu")
        for name in self.gen.present_names:
            io.bind_output(name, "cpu")  # sizes change every step: ORT allocates them from its arena
        self.gen.session.run_with_iobinding(io)
        logits, *self.kv = io.get_outputs()
        return self._logits if self.gen.vocab else logits.numpy()
