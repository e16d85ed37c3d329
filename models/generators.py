"""Interchangeable generators for evaluation: the serving engine (ONNX) and torch fp32 (base + adapter).

Both take a list of prompts and return `app.nl2sql.engine.Generation`s, so evaluation and benchmarks can run the
same questions through either and compare quantization impact.
"""

from __future__ import annotations

from pathlib import Path

from app.core.config import get_settings
from app.nl2sql.engine import Generation, OnnxGenerator
from models.base import load_tokenizer
from models.bases import get_base


class TorchGenerator:
    """transformers `generate` (greedy, KV cache) on the fp32 base model with an optional LoRA adapter merged."""

    def __init__(self, adapter: Path | None = None, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        base_dir = get_base().model_dir
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            from models.adapter_io import materialize

            model = PeftModel.from_pretrained(model, materialize(adapter)).merge_and_unload()
        self.model = model.eval()
        self.tok = load_tokenizer(base_dir)
        self.tok.padding_side = "left"
        self.adapter = adapter
        self.stop_ids = [self.tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>", "<|im_start|>")]

    @property
    def model_id(self) -> str:
        return f"torch-fp32:{self.adapter.name if self.adapter else 'base'}"

    @property
    def fine_tuned(self) -> bool:
        return self.adapter is not None

    def generate(self, prompts: list[str], max_new_tokens: int = 160) -> list[Generation]:
        import torch

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tok.pad_token_id,
            )
        T = enc.input_ids.shape[1]
        gens = []
        for i in range(len(prompts)):
            new = [t for t in out[i, T:].tolist() if t not in self.stop_ids]
            gens.append(
                Generation(self.tok.decode(new, skip_special_tokens=True), int(enc.attention_mask[i].sum()), len(new))
            )
        return gens


def make_generator(engine: str, model_dir: Path | None = None, adapter: Path | None = None, threads: int = 0):
    if engine == "onnx":
        return OnnxGenerator(model_dir or get_settings().model_dir, threads)
    if engine == "torch":
        return TorchGenerator(adapter, threads)
    raise ValueError(f"unknown engine {engine!r} (onnx or torch)")
