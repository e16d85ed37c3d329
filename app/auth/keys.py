"""API keys, stored only as hashes in one JSON file (`Settings.api_keys_file`), managed with `python -m app.keys`.

A key is `qw_` + 32 random bytes (URL-safe base64). The file keeps, per key: its name, the SHA-256 of the key, when it
was created, an optional table allow-list and optional rate-limit overrides. The plaintext key is shown once, when it
is created, and never stored.

Why a fast hash and not bcrypt/scrypt/argon2: those slow hashes protect low-entropy passwords from guessing. These
keys carry 256 bits of randomness, so guessing is hopeless whatever the hash's speed, and one SHA-256 per request
keeps authentication cheap. Comparison uses `hmac.compare_digest` against every stored hash, so the time taken does
not reveal how much of a hash matched or which key did.

The server re-reads the file when it changes on disk (mtime and size), so `create` and `revoke` take effect on a
running server without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

KEY_PREFIX = "qw_"
FILE_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# `name` or `schema.name`, the forms the SQL guard reports tables in (lowercased).
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")

log = logging.getLogger("querywise")


class KeyFileError(Exception):
    """The keys file cannot be read or written, or a request to change it is invalid; the message is for the user."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str  # hex digest of the key
    created_at: str  # ISO 8601, UTC
    tables: tuple[str, ...] | None = None  # allow-list (lowercased); None = every table
    rate_limit_per_minute: int | None = None  # None = Settings.rate_limit_per_minute
    rate_limit_burst: int | None = None  # None = Settings.rate_limit_burst
    admin: bool = False  # may start a specialize run and load or roll back the served model

    def as_json(self) -> dict:
        d = asdict(self)
        d["tables"] = list(self.tables) if self.tables is not None else None
        return d


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    key: str = field(repr=False)  # the plaintext, for the caller to show once


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def normalize_tables(tables: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    if tables is None:
        return None
    cleaned = [t.strip().lower() for t in tables if t.strip()]
    if not cleaned:
        raise KeyFileError("the table allow-list is empty: give at least one table, or none for all tables")
    bad = [t for t in cleaned if not TABLE_RE.match(t)]
    if bad:
        raise KeyFileError(f"not a table name: {', '.join(bad)} (use name or schema.name)")
    return tuple(dict.fromkeys(cleaned))


def _parse_record(raw: object, where: Path) -> ApiKey:
    if not isinstance(raw, dict):
        raise KeyFileError(f"{where}: every entry of `keys` must be an object")
    try:
        name, digest, created = raw["name"], raw["sha256"], raw.get("created_at", "")
    except KeyError as exc:
        raise KeyFileError(f"{where}: a key entry lacks {exc.args[0]!r}") from None
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise KeyFileError(f"{where}: invalid key name {name!r}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise KeyFileError(f"{where}: key {name!r} has no valid sha256 hash")
    tables = raw.get("tables")
    if tables is not None and not (isinstance(tables, list) and all(isinstance(t, str) for t in tables)):
        raise KeyFileError(f"{where}: key {name!r}: `tables` must be a list of table names or null")
    limits = {k: raw.get(k) for k in ("rate_limit_per_minute", "rate_limit_burst")}
    for k, v in limits.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise KeyFileError(f"{where}: key {name!r}: `{k}` must be a positive integer or null")
    admin = raw.get("admin", False)
    if not isinstance(admin, bool):
        raise KeyFileError(f"{where}: key {name!r}: `admin` must be true or false")
    try:
        tables = normalize_tables(tables)
    except KeyFileError as exc:
        raise KeyFileError(f"{where}: key {name!r}: {exc}") from None
    return ApiKey(name, digest, str(created), tables, **limits, admin=admin)


class KeyStore:
    """The keys file: read (and re-read when it changes), verify a presented key, create, revoke."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: tuple[ApiKey, ...] = ()
        self._broken: tuple[int, int] | None = None  # stamp of a broken file already reported

    # --- reading -----------------------------------------------------------------------------------------------

    def _read(self) -> tuple[ApiKey, ...]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise KeyFileError(f"cannot read the keys file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyFileError(f"{self.path} is not valid JSON (line {exc.lineno}): fix or remove it") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyFileError(f"{self.path}: expected an object with a `keys` list")
        keys = tuple(_parse_record(r, self.path) for r in data["keys"])
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise KeyFileError(f"{self.path}: duplicate key names")
        return keys

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def load(self) -> tuple[ApiKey, ...]:
        """The current keys; raises KeyFileError when the file is unreadable (used at start and by the CLI)."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp or stamp is None:
                self._keys, self._stamp = self._read(), stamp
            return self._keys

    def keys(self) -> tuple[ApiKey, ...]:
        """The current keys for request handling: a file broken after start keeps the last good keys."""
        try:
            return self.load()
        except KeyFileError as exc:
            # Not raised into a request (the caller would get a 500): logged once per broken version of the file.
            with self._lock:
                stamp = self._file_stamp()
                if stamp != self._broken:
                    self._broken = stamp
                    log.error("keys file unusable, keeping the keys read before: %s", exc)
                return self._keys

    def verify(self, presented: str) -> ApiKey | None:
        """The key record matching `presented`, or None. Constant-time per stored hash, no early exit."""
        if not presented or len(presented) > 256:
            return None
        digest = hash_key(presented).encode()
        found = None
        for record in self.keys():
            if hmac.compare_digest(digest, record.sha256.encode()):
                found = record
        return found

    def get(self, name: str) -> ApiKey | None:
        return next((k for k in self.keys() if k.name == name), None)

    # --- writing (the CLI) -------------------------------------------------------------------------------------

    def _write(self, keys: tuple[ApiKey, ...]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = json.dumps({"version": FILE_VERSION, "keys": [k.as_json() for k in keys]}, indent=2) + "\n"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
            os.replace(tmp, self.path)  # atomic: a server reading meanwhile sees the old or the new file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KeyFileError(f"cannot write the keys file {self.path}: {exc.strerror}") from None

    def create(
        self,
        name: str,
        tables: list[str] | None = None,
        rate_limit_per_minute: int | None = None,
        rate_limit_burst: int | None = None,
        admin: bool = False,
    ) -> NewKey:
        if not NAME_RE.match(name or ""):
            raise KeyFileError(
                f"invalid key name {name!r}: 1-64 characters, letters, digits, '_', '.', '-', starting with a letter "
                "or digit"
            )
        for label, v in (("rate limit", rate_limit_per_minute), ("burst", rate_limit_burst)):
            if v is not None and v < 1:
                raise KeyFileError(f"the {label} must be a positive integer")
        keys = self.load()
        if any(k.name == name for k in keys):
            raise KeyFileError(f"a key named {name!r} already exists (revoke it first, or pick another name)")
        key = generate_key()
        record = ApiKey(
            name=name,
            sha256=hash_key(key),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            tables=normalize_tables(tables),
            rate_limit_per_minute=rate_limit_per_minute,
            rate_limit_burst=rate_limit_burst,
            admin=admin,
        )
        self._write((*keys, record))
        return NewKey(record, key)

    def revoke(self, name: str) -> ApiKey:
        keys = self.load()
        record = next((k for k in keys if k.name == name), None)
        if record is None:
            known = ", ".join(k.name for k in keys) or "none"
            raise KeyFileError(f"no key named {name!r} (keys: {known})")
        self._write(tuple(k for k in keys if k.name != name))
        return record
