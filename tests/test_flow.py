"""The whole journey a client makes: register, log in, chat, rename, delete; and the token lifecycle."""

import re
import uuid
from datetime import datetime

from conftest import RecordingResponder, bearer, count_rows, install_responder, register, run_together

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def test_full_flow(client, db):
    tokens = register(client, "Ada@Example.com")
    assert tokens["token_type"] == "bearer"

    login = client.post("/auth/login", json={"email": "ada@example.com", "password": tokens["password"]})
    assert login.status_code == 200
    body = login.get_json()
    assert set(body) == {"access_token", "token_type", "refresh_token"}
    headers = bearer(body["access_token"])

    me = client.get("/auth/me", headers=headers).get_json()
    assert me["email"] == "ada@example.com"
    assert ISO_WITH_OFFSET.match(me["created_at"])

    created = client.post("/chats", json={}, headers=headers)
    assert created.status_code == 201
    chat = created.get_json()
    assert set(chat) == {"id", "title", "model", "created_at", "updated_at"}
    assert chat["model"] is None  # the service's default model
    assert re.match(r"^Chat \d{4}-\d\d-\d\d \d\d:\d\d$", chat["title"])
    uuid.UUID(chat["id"])

    sent = client.post(f"/chats/{chat['id']}/messages", json={"content": "my cat is called Ada"}, headers=headers)
    assert sent.status_code == 201
    reply = sent.get_json()
    assert reply["role"] == "assistant" and reply["chat_id"] == chat["id"] and reply["user_id"] == me["id"]
    assert "my cat is called Ada" in reply["content"]
    assert reply["model"] == "offline"
    assert reply["usage"]["prompt_tokens"] > 0 and reply["usage"]["completion_tokens"] > 0
    assert reply["usage"]["cost"] == 0

    listed = client.get(f"/chats/{chat['id']}/messages", headers=headers)
    assert listed.status_code == 200
    messages = listed.get_json()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "my cat is called Ada"
    assert messages[1]["id"] == reply["id"]
    assert messages[0]["model"] is None and messages[0]["usage"] is None
    assert messages[1] == reply
    assert "Link" not in listed.headers

    renamed = client.patch(f"/chats/{chat['id']}", json={"title": "  Cats  "}, headers=headers)
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "Cats"
    assert client.get(f"/chats/{chat['id']}", headers=headers).get_json()["title"] == "Cats"

    chats = client.get("/chats", headers=headers).get_json()
    assert [c["id"] for c in chats] == [chat["id"]]

    assert client.delete(f"/chats/{chat['id']}", headers=headers).status_code == 204
    assert client.get("/chats", headers=headers).get_json() == []
    assert client.get(f"/chats/{chat['id']}", headers=headers).status_code == 404
    assert client.get(f"/chats/{chat['id']}/messages", headers=headers).status_code == 404
    assert client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=headers).status_code == 404
    assert client.delete(f"/chats/{chat['id']}", headers=headers).status_code == 404
    # Soft delete: the rows stay, hidden.
    assert count_rows(db, "messages") == 2
    assert db.execute("SELECT deleted_at IS NOT NULL FROM chats").fetchone()[0] is True


def test_send_bumps_chat_activity_and_orders_chat_list(client, user):
    first = client.post("/chats", json={"title": "first"}, headers=user["headers"]).get_json()
    client.post("/chats", json={"title": "second"}, headers=user["headers"])
    assert [c["title"] for c in client.get("/chats", headers=user["headers"]).get_json()] == ["second", "first"]

    client.post(f"/chats/{first['id']}/messages", json={"content": "hello"}, headers=user["headers"])
    chats = client.get("/chats", headers=user["headers"]).get_json()
    assert [c["title"] for c in chats] == ["first", "second"]
    assert datetime.fromisoformat(chats[0]["updated_at"]) > datetime.fromisoformat(first["updated_at"])


def test_responder_sees_recent_history(client, user, chat, app):
    recorder = install_responder(app, RecordingResponder("ok"))
    for text in ("one", "two"):
        client.post(f"/chats/{chat['id']}/messages", json={"content": text}, headers=user["headers"])
    assert recorder.inputs[-1] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "two"},
    ]


