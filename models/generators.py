"""Interchangeable generators for evaluation: the serving engine (ONNX) and torch fp32 (base + adapter).

Both implement `app.nl2sql.generator.Generator`, so evaluation and benchmarks run the same questions through either
and compare quantization impact, with every decoding mode the service has (greedy, seeded sampling for
execution-guided candidates, schema-constrained identifiers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.core.config import get_settings
from app.nl2sql.constrain import IdentifierConstraint, token_texts
from app.nl2sql.engine import STOP_TOKENS, OnnxGenerator, pick_token
from app.nl2sql.generator import GREEDY, MAX_NEW_TOKENS, Generation, Generator, Sampling
from models.base import load_model, load_tokenizer
from models.bases import BaseSpec, get_base


class TorchGenerator:
    """The fp32 base model with optional trained weights merged (any method of `models.methods`), decoded token by
    token with its KV cache. Every token is chosen by the ONNX engine's `pick_token`, so both engines pick alike
    (greedy, sampled, constrained).

    Prompts are left-padded into one batch and decoded together, as transformers' `generate` does (position ids
    count real tokens, a finished row is fed padding until the batch ends): greedy answers are the ones `generate`
    gave. Not step-wise: rows cannot join a running batch (`decode_batch` refuses)."""

    stepwise = False

    def __init__(
        self, adapter: Path | None = None, threads: int = 0, base: BaseSpec | None = None, base_dir: Path | None = None
    ):
        """`base`: the registry base (default: BASE_MODEL's); `base_dir`: other weights of that base to start from
        (a run's `base_dir`, e.g. the served model merged); `adapter`: trained weights to merge (any method)."""
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.base_dir = Path(base_dir) if base_dir else (base or get_base()).model_dir
        model = load_model(self.base_dir)
        if adapter:
            from models.methods import load_merged

            model = load_merged(model, adapter)
        self.model = model.eval()
        self.tok = load_tokenizer(self.base_dir)
        self.tok.padding_side = "left"
        self.adapter = adapter
        self.stop_ids = [self.tok.convert_tokens_to_ids(t) for t in STOP_TOKENS]
        self._token_texts: list[str] | None = None

    @property
    def model_id(self) -> str:
        return f"torch-fp32:{self.adapter.name if self.adapter else 'base'}"

    @property
    def model_dir(self) -> Path:
        return Path(self.adapter) if self.adapter else self.base_dir

    @property
    def fine_tuned(self) -> bool:
        return self.adapter is not None

    @property
    def token_texts(self) -> list[str]:
        """The text of every token (for schema-constrained decoding), computed on first use."""
        if self._token_texts is None:
            self._token_texts = token_texts(self.tok.backend_tokenizer)
        return self._token_texts

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False).input_ids)

    def decode_batch(self):
        raise NotImplementedError(
            "TorchGenerator decodes whole batches only (stepwise is False): call generate(prompts, ...)"
        )

    def _picker(self, sampling: Sampling):
        """One row's token choice: its own seeded generator when it samples, its own constraint when it has names
        (built as the ONNX engine builds them for a row)."""
        rng = np.random.default_rng(sampling.seed) if sampling.temperature > 0 else None
        constraint = IdentifierConstraint(sampling.names, self.token_texts, self.stop_ids) if sampling.names else None
        return lambda logits: pick_token(logits, sampling, rng, constraint)

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS, sampling: Sequence[Sampling] | None = None
    ) -> list[Generation]:
        """Decode the prompts together (greedy unless `sampling` says otherwise for a row)."""
        import torch

        sampling = sampling or [GREEDY] * len(prompts)
        pickers = [self._picker(s) for s in sampling]
        enc = self.tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask, past = enc.input_ids, enc.attention_mask, None
        tokens: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                pos = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)[:, -ids.shape[1] :]
                out = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past, logits_to_keep=1
                )
                past, logits = out.past_key_values, out.logits[:, -1].float().numpy()
                fed = []
                for i, pick in enumerate(pickers):
                    tok = self.tok.pad_token_id if finished[i] else pick(logits[i])
                    if tok in self.stop_ids:
                        finished[i] = True
                    elif not finished[i]:
                        tokens[i].append(tok)
                    fed.append(tok)
                if all(finished):
                    break
                ids = torch.tensor(fed)[:, None]
                mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
        return [
            Generation(
                self.tok.decode(t, skip_special_tokens=True), int(enc.attention_mask[i].sum()), len(t), self.model_id
            )
            for i, t in enumerate(tokens)
        ]


def make_generator(
    engine: str, model_dir: Path | None = None, adapter: Path | None = None, threads: int = 0
) -> Generator:
    if engine == "onnx":
        return OnnxGenerator(model_dir or get_settings().model_dir, threads)
    if engine == "torch":
        return TorchGenerator(adapter, threads)
    raise ValueError(f"unknown engine {engine!r} (onnx or torch)")
