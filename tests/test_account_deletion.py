"""DELETE /auth/me erases the user everywhere, in one transaction, and ends every session."""

import pytest
from psycopg import sql as pgsql

from conftest import bearer, new_chat, new_user, register, send
from memlayer.storage.db import sql


def tables_with_user_rows(db) -> dict[str, str]:
    """Every public table and the column that names its user (users itself: id)."""
    rows = db.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'user_id'"
    ).fetchall()
    return {"users": "id", **dict(rows)}


def rows_of(db, user_id) -> dict[str, int]:
    counts = {}
    for table, column in tables_with_user_rows(db).items():
        query = pgsql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(pgsql.Identifier(table), pgsql.Identifier(column))
        counts[table] = db.execute(query, [user_id]).fetchone()[0]
    return counts


def populate(client) -> dict:
    """A user with chats (one soft-deleted), messages, memories with history, and a logged-out session."""
    user = new_user(client)
    user["id"] = client.get("/auth/me", headers=user["headers"]).get_json()["id"]
    for title in ("one", "two"):
        chat = new_chat(client, user, title)
        send(client, user, chat["id"], f"hello from {title}")
    client.delete(f"/chats/{chat['id']}", headers=user["headers"])
    client.post("/memories", json={"key": "city", "content": "Lisbon"}, headers=user["headers"])
    client.post("/memories", json={"key": "city", "content": "Porto"}, headers=user["headers"])
    client.post("/memories", json={"content": "likes tea"}, headers=user["headers"])
    keyed = client.post("/chats", json={"title": "keyed"}, headers={**user["headers"], "Idempotency-Key": "k1"})
    assert keyed.status_code == 201
    old_session = client.post("/auth/login", json={"email": user["email"], "password": user["password"]}).get_json()
    assert client.post("/auth/logout", headers=bearer(old_session["access_token"])).status_code == 204
    return user


def test_every_table_is_covered(db):
    vectors = {"embeddings"} if db.execute("SELECT to_regclass('embeddings')").fetchone()[0] else set()
    assert set(tables_with_user_rows(db)) == {"users", "chats", "messages", "memories", "memory_events", "revoked_tokens",
                                           "monthly_usage", "idempotency_keys", "recall_terms", "recall_totals",
                                           "memory_jobs", "memory_usage", "chat_imports"} | vectors


def give_vectors(db, user_id) -> None:
    """Where the server stores vectors, one for each of the user's own messages (as an embedding model would)."""
    if db.execute("SELECT to_regclass('embeddings')").fetchone()[0]:
        db.execute("INSERT INTO embeddings (user_id, message_id, model, embedding) "
                   "SELECT user_id, id, 'test-model', '[1,0,0]' FROM messages WHERE user_id = %s AND role = 'user'",
                   [user_id])


def give_extraction_rows(db, user_id) -> None:
    """An extraction job per user message, a billed extraction (as sends to a real model and the worker make),
    and an import record per chat (as `memlayer import` makes)."""
    db.execute("INSERT INTO memory_jobs (user_id, message_id) "
               "SELECT user_id, id FROM messages WHERE user_id = %s AND role = 'user'", [user_id])
    db.execute("INSERT INTO memory_usage (user_id, model, prompt_tokens, completion_tokens) VALUES (%s, 'm', 1, 1)",
               [user_id])
    db.execute("INSERT INTO chat_imports (user_id, source, source_id, chat_id) "
               "SELECT user_id, 'chatgpt', id::text, id FROM chats WHERE user_id = %s", [user_id])


def test_deleting_the_account_leaves_no_row_of_the_user_anywhere(client, db):
    user, bystander = populate(client), populate(client)
    for someone in (user, bystander):
        give_vectors(db, someone["id"])
        give_extraction_rows(db, someone["id"])
    assert all(count > 0 for count in rows_of(db, user["id"]).values())
    before = rows_of(db, bystander["id"])

    response = client.delete("/auth/me", headers=user["headers"])

    assert response.status_code == 204 and response.data == b""
    assert rows_of(db, user["id"]) == {table: 0 for table in tables_with_user_rows(db)}
    assert rows_of(db, bystander["id"]) == before


def test_the_deleted_users_tokens_and_password_stop_working(client):
    user = populate(client)
    client.delete("/auth/me", headers=user["headers"])

    assert client.get("/auth/me", headers=user["headers"]).status_code == 401
    assert client.get("/memories", headers=user["headers"]).status_code == 401
    assert client.post("/auth/refresh", headers=bearer(user["refresh_token"])).status_code == 401
    assert client.delete("/auth/me", headers=user["headers"]).status_code == 401
    login = client.post("/auth/login", json={"email": user["email"], "password": user["password"]})
    assert login.status_code == 401
    # The address is free again, for a new and empty account.
    fresh = register(client, user["email"])
    assert client.get("/memories", headers=bearer(fresh["access_token"])).get_json() == []


def test_a_failure_midway_deletes_nothing(client, db):
    user = populate(client)
    before = rows_of(db, user["id"])
    db.execute(
        "CREATE FUNCTION fail_on_memory_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
    )
    db.execute("CREATE TRIGGER fail_midway BEFORE DELETE ON memories FOR EACH ROW EXECUTE FUNCTION fail_on_memory_delete()")
    try:
        response = client.delete("/auth/me", headers=user["headers"])
    finally:
        db.execute("DROP TRIGGER fail_midway ON memories")
        db.execute("DROP FUNCTION fail_on_memory_delete()")

    assert response.status_code == 500
    assert rows_of(db, user["id"]) == before
    assert client.get("/auth/me", headers=user["headers"]).status_code == 200


def vanishing_mid_request(monkeypatch, db, user_id, query: str) -> None:
    """Make the named query (`resource.name` of sql/) run just after the account was deleted.

    The token check has passed by then, as in a real race with DELETE /auth/me from another client.
    """
    resource, name = query.split(".")
    queries = getattr(sql, resource)
    original = getattr(queries, name)

    def after_the_delete(*args, **kwargs):
        db.execute("DELETE FROM users WHERE id = %s", [user_id])
        return original(*args, **kwargs)

    monkeypatch.setattr(queries, name, after_the_delete)


@pytest.mark.parametrize("target, method, path, body, headers", [
    ("chats.create_chat", "post", "/chats", {"title": "t"}, {}),
    ("chats.create_chat", "post", "/chats", {"title": "t"}, {"Idempotency-Key": "k"}),
    ("memories.save_memory", "post", "/memories", {"content": "c"}, {}),
    ("tokens.revoke_token", "post", "/auth/logout", None, {}),
], ids=["create chat", "create chat, idempotent", "save memory", "logout"])
def test_a_write_racing_the_account_deletion_is_401_and_leaves_nothing(client, db, monkeypatch, target, method, path,
                                                                         body, headers):
    user = new_user(client)
    user_id = client.get("/auth/me", headers=user["headers"]).get_json()["id"]
    vanishing_mid_request(monkeypatch, db, user_id, target)

    response = getattr(client, method)(path, json=body, headers={**user["headers"], **headers})

    assert response.status_code == 401 and response.get_json()["detail"] == "Your account no longer exists"
    assert rows_of(db, user_id) == {table: 0 for table in tables_with_user_rows(db)}
