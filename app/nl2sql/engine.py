"""ONNX Runtime text generation: greedy decoding with the KV cache, several prompts at once.

The model is the optimum export (`text-generation-with-past`) of SmolLM2 (fp32 served; weight-only int8 built too).
Prompts are prefilled one by one and decoded together with left-padded KV caches; the attention mask hides the
padding and position ids count real tokens only, so each answer is the same as decoding that prompt alone. Decoding
stops at `<|im_end|>` (end of SQL).

Prefix caching: every prompt for one database starts with the same instructions and schema, so the KV cache of
recent prompts is kept and a new prompt prefills only the tokens after its longest shared prefix.
Rows may ask for sampling (temperature > 0, seeded) instead of greedy: execution-guided decoding draws candidates.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")


class ModelLoadError(RuntimeError):
    """The model artifact is missing or unreadable: the service must not start."""


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int


@dataclass(frozen=True)
class Sampling:
    """How one row picks its next token: temperature 0 is greedy; otherwise top-k sampling from its own seed."""

    temperature: float = 0.0
    top_k: int = 40
    seed: int = 0


GREEDY = Sampling()


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
            return best_n, [np.ascontiguousarray(kv[:, :, :best_n]) for kv in self._entries[best_key]]

    def store(self, ids: list[int], kv: list[np.ndarray]) -> None:
        if self.max_entries <= 0 or len(ids) < self.min_tokens:
            return
        with self._lock:
            self._entries[tuple(ids)] = kv
            self._entries.move_to_end(tuple(ids))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


def _pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator | None) -> int:
    if sampling.temperature <= 0 or rng is None:
        return int(logits.argmax())
    k = min(sampling.top_k, logits.shape[-1])
    top = np.argpartition(logits, -k)[-k:]
    z = logits[top].astype(np.float64) / sampling.temperature
    p = np.exp(z - z.max())
    return int(top[rng.choice(k, p=p / p.sum())])


class OnnxGenerator:
    def __init__(self, model_dir: Path, threads: int = 0, prefix_cache_entries: int = 4):
        model_dir = Path(model_dir)
        onnx_path = model_dir / "model.onnx"
        if not onnx_path.exists():
            raise ModelLoadError(f"no model at {onnx_path}: run `make model` to build it")
        try:
            self.manifest = json.loads((model_dir / "querywise.json").read_text())
        except (OSError, ValueError):
            self.manifest = {}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # onnxruntime raises several unrelated types for a corrupt file
            raise ModelLoadError(f"cannot load the model at {model_dir}: {str(exc).splitlines()[0][:200]}") from exc
        self.kv_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        shape = self.session.get_inputs()[3].shape  # [batch, kv_heads, past, head_dim]
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.stop_ids = {self.tokenizer.token_to_id(t) for t in STOP_TOKENS} - {None}
        self.pad_id = self.tokenizer.token_to_id("<|endoftext|>") or 0
        self.prefix_cache = PrefixCache(prefix_cache_entries)

    @property
    def model_id(self) -> str:
        return self.manifest.get("model_id", "unknown")

    @property
    def fine_tuned(self) -> bool:
        return bool(self.manifest.get("adapter"))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _prefill(self, ids: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
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
        self, prompts: list[str], max_new_tokens: int = 160, sampling: list[Sampling] | None = None
    ) -> list[Generation]:
        """Greedy decoding of several prompts together.

        Each prompt is prefilled alone (prefill is compute-bound, so batching it gains little), then the KV caches
        are left-padded to one length and decoded together (decoding is bandwidth-bound: a batch of 8 costs little
        more than one). Padding never enters a weight matmul, only masked attention over zero keys, so every answer
        is identical to decoding that prompt alone, with int8 MatMulNBits kernels too (whose rounding depends on the
        rows they see when padded prompts are prefilled together).
        """
        encoded = [self.tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
        B = len(encoded)
        sampling = sampling or [GREEDY] * B
        rngs = [np.random.default_rng(s.seed) if s.temperature > 0 else None for s in sampling]
        lengths = [len(e) for e in encoded]
        T = max(lengths)
        first, caches = [], []
        for e in encoded:
            logits, present = self._prefill(e)
            first.append(_pick(logits, sampling[len(first)], rngs[len(first)]))
            caches.append(present)
        kv = []
        for k in range(len(self.kv_names)):
            buf = np.zeros((B, self.kv_heads, T, self.head_dim), dtype=np.float32)
            for i, c in enumerate(caches):
                buf[i, :, T - lengths[i] :] = c[k][0]
            kv.append(buf)
        mask = np.zeros((B, T), dtype=np.int64)
        for i, n in enumerate(lengths):
            mask[i, T - n :] = 1
        next_pos = np.array(lengths, dtype=np.int64)[:, None]
        nxt = np.array(first, dtype=np.int64)
        out_tokens: list[list[int]] = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for step in range(max_new_tokens):
            for i in range(B):
                if not done[i]:
                    if int(nxt[i]) in self.stop_ids:
                        done[i] = True
                    else:
                        out_tokens[i].append(int(nxt[i]))
            if done.all() or step == max_new_tokens - 1:
                break
            tokens = np.where(done, self.pad_id, nxt)[:, None].astype(np.int64)
            mask = np.concatenate([mask, np.ones((B, 1), dtype=np.int64)], axis=1)
            feed = {"input_ids": tokens, "attention_mask": mask, "position_ids": next_pos}
            feed |= dict(zip(self.kv_names, kv, strict=True))
            logits, *kv = self.session.run(None, feed)
            nxt = np.array([_pick(logits[i, -1], sampling[i], rngs[i]) for i in range(B)], dtype=np.int64)
            next_pos = next_pos + 1
        return [
            Generation(self.tokenizer.decode(t, skip_special_tokens=True), len(e), len(t))
            for t, e in zip(out_tokens, encoded, strict=True)
        ]
