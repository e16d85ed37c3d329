"""UI login sessions: an HMAC-signed cookie naming the key it was opened with; never the key itself.

Token: `<name b64>.<key fingerprint>.<expiry>.<nonce>.<signature>`, signed with HMAC-SHA256. The fingerprint is a
prefix of the key's stored hash, and every request checks the key still exists with that fingerprint, so revoking a
key (or re-creating one under the same name) ends its sessions at once. Logging out adds the token to a deny-list
held until the token would have expired anyway: in memory, and in the application database (`RevocationStore`), so
that every replica and a restarted one refuse it too.

Signed rather than server-side sessions so that several app instances behind one proxy accept each other's cookies:
they share the signing secret through `SESSION_SECRET`, or else through a secret file created next to the keys file
(which they share already), and the deny-list through the application database. Tokens expire after
`session_ttl_hours`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.auth.revocations import RevocationStore
from app.core.config import Settings

COOKIE_NAME = "qw_session"
log = logging.getLogger("querywise")


@dataclass(frozen=True)
class Session:
    name: str
    fingerprint: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(key_sha256: str) -> str:
    return key_sha256[:16]


class SessionSigner:
    def __init__(self, secret: bytes, ttl_s: int, store: RevocationStore | None = None):
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._revoked: dict[str, int] = {}  # signature → expiry
        self.store = store  # shared by every replica; None: this instance's memory only

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, name: str, key_fingerprint: str) -> str:
        expires = int(time.time()) + self.ttl_s
        payload = f"{_b64(name.encode())}.{key_fingerprint}.{expires}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None) -> Session | None:
        if not token or len(token) > 512:
            return None
        payload, _, sig = token.rpartition(".")
        if not payload or not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):
            return None
        try:
            name_b64, fp, expires_s, _nonce = payload.split(".")
            name, expires = _unb64(name_b64).decode(), int(expires_s)
        except (ValueError, UnicodeDecodeError):
            return None
        if expires < time.time():
            return None
        with self._lock:
            if sig in self._revoked:
                return None
        if self.store is not None and self.store.is_revoked(sig):
            return None  # logged out on another replica, or before a restart
        return Session(name, fp, expires)

    def revoke(self, token: str | None) -> None:
        session = self.verify(token)
        if session is None:
            return
        now = time.time()
        with self._lock:
            self._revoked = {s: exp for s, exp in self._revoked.items() if exp > now}  # drop the expired ones
            self._revoked[token.rpartition(".")[2]] = session.expires
        if self.store is not None:
            self.store.revoke(token.rpartition(".")[2], session.expires)


def session_secret(settings: Settings) -> bytes:
    """SESSION_SECRET when set; else a random secret kept in `<keys file>.session-secret` (0600), created once."""
    configured = settings.session_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = Path(settings.api_keys_file).with_suffix(".session-secret")
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("cannot use the session secret file %s (%s): using a per-process secret", path, exc)
        return secrets.token_bytes(32)
    secret = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: two instances starting at once
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex() + "\n")
        return secret
    except FileExistsError:  # another instance won the race: wait for it to finish writing
        for _ in range(50):
            text = path.read_text().strip()
            if len(text) == 64:
                return bytes.fromhex(text)
            time.sleep(0.02)
        raise RuntimeError(f"the session secret file {path} stays incomplete: remove it") from None
    except OSError as exc:
        log.warning(
            "cannot write the session secret file %s (%s): UI sessions will not survive a restart nor be shared "
            "between instances; set SESSION_SECRET",
            path,
            exc.strerror,
        )
        return secret
