"""Admin keys (issue 11): `python -m app.keys create --admin` marks a key that may specialize, load and roll back the
served model; keys are not admins unless created so (older files, without the field, included); a malformed flag in
the keys file is refused with a message."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth.keys import KeyFileError, KeyStore

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.keys", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_creates_admin_keys_and_lists_them(tmp_path):
    keys = str(tmp_path / "keys.json")
    made = _cli("--file", keys, "create", "--name", "ops", "--admin")
    assert made.returncode == 0, made.stderr
    assert "created admin key 'ops'" in made.stdout
    plain = _cli("--file", keys, "create", "--name", "analyst")
    store = KeyStore(Path(keys))
    assert store.verify(made.stdout.strip().splitlines()[-1]).admin is True
    assert store.verify(plain.stdout.strip().splitlines()[-1]).admin is False
    listed = _cli("--file", keys, "list").stdout.splitlines()
    assert [line.split()[0] for line in listed if line.rstrip().endswith("admin")] == ["ops"]


def test_a_key_without_the_field_is_not_an_admin_and_a_bad_flag_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    record = {"name": "old", "sha256": "0" * 64, "created_at": "2025-01-01T00:00:00+00:00"}
    path.write_text(json.dumps({"version": 1, "keys": [record]}))
    assert KeyStore(path).load()[0].admin is False
    path.write_text(json.dumps({"version": 1, "keys": [record | {"admin": "yes"}]}))
    with pytest.raises(KeyFileError, match="`admin` must be true or false"):
        KeyStore(path).load()