def test_refresh_rotates_the_token_pair(client, user, db):
    response = client.post("/auth/refresh", headers=bearer(user["refresh_token"]))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "refresh_token"} and body["token_type"] == "bearer"
    assert body["refresh_token"] != user["refresh_token"]
    assert client.get("/auth/me", headers=bearer(body["access_token"])).status_code == 200
    # The spent refresh token is revoked; the new one works once.
    reuse = client.post("/auth/refresh", headers=bearer(user["refresh_token"]))
    assert reuse.status_code == 401 and reuse.get_json() == {"detail": "Token has been revoked"}
    assert client.post("/auth/refresh", headers=bearer(body["refresh_token"])).status_code == 200
    assert count_rows(db, "revoked_tokens") == 2


def test_concurrent_refreshes_with_one_token_give_one_new_pair(app, user):
    statuses = run_together(8, lambda i: app.test_client().post("/auth/refresh", headers=bearer(user["refresh_token"])).status_code)
    assert sorted(statuses) == [200] + [401] * 7


def test_refresh_purges_expired_revocations(client, user, db):
    db.execute("INSERT INTO revoked_tokens (jti, user_id, expires_at) "
               "SELECT gen_random_uuid(), id, now() - interval '1 second' FROM users")
    assert client.post("/auth/refresh", headers=bearer(user["refresh_token"])).status_code == 200
    assert db.execute("SELECT count(*) FROM revoked_tokens WHERE expires_at < now()").fetchone()[0] == 0


def test_only_a_password_made_token_deletes_the_account(client, user, db):
    refreshed = client.post("/auth/refresh", headers=bearer(user["refresh_token"])).get_json()
    response = client.delete("/auth/me", headers=bearer(refreshed["access_token"]))
    assert response.status_code == 401 and response.get_json() == {"detail": "Fresh token required"}
    assert count_rows(db, "users") == 1
    login = client.post("/auth/login", json={"email": user["email"], "password": user["password"]}).get_json()
    assert client.delete("/auth/me", headers=bearer(login["access_token"])).status_code == 204
    assert count_rows(db, "users") == 0


def test_token_types_are_not_interchangeable(client, user):
    assert client.post("/auth/refresh", headers=user["headers"]).status_code == 401
    assert client.get("/auth/me", headers=bearer(user["refresh_token"])).status_code == 401


def test_logout_revokes_access_and_its_refresh_token(client, user, db):
    assert client.post("/auth/logout", headers=user["headers"]).status_code == 204
    me = client.get("/auth/me", headers=user["headers"])
    assert me.status_code == 401 and me.get_json() == {"detail": "Token has been revoked"}
    assert client.post("/auth/refresh", headers=bearer(user["refresh_token"])).status_code == 401
    assert count_rows(db, "revoked_tokens") == 2
    # A fresh login still works.
    login = client.post("/auth/login", json={"email": user["email"], "password": user["password"]})
    assert client.get("/auth/me", headers=bearer(login.get_json()["access_token"])).status_code == 200


def test_revocation_survives_a_new_app(app_factory, client, user):
    client.post("/auth/logout", headers=user["headers"])
    other_worker = app_factory().test_client()
    assert other_worker.get("/auth/me", headers=user["headers"]).status_code == 401


def test_login_rejects_wrong_password_and_unknown_email_alike(client, user):
    wrong = client.post("/auth/login", json={"email": user["email"], "password": "not the password"})
    unknown = client.post("/auth/login", json={"email": "nobody@example.com", "password": "whatever123"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json() == {"detail": "Incorrect email or password"}


def test_duplicate_registration_is_409(client, user, db):
    again = client.post("/auth/register", json={"email": user["email"].upper(), "password": "another password"})
    assert again.status_code == 409
    assert again.get_json() == {"detail": "Email already registered"}
    assert count_rows(db, "users") == 1


def test_password_is_stored_hashed(client, user, db):
    stored = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("scrypt:") and user["password"] not in stored
