"""The benchmark's ceiling is honest: pgbench runs exactly the statements a real send runs, in the same transactions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import ceiling  # noqa: E402


def test_the_ceiling_runs_what_a_send_runs(client, user, chat, statements):
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "what about lisbon"},
                           headers=user["headers"])

    assert response.status_code == 201
    expected = [step for in_transaction, queries in ceiling.SEND_PATH
                for step in (["BEGIN"] if in_transaction else []) + list(queries)]
    assert statements == expected


def test_the_pgbench_script_binds_every_parameter_it_uses():
    script = ceiling.script()
    assert "%(" not in script and "--" not in script
    for _, queries in ceiling.SEND_PATH:
        for name in queries:
            assert ceiling.statement(name) in script
