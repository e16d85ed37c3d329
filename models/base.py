"""The base model, converted once from its GGUF to safetensors under build/base/<name>/ (see `models.bases`).

Loading from GGUF takes ~40 s (SmolLM2) to ~2 min (Qwen) and fixes nothing in the tokenizer, so
`python -m models.base` writes the converted model once with the tokenizer repaired: the GGUF tokenizers of both
bases report `<|endoftext|>` as EOS, while a chat turn ends with `<|im_end|>`; no BOS; no space clean-up on decode.

    python -m models.base                            # the base named by BASE_MODEL (default: Qwen2.5-Coder-1.5B)
    python -m models.base --base smollm2-135m        # the earlier base
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from app.core.config import get_settings  # noqa: E402
from models.bases import BASES, BaseModelError, BaseSpec, get_base, gguf_path  # noqa: E402

EOS = "<|im_end|>"
PAD = "<|endoftext|>"


def load_tokenizer(path: Path | str | None = None):
    """The repaired tokenizer of a model directory; of a registry base never converted, the one its GGUF holds."""
    from transformers import AutoTokenizer

    path = Path(path or get_base().model_dir)
    spec = base_at(path)
    if spec is not None and not (path / "tokenizer.json").exists():
        return gguf_tokenizer(spec)
    tok = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=False)
    tok.eos_token = EOS
    tok.pad_token = tok.pad_token or PAD
    tok.clean_up_tokenization_spaces = False
    return tok


def base_at(path: Path) -> BaseSpec | None:
    """The registry base whose converted directory `path` is, if any (none when BASE_MODEL_DIR names the weights)."""
    if get_settings().base_model_dir:
        return None
    return next((b for b in BASES.values() if b.model_dir == Path(path)), None)


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within the block each GGUF file's header is parsed once. transformers parses it anew for every part of one
    load (the tokenizer's config and vocabulary, the model's config and weights: four times), and a header with
    Qwen's 152k-token vocabulary takes ~11 s to parse here; the readers are kept for the block only. transformers
    imports `gguf.GGUFReader` at each call, so the module attribute is what is swapped (one loader at a time: the
    export and conversion commands, and tests, load a GGUF from one thread)."""
    import gguf

    original = gguf.GGUFReader
    readers: dict = {}

    def reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


@functools.cache
def gguf_tokenizer(spec: BaseSpec):
    """The base's tokenizer read from its GGUF (~40 s for Qwen's 152k-token vocabulary: read once per process),
    repaired: a chat turn ends with `<|im_end|>` (the GGUF says `<|endoftext|>`), no BOS, no space clean-up."""
    from transformers import AutoTokenizer

    src = gguf_path(spec)
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    tok.eos_token = EOS
    tok.pad_token = PAD
    tok.add_bos_token = False
    tok.clean_up_tokenization_spaces = False
    return tok


def load_gguf(spec: BaseSpec):
    """The base model and its repaired tokenizer, loaded from the GGUF into memory (fp32; nothing written)."""
    import torch
    from transformers import AutoModelForCausalLM

    src = gguf_path(spec)
    print(f"loading {spec.title} from {src.name} (dequantizing the GGUF, 1-2 min) ...", flush=True)
    with gguf_parsed_once():
        tok = gguf_tokenizer(spec)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(EOS), tok.convert_tokens_to_ids(PAD)]
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids(PAD)
    model.generation_config.bos_token_id = None
    model.config.eos_token_id = tok.convert_tokens_to_ids(EOS)
    return model, tok


def load_model(path: Path | str):
    """The fp32 model of a model directory; of a registry base never converted, read from its GGUF in memory."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = base_at(Path(path))
    if spec is not None and not (Path(path) / "config.json").exists():
        return load_base(spec)[0]
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def save_tokenizer(tok, out_dir: Path) -> None:
    tok.save_pretrained(out_dir)
    # A GGUF tokenizer saves the whole GGUF file as tokenizer.model; tokenizer.json carries everything.
    (out_dir / "tokenizer.model").unlink(missing_ok=True)


def load_base(spec: BaseSpec | None = None):
    """(model, tokenizer) of the base: from its converted directory when there is one (seconds), else from the GGUF
    in memory, so that a one-off export needs no converted copy on disk (2.4 GB for Qwen)."""
    spec = spec or get_base()
    if not (spec.model_dir / "config.json").exists() and not get_settings().base_model_dir:
        return load_gguf(spec)
    import torch
    from transformers import AutoModelForCausalLM

    if not (spec.model_dir / "config.json").exists():
        raise BaseModelError(f"BASE_MODEL_DIR={spec.model_dir} has no config.json (a Hugging Face model directory)")
    return AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype=torch.float32), load_tokenizer(spec.model_dir)


def convert(spec: BaseSpec | None = None, force: bool = False) -> Path:
    """Write the base once to build/base/<name> (what training loads)."""
    spec = spec or get_base()
    out_dir = spec.model_dir
    if (out_dir / "config.json").exists() and not force:
        print(f"base model ready: {out_dir}")
        return out_dir
    if get_settings().base_model_dir:
        raise BaseModelError(f"BASE_MODEL_DIR={out_dir} has no config.json (a Hugging Face model directory)")
    model, tok = load_gguf(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tok, out_dir)
    print(f"wrote {out_dir}")
    return out_dir


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=None, help="registry name (default: BASE_MODEL or qwen2.5-coder-1.5b)")
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    try:
        convert(get_base(a.base), a.force)
    except BaseModelError as exc:
        sys.exit(str(exc))
