"""Schemathesis fuzzes every operation of the served /openapi.json under a real gunicorn, all default checks on:
no server errors, every status code documented, every response matching its schema."""

import subprocess
import sys
from pathlib import Path

import pytest

from test_serve import Server, call

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_nothing(database_url, tmp_path):
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_RATELIMIT_ENABLED": "false"}, workers=1)
    try:
        server.wait_ready()
        status, _, tokens = call(server.base, "POST", "/auth/register",
                                 {"email": "fuzz@example.com", "password": "correct horse battery"})
        assert status == 201
        run = subprocess.run(
            [str(ST), "--config-file", str(CONFIG), "run", f"{server.base}/openapi.json", "--header", f"Authorization: Bearer {tokens['access_token']}",
             "--max-examples", "30", "--generation-deterministic", "--request-timeout", "10",
             # Logging out or deleting the account would end the session the other operations fuzz with.
             "--exclude-operation-id", "auth_logout", "--exclude-operation-id", "auth_delete_me"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
    finally:
        code, output = server.interrupt()
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert " 500 " not in output, output[-6000:]
