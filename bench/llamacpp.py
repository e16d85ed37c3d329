"""llama.cpp (through llama-cpp-python) behind the generator interface the service and the evaluation use.

`generate(prompts, max_new_tokens)` returns `Generation`s like `OnnxGenerator`, so the same benchmark, the same
evaluation loop (models.evaluate.run) and the same HTTP service can run on it. llama-cpp-python decodes one
sequence per context, so a batch is served prompt after prompt.

Prefix reuse: llama-cpp-python keeps the KV cache of the previous prompt and prefills only what follows the shared
prefix (two questions on one schema). The engine benchmark turns it off (`prefix_reuse=False`: the context is reset
before each prompt), as it does our engine's prefix cache, so every engine prefills the whole prompt; the HTTP
server keeps it on, as our service keeps its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.nl2sql.engine import STOP_TOKENS, Generation


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppGenerator:
    def __init__(
        self,
        gguf: Path,
        fine_tuned: bool,
        model_id: str,
        threads: int = 0,
        n_ctx: int = 4096,
        prefix_reuse: bool = False,
    ):
        from llama_cpp import Llama

        n = threads or os.cpu_count() or 1  # llama-cpp-python's default is half the cores
        self.path = Path(gguf)
        self.llm = Llama(
            model_path=str(gguf), n_ctx=n_ctx, n_batch=512, n_threads=n, n_threads_batch=n, seed=0, verbose=False
        )
        self._fine_tuned, self._model_id, self.prefix_reuse = fine_tuned, model_id, prefix_reuse
        self.stop_ids = {t for s in STOP_TOKENS for t in self.llm.tokenize(s.encode(), add_bos=False, special=True)}
        self.force = False  # True: ignore the stop tokens and always decode max_new_tokens (timing)
        self.stamps: list[float] | None = None  # when set, the time each new token arrives is appended

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def fine_tuned(self) -> bool:
        return self._fine_tuned

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def generate(self, prompts: list[str], max_new_tokens: int = 160, sampling: list | None = None) -> list[Generation]:
        """Greedy, or per prompt what `sampling[i]` asks (the service's `Sampling`: temperature, top_k, seed)."""
        out = []
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            budget = min(max_new_tokens, self.llm.n_ctx() - len(ids))
            tokens: list[int] = []
            temp = getattr(sampling[i], "temperature", 0.0) if sampling else 0.0
            top_k = getattr(sampling[i], "top_k", 40) if temp > 0 else 1
            if temp > 0:
                self.llm.set_seed(getattr(sampling[i], "seed", 0))
            if not self.prefix_reuse:
                self.llm.reset()
            if budget > 0:
                for tok in self.llm.generate(ids, top_k=top_k, temp=temp, repeat_penalty=1.0):
                    if tok in self.stop_ids and not self.force:
                        break
                    tokens.append(tok)
                    if self.stamps is not None:
                        self.stamps.append(time.perf_counter())
                    if len(tokens) >= budget:
                        break
            text = self.llm.detokenize(tokens, special=False).decode("utf-8", errors="replace")
            out.append(Generation(text, len(ids), len(tokens)))
        return out
