"""Logout across replicas: a logged-out session token is refused by every instance sharing the application database,
and after a restart, on SQLite and on a real PostgreSQL; and end to end, by a second app on the same files."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fakes import FakeGenerator
from tests_support import app_client, with_key

from app.auth.revocations import RevocationStore, revoked_sessions
from app.auth.sessions import COOKIE_NAME, SessionSigner

SECRET = b"s" * 32


def _replicas(url: str) -> tuple[SessionSigner, SessionSigner]:
    return SessionSigner(SECRET, 3600, RevocationStore(url)), SessionSigner(SECRET, 3600, RevocationStore(url))


def _logout_is_seen_everywhere(url: str) -> None:
    a, b = _replicas(url)
    token = a.issue("alice", "fp")
    other = a.issue("bob", "fp")
    assert b.verify(token) is not None  # a shared secret: each replica accepts the other's cookies
    a.revoke(token)
    assert a.verify(token) is None
    assert b.verify(token) is None  # the other replica
    restarted = SessionSigner(SECRET, 3600, RevocationStore(url))
    assert restarted.verify(token) is None  # and after a restart
    assert restarted.verify(other) is not None  # only that session ended
    b.revoke(token)  # logging out twice (or on two replicas) is fine


def test_logout_holds_across_replicas_and_restarts_sqlite(tmp_path):
    _logout_is_seen_everywhere(f"sqlite:///{tmp_path / 'app.sqlite'}")


@pytest.mark.postgres
def test_logout_holds_across_replicas_and_restarts_postgres(postgres_url):
    _logout_is_seen_everywhere(postgres_url)


def test_expired_revocations_are_deleted(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    store = RevocationStore(url)
    store.revoke("old", 1)  # expired long ago
    store.revoke("new", 2**40)
    with store.engine.connect() as conn:
        assert {r[0] for r in conn.execute(sa.select(revoked_sessions.c.signature))} == {"new"}


def test_an_unreachable_database_does_not_log_everybody_out(tmp_path):
    """The database down: other replicas' logouts cannot be seen, but sessions still work and the replica that took
    the logout still refuses that token from memory."""
    (tmp_path / "a-file").write_text("")  # the database's directory cannot be created: every statement fails
    signer = SessionSigner(SECRET, 3600, RevocationStore(f"sqlite:///{tmp_path / 'a-file' / 'app.sqlite'}"))
    token, other = signer.issue("alice", "fp"), signer.issue("bob", "fp")
    signer.revoke(token)
    assert signer.verify(token) is None and signer.verify(other) is not None


async def test_a_cookie_logged_out_on_one_app_is_refused_by_another(settings_for, demo_db):
    """Two app instances on the same keys file and application database, as two replicas behind a proxy. Nothing
    is asked of the model here, so the apps run on a fake generator with no answers (fast, no model needed)."""
    generator = FakeGenerator({})
    settings, key = with_key(settings_for(f"sqlite:///{demo_db}", auth_disabled=False), "alice")
    async with app_client(settings, generator) as one, app_client(settings, generator) as two:
        login = await one.post("/login", data={"key": key})
        assert login.status_code == 303
        cookie = {COOKIE_NAME: login.cookies[COOKIE_NAME]}
        assert (await two.get("/schema", cookies=cookie)).status_code == 200  # the session works on both
        assert (await one.post("/logout", cookies=cookie)).status_code == 303
        after = await two.get("/schema", cookies=cookie)
        assert after.status_code == 303 and after.headers["location"].startswith("/login"), after.text
    async with app_client(settings, generator) as restarted:
        assert (await restarted.get("/schema", cookies=cookie)).status_code == 303
