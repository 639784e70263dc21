"""The benchmark's ceiling is honest: pgbench runs exactly the statements a real send runs, in the same transactions."""

import sys
from pathlib import Path

import psycopg

from memlayer.storage.db import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import ceiling  # noqa: E402


def query_names() -> dict[str, str]:
    """Every named query's SQL text, mapped to "<file>.<name>"."""
    names = {}
    for resource, queries in vars(sql).items():
        for name in queries.available_queries:
            names.setdefault(getattr(queries, name).sql, f"{resource}.{name}")
    return names


def test_the_ceiling_runs_what_a_send_runs(client, user, chat, monkeypatch):
    names, executed = query_names(), []
    real_execute, real_transaction = psycopg.Cursor.execute, psycopg.Connection.transaction

    def execute(self, query, *args, **kwargs):
        if query:  # the pool's probe of an idle connection is an empty query
            executed.append(names.get(query, query))
        return real_execute(self, query, *args, **kwargs)

    def transaction(self, *args, **kwargs):
        executed.append("BEGIN")
        return real_transaction(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    monkeypatch.setattr(psycopg.Connection, "transaction", transaction)
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "what about lisbon"},
                           headers=user["headers"])
    monkeypatch.undo()

    assert response.status_code == 201
    expected = [step for in_transaction, queries in ceiling.SEND_PATH
                for step in (["BEGIN"] if in_transaction else []) + list(queries)]
    assert executed == expected


def test_the_pgbench_script_binds_every_parameter_it_uses():
    script = ceiling.script()
    assert "%(" not in script and "--" not in script
    for _, queries in ceiling.SEND_PATH:
        for name in queries:
            assert ceiling.statement(name) in script
