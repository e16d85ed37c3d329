"""The keys file, session tokens, token buckets and the `python -m app.keys` CLI (real files, real subprocesses)."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth.keys import KeyFileError, KeyStore, hash_key
from app.auth.ratelimit import LoginThrottle, RateLimiter, retry_after_header
from app.auth.sessions import SessionSigner, fingerprint

ROOT = Path(__file__).resolve().parents[2]


def test_created_key_is_stored_only_as_its_hash_in_a_private_file(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    new = store.create("alice", tables=["Orders", " customers ", "orders"])
    assert new.key.startswith("qw_") and len(new.key) > 40
    text = store.path.read_text()
    assert new.key not in text and new.key[3:] not in text
    assert hash_key(new.key) in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert json.loads(text)["keys"][0]["tables"] == ["orders", "customers"]  # lowercased, deduplicated
    assert store.verify(new.key).name == "alice"
    assert store.verify(new.key + "x") is None and store.verify("") is None


def test_two_keys_are_different_and_each_verifies_as_itself(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    a, b = store.create("a"), store.create("b")
    assert a.key != b.key
    assert store.verify(a.key).name == "a" and store.verify(b.key).name == "b"


def test_invalid_requests_are_refused_with_a_message(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    store.create("alice")
    with pytest.raises(KeyFileError, match="already exists"):
        store.create("alice")
    with pytest.raises(KeyFileError, match="invalid key name"):
        store.create("no spaces")
    with pytest.raises(KeyFileError, match="empty"):
        store.create("bob", tables=[" ", ""])
    with pytest.raises(KeyFileError, match="not a table name"):
        store.create("bob", tables=["orders; drop"])
    with pytest.raises(KeyFileError, match="no key named"):
        store.revoke("nobody")


def test_a_running_store_sees_revocation_and_new_keys_written_by_another_process(tmp_path):
    server, cli = KeyStore(tmp_path / "keys.json"), KeyStore(tmp_path / "keys.json")
    alice = cli.create("alice")
    assert server.verify(alice.key) is not None
    cli.revoke("alice")
    assert server.verify(alice.key) is None
    bob = cli.create("bob")
    assert server.verify(bob.key).name == "bob"


def test_a_file_broken_after_start_keeps_the_last_good_keys(tmp_path, caplog):
    store = KeyStore(tmp_path / "keys.json")
    alice = store.create("alice")
    assert store.verify(alice.key)
    store.path.write_text("{ broken")
    assert store.verify(alice.key).name == "alice"
    assert "keys file unusable" in caplog.text
    with pytest.raises(KeyFileError, match="not valid JSON"):
        store.load()


def test_session_tokens_are_signed_expire_and_can_be_revoked():
    signer = SessionSigner(b"s" * 32, ttl_s=60)
    token = signer.issue("alice", fingerprint("ab" * 32))
    session = signer.verify(token)
    assert session.name == "alice" and session.fingerprint == "ab" * 8
    assert signer.verify(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]) is None  # signature changed
    forged = token.replace(token.split(".")[0], "Ym9i")  # name changed to "bob", old signature
    assert signer.verify(forged) is None
    assert SessionSigner(b"t" * 32, ttl_s=60).verify(token) is None  # another secret
    signer.revoke(token)
    assert signer.verify(token) is None
    expired = SessionSigner(b"s" * 32, ttl_s=-1).issue("alice", "00")
    assert signer.verify(expired) is None
    for junk in ("", "a.b", "....", "x" * 600):
        assert signer.verify(junk) is None


def test_token_bucket_allows_the_burst_then_refills_at_the_rate():
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.acquire("k", per_minute=60, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k", per_minute=60, burst=3)
    assert wait == pytest.approx(1.0) and retry_after_header(wait) == "1"
    assert limiter.acquire("other", per_minute=60, burst=3) == 0.0  # buckets are per key
    now[0] += 1.0
    assert limiter.acquire("k", per_minute=60, burst=3) == 0.0
    assert limiter.acquire("k", per_minute=60, burst=3) > 0
    now[0] += 60
    assert [limiter.acquire("k", per_minute=60, burst=3) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


# --- the CLI --------------------------------------------------------------------------------------------------------


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("AUTH_DISABLED", "API_KEYS_FILE")}
    return subprocess.run(
        [sys.executable, "-m", "app.keys", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_create_list_revoke(tmp_path):
    keys = str(tmp_path / "keys.json")
    made = _cli("--file", keys, "create", "--name", "sales", "--tables", "orders,customers", "--rate-limit", "30")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("qw_") and KeyStore(Path(keys)).verify(key).tables == ("orders", "customers")
    listed = _cli("--file", keys, "list")
    assert listed.returncode == 0 and "sales" in listed.stdout and "orders,customers" in listed.stdout
    assert key not in listed.stdout and key[3:] not in listed.stdout
    assert "30/min" in listed.stdout
    gone = _cli("--file", keys, "revoke", "sales")
    assert gone.returncode == 0 and KeyStore(Path(keys)).verify(key) is None
    assert "sales" not in _cli("--file", keys, "list").stdout


def test_cli_errors_are_one_line_and_exit_non_zero(tmp_path):
    keys = str(tmp_path / "keys.json")
    missing = _cli("--file", keys, "create")  # --name is required
    assert missing.returncode == 2 and "--name" in missing.stderr
    bad = _cli("--file", keys, "create", "--name", "x", "--rate-limit", "zero")
    assert bad.returncode == 2 and "not a whole number" in bad.stderr
    assert _cli("--file", keys, "frobnicate").returncode == 2
    assert _cli("--file", keys, "create", "--name", "dup").returncode == 0
    dup = _cli("--file", keys, "create", "--name", "dup")
    assert dup.returncode == 1 and dup.stderr.startswith("error: ") and "already exists" in dup.stderr
    assert "Traceback" not in dup.stderr
    unknown = _cli("--file", keys, "revoke", "nobody")
    assert unknown.returncode == 1 and "no key named 'nobody'" in unknown.stderr
    Path(keys).write_text("[]")
    broken = _cli("--file", keys, "list")
    assert broken.returncode == 1 and "keys" in broken.stderr and "Traceback" not in broken.stderr


def test_cli_ensure_local_creates_one_key_once_and_keeps_it_in_a_private_file(tmp_path):
    keys, out = tmp_path / "keys.json", tmp_path / "build" / "local-api-key.txt"
    first = _cli("--file", str(keys), "ensure-local", "--out", str(out))
    assert first.returncode == 0, first.stderr
    key = out.read_text().strip()
    assert key in first.stdout and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert KeyStore(keys).verify(key).name == "local" and key not in keys.read_text()
    again = _cli("--file", str(keys), "ensure-local", "--out", str(out))
    assert again.returncode == 0 and key not in again.stdout and str(out) in again.stdout
    assert [k.name for k in KeyStore(keys).load()] == ["local"]
    off = _cli("--file", str(tmp_path / "other.json"), "ensure-local", "--out", str(tmp_path / "o.txt"),
               env={"AUTH_DISABLED": "true"})  # fmt: skip
    assert off.returncode == 0 and "disabled" in off.stdout and not (tmp_path / "o.txt").exists()


def test_session_secret_is_created_once_next_to_the_keys_file(tmp_path):
    from app.auth.sessions import session_secret
    from app.core.config import Settings

    settings = Settings(api_keys_file=tmp_path / "keys.json")
    first = session_secret(settings)
    path = tmp_path / "keys.session-secret"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_secret(settings) == first  # a second instance (or a restart) signs with the same secret
    assert session_secret(Settings(api_keys_file=tmp_path / "keys.json", session_secret="x" * 32)) == b"x" * 32


def test_login_throttle_backs_off_exponentially_per_address_and_key_prefix():
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    attacker = throttle.party("10.0.0.9", "qw_guessguessguess")
    # a few failures are free (typos), then each one doubles the wait, up to the cap
    waits = [throttle.failed(attacker) for _ in range(throttle.FREE_FAILURES + 4)]
    assert waits == [0.0] * throttle.FREE_FAILURES + [1.0, 2.0, 4.0, 8.0]
    assert throttle.wait(attacker) == 8.0
    for _ in range(30):
        throttle.failed(attacker)
    assert throttle.wait(attacker) == throttle.MAX_S
    # nobody else is held back: not the same address with another key, not the same key prefix elsewhere
    assert throttle.wait(throttle.party("10.0.0.9", "qw_AnotherUsersKey")) == 0.0
    assert throttle.wait(throttle.party("10.0.0.7", "qw_guessguessguess")) == 0.0
    # the key's secret tail is not part of the party: the same prefix is the same party
    assert throttle.party("10.0.0.9", "qw_guessguessguess-other-tail") == attacker
    now[0] += throttle.MAX_S
    assert throttle.wait(attacker) == 0.0
    throttle.succeeded(attacker)
    assert throttle.failed(attacker) == 0.0  # a success starts the count over
