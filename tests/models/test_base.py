"""Loading a base from its GGUF: one load parses the file's header once (transformers parses it for every part of
the load; ~11 s each for Qwen's vocabulary), and the parser is transformers' own again after the load."""

import gguf
import pytest
from transformers import AutoTokenizer

from models.base import gguf_parsed_once
from models.bases import SMOLLM2, gguf_path

pytestmark = pytest.mark.slow  # reads the SmolLM2 GGUF (seconds)


def test_a_gguf_load_parses_the_file_once_and_restores_the_parser(monkeypatch):
    parsed = []

    class CountingReader(gguf.GGUFReader):
        def __init__(self, path, mode="r"):
            parsed.append(str(path))
            super().__init__(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    src = gguf_path(SMOLLM2)
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)  # the config, then the vocabulary
        assert gguf.GGUFReader(src) is gguf.GGUFReader(str(src))  # one reader per file within the block
    assert len(parsed) == 1 and tok.convert_tokens_to_ids("<|im_end|>") == 2
    assert gguf.GGUFReader is CountingReader
    AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    assert len(parsed) == 3  # outside the block, transformers parses per part again
