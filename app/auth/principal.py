"""Who is calling: an API key (header), a UI session (cookie), or anyone when auth is disabled for local use.

`Authenticator` lives on `app.state.auth`; the FastAPI dependencies in `app.api.deps` turn its answers into 401s,
login redirects and 429s.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from app.auth.keys import ApiKey, KeyStore
from app.auth.ratelimit import LoginThrottle, RateLimiter
from app.auth.revocations import RevocationStore
from app.auth.sessions import COOKIE_NAME, SessionSigner, fingerprint, session_secret
from app.core.config import Settings

log = logging.getLogger("querywise")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    name: str  # the key's name; "anonymous" when auth is disabled
    via: str  # "key" (header), "session" (UI cookie) or "open" (auth disabled)
    tables: frozenset[str] | None  # the key's table allow-list; None = every table
    per_minute: int
    burst: int
    rate_key: str  # whose bucket: the key, or the client address when auth is disabled
    admin: bool = False  # a key created with --admin (everyone when auth is disabled: every route is open then)


class LoginRequired(Exception):
    """A UI request without a valid session: answered with a redirect to /login (see app.main)."""


class RateLimited(Exception):
    def __init__(self, wait_s: float, principal: Principal, message: str | None = None):
        super().__init__(f"rate limited for {wait_s:.1f}s")
        self.wait_s, self.principal, self.message = wait_s, principal, message


class InFlight:
    """Requests each caller has in progress, capped: one key sending many slow questions (or questions whose
    clients went away) can hold only its share of the model queue and of the database workers."""

    def __init__(self, cap: int):
        self.cap = cap
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, principal: Principal):
        key = principal.rate_key
        if self.counts.get(key, 0) >= self.cap:
            raise RateLimited(
                1.0,
                principal,
                f"Too many requests in progress for this {'client' if principal.via == 'open' else 'key'} "
                f"(at most {self.cap} at once): wait for an answer, then ask again.",
            )
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            yield principal
        finally:
            self.counts[key] -= 1
            if not self.counts[key]:
                del self.counts[key]


def same_origin(request: Request) -> bool:
    """CSRF check for state-changing requests carried by the session cookie.

    The cookie is SameSite=Strict, so browsers do not attach it to requests started by another site; checking that
    a present Origin (else Referer) names this host covers older browsers and same-site-but-other-origin pages. A
    request with neither header comes from a non-browser client, which cannot hold the victim's cookie.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    if source == "null":
        return False
    return urlsplit(source).netloc.lower() == request.headers.get("host", "").lower()


class Authenticator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.disabled = settings.auth_disabled
        self.keys = KeyStore(settings.api_keys_file)
        self.limiter = RateLimiter()
        self.login_throttle = LoginThrottle()
        self.in_flight = InFlight(settings.max_in_flight_per_key)
        ttl = settings.session_ttl_hours * 3600
        # Logouts are recorded in the application database, so every replica (and a restart) refuses the cookie.
        revocations = None if self.disabled else RevocationStore(settings.querylog_url)
        self.sessions = None if self.disabled else SessionSigner(session_secret(settings), ttl, revocations)

    def log_startup(self) -> None:
        """Warn about open access, or explain how to get a key; a broken keys file stops the start."""
        if self.disabled:
            log.warning(
                "authentication is disabled (AUTH_DISABLED=true): every route is open to anyone who can reach this "
                "port; local use only"
            )
            return
        keys = self.keys.load()
        if keys:
            log.info("API keys: %d in %s", len(keys), self.keys.path)
        else:
            log.warning(
                "no API keys in %s: every protected route answers 401. Create one with "
                "`python -m app.keys create --name NAME` (or `make run` creates a local key)",
                self.keys.path,
            )

    # --- who is calling ----------------------------------------------------------------------------------------

    @staticmethod
    def presented_key(request: Request) -> str | None:
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            return value.strip() if scheme.lower() == "bearer" else ""
        return request.headers.get("x-api-key")

    def _principal(self, record: ApiKey, via: str) -> Principal:
        return Principal(
            name=record.name,
            via=via,
            tables=frozenset(record.tables) if record.tables is not None else None,
            per_minute=record.rate_limit_per_minute or self.settings.rate_limit_per_minute,
            burst=record.rate_limit_burst or self.settings.rate_limit_burst,
            rate_key=f"key:{record.name}",
            admin=record.admin,
        )

    def anonymous(self, request: Request) -> Principal:
        host = request.client.host if request.client else "unknown"
        s = self.settings
        return Principal("anonymous", "open", None, s.rate_limit_per_minute, s.rate_limit_burst, f"ip:{host}", True)

    def authenticate(self, request: Request) -> Principal | None:
        """The caller, or None. A key in a header wins over the cookie; a wrong key is not rescued by a cookie."""
        if self.disabled:
            return self.anonymous(request)
        key = self.presented_key(request)
        if key is not None:
            record = self.keys.verify(key)
            return self._principal(record, "key") if record else None
        return self.session_principal(request)

    def session_principal(self, request: Request) -> Principal | None:
        if self.sessions is None:
            return None
        session = self.sessions.verify(request.cookies.get(COOKIE_NAME))
        if session is None:
            return None
        record = self.keys.get(session.name)
        if record is None or fingerprint(record.sha256) != session.fingerprint:
            return None  # revoked (or re-created) since the login
        return self._principal(record, "session")

    def login(self, key: str) -> tuple[ApiKey, str] | None:
        """The key record and a new session token for a correct key, else None."""
        record = self.keys.verify(key.strip())
        if record is None or self.sessions is None:
            return None
        return record, self.sessions.issue(record.name, fingerprint(record.sha256))

    def rate_limit(self, principal: Principal) -> float:
        return self.limiter.acquire(principal.rate_key, principal.per_minute, principal.burst)
