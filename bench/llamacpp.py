"""llama.cpp (through llama-cpp-python) as a `Generator` (app.nl2sql.generator), for the benchmarks.

`generate` returns `Generation`s like `OnnxGenerator`, so the same engine benchmark, the same evaluation loop
(models.evaluate.run) and the same HTTP service can run on it. llama-cpp-python decodes one sequence per context,
so a batch is served prompt after prompt and there is no step-wise decoding (`stepwise` is False: the service
batches it whole). Sampling takes the temperature, top-k and seed of each row's `Sampling`; schema-constrained
decoding (`Sampling.names`) needs a token-by-token choice that llama.cpp's loop does not offer here, so it is
refused rather than silently ignored.

Prefix reuse: llama-cpp-python keeps the KV cache of the previous prompt and prefills only what follows the shared
prefix (two questions on one schema). The engine benchmark turns it off (`prefix_reuse=False`: the context is reset
before each prompt), as it does our engine's prefix cache, so every engine prefills the whole prompt; the HTTP
server keeps it on, as our service keeps its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from app.nl2sql.engine import STOP_TOKENS
from app.nl2sql.generator import GREEDY, MAX_NEW_TOKENS, Generation, Sampling


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppGenerator:
    stepwise = False

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
        self.llm = Llama(
            model_path=str(gguf), n_ctx=n_ctx, n_batch=512, n_threads=n, n_threads_batch=n, seed=0, verbose=False
        )
        self._fine_tuned, self._model_id, self.prefix_reuse = fine_tuned, model_id, prefix_reuse
        self.stop_ids = {t for s in STOP_TOKENS for t in self.encode(s)}

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model_dir(self) -> None:
        return None  # one GGUF file, not an export directory: nothing to hot swap or specialize from

    @property
    def fine_tuned(self) -> bool:
        return self._fine_tuned

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def decode_batch(self) -> NoReturn:
        raise NotImplementedError(
            "llama-cpp-python decodes one sequence per context: no step-wise decoding (use generate; the service "
            "batches this generator whole)"
        )

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = MAX_NEW_TOKENS,
        sampling: Sequence[Sampling] | None = None,
        *,
        ignore_stop: bool = False,
        on_token: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Greedy, or per prompt what `sampling[i]` asks. For the benchmark: `ignore_stop` decodes exactly
        `max_new_tokens` (the same work whatever the weights write), `on_token` is called with each new token."""
        sampling = sampling or [GREEDY] * len(prompts)
        if any(s.names is not None for s in sampling):
            raise ValueError(
                "schema-constrained decoding (Sampling.names) needs a stepwise engine such as OnnxGenerator: "
                "llama.cpp cannot refuse a token here (serve it with SCHEMA_CONSTRAINED=false)"
            )
        out = []
        for prompt, s in zip(prompts, sampling, strict=True):
            ids = self.encode(prompt)
            budget = min(max_new_tokens, self.llm.n_ctx() - len(ids))
            tokens: list[int] = []
            if s.temperature > 0:
                self.llm.set_seed(s.seed)
            if not self.prefix_reuse:
                self.llm.reset()
            if budget > 0:
                top_k = s.top_k if s.temperature > 0 else 1
                for tok in self.llm.generate(ids, top_k=top_k, temp=s.temperature, repeat_penalty=1.0):
                    if tok in self.stop_ids and not ignore_stop:
                        break
                    tokens.append(tok)
                    if on_token is not None:
                        on_token(tok)
                    if len(tokens) >= budget:
                        break
            text = self.llm.detokenize(tokens, special=False).decode("utf-8", errors="replace")
            out.append(Generation(text, len(ids), len(tokens), self._model_id))
        return out
