"""One user can never see or touch another user's chats and messages."""

import pytest

from conftest import bearer, count_rows, register


@pytest.fixture
def intruder(client):
    return bearer(register(client)["access_token"])


def test_other_users_chat_is_404_for_every_read_and_write(client, user, chat, intruder, db):
    client.post(f"/chats/{chat['id']}/messages", json={"content": "secret"}, headers=user["headers"])
    chat_url = f"/chats/{chat['id']}"
    attempts = [
        client.get(chat_url, headers=intruder),
        client.patch(chat_url, json={"title": "mine now"}, headers=intruder),
        client.delete(chat_url, headers=intruder),
        client.get(f"{chat_url}/messages", headers=intruder),
        client.post(f"{chat_url}/messages", json={"content": "hi"}, headers=intruder),
    ]
    for response in attempts:
        assert response.status_code == 404
        assert response.get_json() == {"detail": "Chat not found"}

    assert client.get("/chats", headers=intruder).get_json() == []
    # Nothing changed for the owner.
    owner_view = client.get(chat_url, headers=user["headers"]).get_json()
    assert owner_view["title"] == chat["title"]
    assert count_rows(db, "messages") == 2
    assert db.execute("SELECT count(*) FROM chats WHERE deleted_at IS NULL").fetchone()[0] == 1


def test_unknown_and_foreign_chats_answer_identically(client, user, chat, intruder):
    foreign = client.get(f"/chats/{chat['id']}", headers=intruder)
    missing = client.get("/chats/11111111-1111-1111-1111-111111111111", headers=intruder)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.get_json() == missing.get_json()


def test_lists_only_show_own_chats(client, user, chat, intruder):
    mine = client.post("/chats", json={"title": "intruder's own"}, headers=intruder).get_json()
    assert [c["id"] for c in client.get("/chats", headers=intruder).get_json()] == [mine["id"]]
    assert [c["id"] for c in client.get("/chats", headers=user["headers"]).get_json()] == [chat["id"]]
