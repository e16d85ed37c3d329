"""Logged-out UI sessions, kept in the application database (the query log's) so every replica and a restart agree.

A session token is signed, not stored (`app.auth.sessions`): any replica sharing the secret accepts it until it
expires. Logging out therefore records the token's signature here, with the token's expiry; every replica checks the
table when it verifies a cookie, and rows past their expiry are deleted as new ones arrive. The table is created the
way the query log creates its own (`metadata.create_all` on first use), in the same database.

When the database cannot be reached, lookups answer "not revoked" for `retry_interval_s` (logged): a UI that stays up
beats one that logs everybody out; the replica that took the logout still refuses the token from memory.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger("querywise")

metadata = sa.MetaData()
revoked_sessions = sa.Table(
    "revoked_sessions",
    metadata,
    sa.Column("signature", sa.String(64), primary_key=True),  # the token's HMAC: not the token, not the key
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),  # unix seconds; the row is useless after
)


class RevocationStore:
    def __init__(self, url: str, retry_interval_s: float = 5.0):
        self.retry_interval_s = retry_interval_s
        backend = sa.engine.make_url(url).get_backend_name()
        # A lookup runs while a request is being authenticated: a dead server must fail fast.
        connect_args = {"connect_timeout": 2} if backend.startswith("postgres") else {"timeout": 2}
        self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        self._sqlite_path = url.removeprefix("sqlite:///") if backend == "sqlite" else None
        self._ready = False
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _create(self) -> None:
        if not self._ready:
            if self._sqlite_path:
                Path(self._sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            metadata.create_all(self.engine)
            self._ready = True

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_interval_s
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("session revocations: cannot %s (the database is unavailable): %s", what, first)

    def revoke(self, signature: str, expires_at: int) -> bool:
        """Record a logged-out token; False when the database could not take it."""
        now = int(time.time())
        try:
            with self._lock:
                self._create()
            with self.engine.begin() as conn:
                conn.execute(revoked_sessions.delete().where(revoked_sessions.c.expires_at < now))
                exists = conn.execute(
                    sa.select(revoked_sessions.c.signature).where(revoked_sessions.c.signature == signature)
                ).first()
                if exists is None:
                    conn.execute(revoked_sessions.insert().values(signature=signature, expires_at=expires_at))
            return True
        except sa.exc.IntegrityError:  # another replica recorded the same logout a moment ago
            return True
        except Exception as exc:  # noqa: BLE001 - logged; the caller keeps the revocation in memory
            self._failed("record a logout", exc)
            return False

    def is_revoked(self, signature: str) -> bool:
        if not self._available():
            return False
        try:
            with self._lock:
                self._create()
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(revoked_sessions.c.signature).where(revoked_sessions.c.signature == signature)
                ).first()
            return row is not None
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self._failed("check a session", exc)
            return False

    def close(self) -> None:
        self.engine.dispose()
