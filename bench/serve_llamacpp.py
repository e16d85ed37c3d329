"""Serve the Querywise app with llama.cpp as its engine (benchmark only): same HTTP API, batching queue, guard and
executor as `python -m app`, only the generator differs, so the HTTP sweep compares engines and nothing else
(apart from schema-constrained decoding, which llama.cpp cannot do here: its answers are unconstrained).

    python -m bench.serve_llamacpp --gguf build/gguf/querywise-q4_1.gguf --fine-tuned   # HOST / PORT as for app
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn

from app.core.config import get_settings
from app.main import create_app
from bench.llamacpp import LlamaCppGenerator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", type=Path, required=True)
    p.add_argument("--fine-tuned", action="store_true", help="the GGUF holds our fine-tuned weights (no few-shot)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # llama.cpp is not stepwise (bench.llamacpp): whole batches, and no schema-constrained decoding
    settings = get_settings().model_copy(update={"continuous_batching": False, "schema_constrained": False})
    # prefix reuse on, as the service's own engine keeps a prefix cache
    generator = LlamaCppGenerator(
        a.gguf, a.fine_tuned, f"llama.cpp:{a.gguf.name}", settings.ort_threads, prefix_reuse=True
    )
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    uvicorn.run(create_app(settings, generator), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
