"""`python -m app.keys`: manage API keys in the keys file (`API_KEYS_FILE`, default build/api_keys.json).

    python -m app.keys create --name alice [--tables orders,customers] [--rate-limit 30] [--burst 10] [--admin]
    python -m app.keys list
    python -m app.keys revoke alice
    python -m app.keys ensure-local      # `make run`: a key named `local` when there is none yet

`create` prints the key once; the file keeps only its SHA-256. A running server picks changes up without a restart.
Errors are one line on stderr and exit status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.auth.keys import KeyFileError, KeyStore
from app.core.config import BUILD_DIR, get_settings

LOCAL_KEY_NAME = "local"
LOCAL_KEY_FILE = BUILD_DIR / "local-api-key.txt"


def _tables(text: str | None) -> list[str] | None:
    return None if text is None else text.split(",")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_create(store: KeyStore, a: argparse.Namespace) -> int:
    new = store.create(a.name, _tables(a.tables), a.rate_limit, a.burst, admin=a.admin)
    scope = ", ".join(new.record.tables) if new.record.tables else "all tables"
    print(f"created {'admin ' if a.admin else ''}key {new.record.name!r} ({scope}) in {store.path}")
    print("store it now; it is not shown again and cannot be recovered:")
    print(new.key)
    return 0


def cmd_list(store: KeyStore, a: argparse.Namespace) -> int:
    keys = store.load()
    if not keys:
        print(f"no keys in {store.path}; create one with: python -m app.keys create --name NAME")
        return 0
    print(f"{len(keys)} key(s) in {store.path} (only hashes are stored):")
    for k in keys:
        tables = ",".join(k.tables) if k.tables is not None else "*"
        limit = f"{k.rate_limit_per_minute or 'default'}/min burst {k.rate_limit_burst or 'default'}"
        print(f"  {k.name:<20} created {k.created_at}  tables {tables}  rate {limit}{'  admin' if k.admin else ''}")
    return 0


def cmd_revoke(store: KeyStore, a: argparse.Namespace) -> int:
    store.revoke(a.name)
    print(f"revoked key {a.name!r}: it stops working at once, its UI sessions too")
    return 0


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # so the new file gets mode 0600 even if an old one was wider
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def cmd_ensure_local(store: KeyStore, a: argparse.Namespace) -> int:
    """For `make run`: with no keys yet, create `local` and keep its plaintext in a 0600 file the user can reopen."""
    settings = get_settings()
    if settings.auth_disabled:
        print("==> authentication is disabled (AUTH_DISABLED=true): no key needed; local use only")
        return 0
    out = Path(a.out)
    keys = store.load()
    if keys:
        saved = out.read_text().strip() if out.exists() else ""
        if saved and store.verify(saved):
            print(f"==> API key: in {out} (log in to the UI with it, or send it as X-API-Key)")
        else:
            print(f"==> API keys: {len(keys)} in {store.path}; manage them with `python -m app.keys list|create`")
        return 0
    new = store.create(LOCAL_KEY_NAME)
    _write_private(out, new.key + "\n")
    bar = "=" * 78
    print(f"{bar}\n  Created an API key for local use (name '{LOCAL_KEY_NAME}'):\n\n    {new.key}\n")
    print(f"  Kept in {out} (mode 0600, plaintext); the keys file {store.path} holds only its hash.")
    print(f"  Log in to the UI with it, or call the API with:  -H 'X-API-Key: {new.key}'\n{bar}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.keys", description="Manage Querywise API keys.")
    p.add_argument("--file", help="the keys file (default: API_KEYS_FILE, else build/api_keys.json)")
    sub = p.add_subparsers(dest="command", required=True, metavar="{create,list,revoke,ensure-local}")
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True, help="a unique name: who or what uses the key")
    c.add_argument("--tables", help="comma-separated tables this key may read (default: all)")
    c.add_argument("--rate-limit", type=_positive, help="requests per minute (default: RATE_LIMIT_PER_MINUTE)")
    c.add_argument("--burst", type=_positive, help="requests at once (default: RATE_LIMIT_BURST)")
    c.add_argument("--admin", action="store_true", help="may specialize, load and roll back the served model")
    c.set_defaults(run=cmd_create)
    sub.add_parser("list", help="list keys (names and limits; never the keys)").set_defaults(run=cmd_list)
    r = sub.add_parser("revoke", help="delete a key by name")
    r.add_argument("name")
    r.set_defaults(run=cmd_revoke)
    e = sub.add_parser("ensure-local", help="create a key named `local` if the file has none")
    e.add_argument("--out", default=str(LOCAL_KEY_FILE), help="where to keep the local key (default: %(default)s)")
    e.set_defaults(run=cmd_ensure_local)
    a = p.parse_args(argv)
    store = KeyStore(Path(a.file) if a.file else get_settings().api_keys_file)
    try:
        return a.run(store, a)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
