"""`python -m app`: check the model artifact, then serve on http://127.0.0.1:8000 (HOST / PORT to change).

A missing or corrupt model (or keys file) is reported in one line and the process exits non-zero instead of starting.
"""

import logging
import os
import sys

from pydantic import ValidationError

from app.auth.keys import KeyFileError, KeyStore
from app.core.config import get_settings
from app.nl2sql.engine import ModelLoadError, OnnxGenerator


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        sys.exit(f"querywise: cannot start: {problems}")
    if not settings.auth_disabled:
        try:
            KeyStore(settings.api_keys_file).load()
        except KeyFileError as exc:
            sys.exit(f"querywise: cannot start: {exc}")
    try:
        generator = OnnxGenerator(settings.model_dir, settings.ort_threads, settings.prefix_cache_entries)
    except ModelLoadError as exc:
        sys.exit(f"querywise: cannot start: {exc}")
    from app.main import create_app
    from app.server import serve

    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    serve(create_app(settings, generator), host=host, port=port, trusted_proxies=settings.trusted_proxies)


if __name__ == "__main__":
    main()
