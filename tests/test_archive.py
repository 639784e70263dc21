"""A user's data out and in: the streamed export, POST /chats/import, and `memlayer import` (MemLayer and ChatGPT)."""

import json
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import bearer, new_user, send
from memlayer.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def export_of(client, user) -> dict:
    response = client.get("/auth/me/export", headers=user["headers"])
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return json.loads(response.get_data())


def populated(client) -> dict:
    """A user with two live chats, a deleted one, memories with history, and a setting changed."""
    user = new_user(client)
    for title in ("Pets", "Travel", "Gone"):
        chat = client.post("/chats", json={"title": title}, headers=user["headers"]).get_json()
        send(client, user, chat["id"], f"A message about {title.lower()}")
    client.delete(f"/chats/{chat['id']}", headers=user["headers"])
    client.post("/memories", json={"key": "city", "content": "Lisbon"}, headers=user["headers"])
    client.post("/memories", json={"key": "city", "content": "Porto"}, headers=user["headers"])
    client.post("/memories", json={"content": "Has a cat called Ada"}, headers=user["headers"])
    client.patch("/auth/me", json={"memory_extraction": False}, headers=user["headers"])
    return user


def test_the_export_holds_every_row_of_the_user_and_nothing_of_anyone_else(client, db):
    user, other = populated(client), populated(client)
    response = client.get("/auth/me/export", headers=user["headers"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=memlayer-export-")
    document = json.loads(response.get_data())
    me = client.get("/auth/me", headers=user["headers"]).get_json()
    assert document["format"] == "memlayer-export" and document["version"] == 1
    assert document["account"] == {"id": me["id"], "email": me["email"], "created_at": document["account"]["created_at"],
                                   "settings": {"memory_extraction": False}}
    assert [c["title"] for c in document["chats"]] == ["Pets", "Travel"]  # the deleted chat is not live
    assert [(m["role"], m["content"]) for m in document["chats"][0]["messages"]][0] == ("user", "A message about pets")
    assert document["chats"][0]["messages"][1]["role"] == "assistant"
    stored = db.execute("SELECT count(*) FROM messages m JOIN chats c ON c.id = m.chat_id "
                        "WHERE m.user_id = %s AND c.deleted_at IS NULL", [me["id"]]).fetchone()[0]
    assert sum(len(c["messages"]) for c in document["chats"]) == stored == 4
    city = next(m for m in document["memories"] if m["key"] == "city")
    assert city["content"] == "Porto" and [e["content"] for e in city["history"]] == ["Lisbon", "Porto"]
    assert len(document["memories"]) == 2
    others = {json.dumps(other_value) for other_value in (other["email"],)}
    assert not any(value in response.get_data(as_text=True) for value in others)
    assert document["usage"]["replies"]["messages"] == 3 and document["usage"]["memory"]["extractions"] == 0


def test_the_export_needs_a_fresh_token(client):
    user = populated(client)
    refreshed = client.post("/auth/refresh", headers=bearer(user["refresh_token"])).get_json()
    response = client.get("/auth/me/export", headers=bearer(refreshed["access_token"]))
    assert response.status_code == 401


def test_a_big_export_is_written_out_without_building_the_document_in_memory(client, db):
    user = new_user(client)
    chat = client.post("/chats", json={"title": "Long"}, headers=user["headers"]).get_json()
    # 20,000 messages of 200 characters: a 6 MB document.
    db.execute("INSERT INTO messages (user_id, chat_id, role, content) "
               "SELECT c.user_id, c.id, CASE WHEN n %% 2 = 0 THEN 'user' ELSE 'assistant' END, repeat('x', 190) || n "
               "FROM chats c, generate_series(1, 20000) AS n WHERE c.id = %s", [chat["id"]])
    tracemalloc.start()
    try:
        response = client.get("/auth/me/export", headers=user["headers"], buffered=False)
        size, pieces = 0, 0
        for piece in response.response:
            size += len(piece)
            pieces += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 5_000_000 and pieces > 1  # read from its spool file piece by piece
    assert peak < size / 5, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB document"
    assert json.loads(b"".join(client.get("/auth/me/export", headers=user["headers"]).response))["chats"][0][
        "messages"][-1]["content"].endswith("20000")


def imported(client, user, body, status=201, headers=None):
    response = client.post("/chats/import", json=body, headers={**user["headers"], **(headers or {})})
    assert response.status_code == status, response.get_json()
    return response.get_json()


CONVERSATION = {
    "title": "Old chat",
    "messages": [
        {"role": "user", "content": "My cat Ada likes tuna.", "created_at": "2023-05-08T13:56:00Z"},
        {"role": "assistant", "content": "Noted!", "created_at": "2023-05-08T13:56:05Z"},
        {"role": "user", "content": "She turned three.", "created_at": "2023-05-09T09:00:00+02:00"},
    ],
    "memories": [{"content": "User has a cat called Ada", "created_at": "2023-05-08T14:00:00Z"}],
}


def test_an_import_keeps_order_and_times_asks_no_model_and_is_searchable_at_once(llm_client, provider, db):
    user = new_user(llm_client)
    chat = imported(llm_client, user, CONVERSATION)
    assert chat["title"] == "Old chat" and chat["created_at"].startswith("2023-05-08T13:56:00")
    assert chat["updated_at"].startswith("2023-05-09T07:00:00")
    messages = llm_client.get(f"/chats/{chat['id']}/messages", headers=user["headers"]).get_json()
    assert [(m["role"], m["content"], m["created_at"][:19]) for m in messages] == [
        ("user", "My cat Ada likes tuna.", "2023-05-08T13:56:00"), ("assistant", "Noted!", "2023-05-08T13:56:05"),
        ("user", "She turned three.", "2023-05-09T07:00:00")]
    assert provider.requests == []
    assert db.execute("SELECT count(*) FROM memory_jobs").fetchone()[0] == 0  # no extraction unless asked
    found = llm_client.get("/memories/search?q=tuna", headers=user["headers"]).get_json()
    assert [item["content"] for item in found] == ["My cat Ada likes tuna."]
    [memory] = llm_client.get("/memories", headers=user["headers"]).get_json()
    assert memory["content"] == "User has a cat called Ada" and memory["created_at"].startswith("2023-05-08T14:00")
    history = llm_client.get(f"/memories/{memory['id']}/history", headers=user["headers"]).get_json()
    assert [(e["event"], e["source"]) for e in history] == [("created", "import")]


@pytest.mark.parametrize("change, field", [
    (lambda b: b["messages"][0].update(role="system"), "role"),
    (lambda b: b["messages"][1].pop("content"), "content"),
    (lambda b: b["messages"][1].update(content="bad \u0000 byte"), "content"),
    (lambda b: b["messages"][2].update(created_at="yesterday"), "created_at"),
    (lambda b: b["messages"][2].update(created_at="2023-05-01T00:00:00Z"), "created_at"),  # back in time
    (lambda b: b["messages"][2].update(created_at="2999-01-01T00:00:00Z"), "messages"),  # in the future
    (lambda b: b.update(messages=[{"role": "user", "content": "hi"}] * 10_001), "messages"),
    (lambda b: b["messages"][0].update(surprise=True), "surprise"),
    (lambda b: b.update(messages="not a list"), "messages"),
], ids=["role", "missing-content", "nul", "bad-time", "time-goes-back", "future", "too-many", "unknown-field",
        "not-a-list"])
def test_a_bad_import_is_422_and_writes_nothing(client, db, change, field):
    user = new_user(client)
    body = json.loads(json.dumps(CONVERSATION))
    change(body)
    answer = imported(client, user, body, status=422)
    assert field in json.dumps(answer["errors"])
    assert db.execute("SELECT count(*) FROM chats").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0


def test_an_import_with_an_idempotency_key_is_written_once(client, db):
    user = new_user(client)
    first = imported(client, user, CONVERSATION, headers={"Idempotency-Key": "import-1"})
    again = client.post("/chats/import", json=CONVERSATION, headers={**user["headers"], "Idempotency-Key": "import-1"})
    assert again.status_code == 201 and again.get_json() == first
    assert again.headers["Idempotent-Replayed"] == "true"
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 3


def run_cli(*args) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def cli_env(monkeypatch, database_url, app):
    """The CLI on the test database (through the pooler when the suite uses one)."""
    from conftest import through_pooler

    monkeypatch.setenv("MEMLAYER_DATABASE_URL", through_pooler(database_url))
    monkeypatch.setenv("MEMLAYER_PASSWORD_HASH_METHOD", app.config["PASSWORD_HASH_METHOD"])


def comparable(document: dict) -> dict:
    """An export without what differs between accounts: ids, the email, the export time."""
    chats = [{"title": c["title"], "created_at": c["created_at"], "updated_at": c["updated_at"],
              "messages": [{k: v for k, v in m.items() if k != "id"} for m in c["messages"]]}
             for c in document["chats"]]
    memories = [{"key": m["key"], "content": m["content"], "created_at": m["created_at"], "updated_at": m["updated_at"],
                 "history": [{k: v for k, v in e.items() if k != "message_id"} for e in m["history"]]}
                for m in document["memories"]]
    return {"chats": chats, "memories": memories}


def test_export_then_import_into_a_new_account_then_export_gives_the_same_data(client, cli_env, tmp_path):
    original = populated(client)
    first = export_of(client, original)
    path = tmp_path / "export.json"
    run_cli("export", "--user", original["email"], "-o", str(path))
    assert comparable(json.loads(path.read_text())) == comparable(first)

    newcomer = new_user(client)
    output = run_cli("import", "--user", newcomer["email"], str(path))
    assert "imported 2 conversations (4 messages)" in output and "memories: 2 imported" in output
    assert comparable(export_of(client, newcomer)) == comparable(first)

    output = run_cli("import", "--user", newcomer["email"], str(path))  # run again: nothing twice
    assert "imported 0 conversations" in output and "2 already imported before" in output
    assert "memories: 0 imported, 2 already there" in output
    assert comparable(export_of(client, newcomer)) == comparable(first)


def test_chatgpt_conversations_follow_the_current_branch_and_skip_what_is_not_text(client, cli_env):
    user = new_user(client)
    output = run_cli("import", "--user", user["email"], str(FIXTURES / "chatgpt_conversations.json"))
    assert "imported 2 conversations (6 messages)" in output
    assert "1 messages to tools" in output and "1 messages without text" in output and "2 system messages" in output
    assert "1 tool messages" in output
    chats = {c["title"]: c for c in client.get("/chats", headers=user["headers"]).get_json()}
    assert set(chats) == {"Cat names", "Trip to Porto"}
    messages = client.get(f"/chats/{chats['Cat names']['id']}/messages", headers=user["headers"]).get_json()
    # The regenerated answer (the branch current_node is on) is kept, the first answer is not.
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Suggest a name for my cat"), ("assistant", "How about Ada?"),
        ("user", "Here is a photo of her\nShe is grey"), ("assistant", "Ada suits a grey cat.")]
    assert messages[0]["created_at"].startswith("2024-01-15T10:00:00")
    output = run_cli("import", "--user", user["email"], str(FIXTURES / "chatgpt_conversations.json"))
    assert "imported 0 conversations" in output and "2 already imported before" in output
    assert len(client.get("/chats", headers=user["headers"]).get_json()) == 2


def test_import_with_extract_queues_extraction_for_the_imported_messages(client, cli_env, db):
    user = new_user(client)
    run_cli("import", "--user", user["email"], "--extract", str(FIXTURES / "chatgpt_conversations.json"))
    assert db.execute("SELECT count(*) FROM memory_jobs").fetchone()[0] == 3  # one per imported user message


def test_import_refuses_a_file_it_does_not_know(client, cli_env, tmp_path):
    user = new_user(client)
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": "world"}))
    result = CliRunner().invoke(main, ["import", "--user", user["email"], str(path)])
    assert result.exit_code == 1 and "not a MemLayer export nor a ChatGPT conversations.json" in result.output
