"""Curated memories: save, upsert by key (also concurrently), read, change, history, forget one or all."""

import psycopg
import pytest

from conftest import bearer, count_rows, register, run_together
from memlayer.web.schemas import MAX_MEMORY_LENGTH


def save(client, user, **body):
    response = client.post("/memories", json=body, headers=user["headers"])
    return response.status_code, response.get_json()


def history(client, user, memory_id):
    response = client.get(f"/memories/{memory_id}/history", headers=user["headers"])
    assert response.status_code == 200
    return [(event["event"], event["key"], event["content"]) for event in response.get_json()]


def test_save_read_change_forget(client, user, db):
    status, memory = save(client, user, content="  Prefers tea over coffee  ")
    assert status == 201
    assert memory["content"] == "Prefers tea over coffee" and memory["key"] is None
    assert set(memory) == {"id", "key", "content", "created_at", "updated_at"}

    assert client.get(f"/memories/{memory['id']}", headers=user["headers"]).get_json() == memory

    response = client.patch(f"/memories/{memory['id']}", json={"content": "Prefers green tea"}, headers=user["headers"])
    assert response.status_code == 200
    changed = response.get_json()
    assert changed["content"] == "Prefers green tea" and changed["created_at"] == memory["created_at"]
    assert changed["updated_at"] >= memory["updated_at"]

    response = client.patch(f"/memories/{memory['id']}", json={"key": "drink"}, headers=user["headers"])
    assert response.get_json()["key"] == "drink" and response.get_json()["content"] == "Prefers green tea"
    response = client.patch(f"/memories/{memory['id']}", json={"key": None}, headers=user["headers"])
    assert response.get_json()["key"] is None

    assert history(client, user, memory["id"]) == [
        ("created", None, "Prefers tea over coffee"),
        ("updated", None, "Prefers green tea"),
        ("updated", "drink", "Prefers green tea"),
        ("updated", None, "Prefers green tea"),
    ]

    assert client.delete(f"/memories/{memory['id']}", headers=user["headers"]).status_code == 204
    assert client.get(f"/memories/{memory['id']}", headers=user["headers"]).status_code == 404
    assert client.get(f"/memories/{memory['id']}/history", headers=user["headers"]).status_code == 404
    assert client.delete(f"/memories/{memory['id']}", headers=user["headers"]).status_code == 404
    assert count_rows(db, "memories") == 0 and count_rows(db, "memory_events") == 0


def test_saving_an_existing_key_updates_in_place(client, user, db):
    status, first = save(client, user, key="city", content="Lives in Lisbon")
    assert status == 201
    status, second = save(client, user, key="city", content="Lives in Porto")
    assert status == 200
    assert second["id"] == first["id"] and second["content"] == "Lives in Porto"
    assert second["created_at"] == first["created_at"]
    assert count_rows(db, "memories") == 1
    assert history(client, user, first["id"]) == [("created", "city", "Lives in Lisbon"), ("updated", "city", "Lives in Porto")]

    # Keys are per user: another user's "city" is another memory.
    other = register(client)
    status, _ = save(client, {"headers": bearer(other["access_token"])}, key="city", content="Lives in Oslo")
    assert status == 201
    assert count_rows(db, "memories") == 2


def test_concurrent_saves_of_one_key_make_one_memory_with_every_change(app, user, db):
    def post(i):
        return app.test_client().post("/memories", json={"key": "mood", "content": f"version {i}"}, headers=user["headers"])

    responses = run_together(10, post)

    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.get_json()["id"] for r in responses}) == 1
    assert count_rows(db, "memories") == 1
    events = db.execute("SELECT event, content FROM memory_events ORDER BY id").fetchall()
    assert [event for event, _ in events] == ["created"] + ["updated"] * 9
    assert sorted(content for _, content in events) == sorted(f"version {i}" for i in range(10))
    final = db.execute("SELECT content FROM memories").fetchone()[0]
    assert final == events[-1][1]  # the memory holds the last change its history shows


def test_a_key_taken_by_another_memory_is_a_conflict(client, user, db):
    save(client, user, key="a", content="first")
    _, second = save(client, user, key="b", content="second")

    response = client.patch(f"/memories/{second['id']}", json={"key": "a", "content": "changed"}, headers=user["headers"])

    assert response.status_code == 409
    assert response.get_json()["detail"] == "Another of your memories already has this key"
    assert client.get(f"/memories/{second['id']}", headers=user["headers"]).get_json() == second
    assert count_rows(db, "memory_events") == 2


@pytest.mark.parametrize("body", [
    {}, {"content": ""}, {"content": "   "}, {"content": "x" * (MAX_MEMORY_LENGTH + 1)}, {"content": 5},
    {"content": "ok", "key": ""}, {"content": "ok", "key": "k" * 201}, {"content": "a\x00b"},
])
def test_bad_memories_are_refused_and_change_nothing(client, user, db, body):
    status, answer = save(client, user, **body)
    assert status == 422 and "detail" in answer
    assert count_rows(db, "memories") == 0 and count_rows(db, "memory_events") == 0


def test_a_patch_must_change_something(client, user):
    _, memory = save(client, user, content="something")
    response = client.patch(f"/memories/{memory['id']}", json={}, headers=user["headers"])
    assert response.status_code == 422
    assert history(client, user, memory["id"]) == [("created", None, "something")]


def test_memories_are_private(client, user):
    _, memory = save(client, user, key="secret", content="my secret")
    stranger = bearer(register(client)["access_token"])
    for method, path, body in [
        ("get", f"/memories/{memory['id']}", None),
        ("get", f"/memories/{memory['id']}/history", None),
        ("patch", f"/memories/{memory['id']}", {"content": "stolen"}),
        ("delete", f"/memories/{memory['id']}", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=stranger)
        assert response.status_code == 404, (method, path)
        assert response.get_json() == {"detail": "Memory not found"}
    assert client.get("/memories", headers=stranger).get_json() == []
    assert client.delete("/memories", headers=stranger).get_json() == {"deleted": 0}
    assert client.get(f"/memories/{memory['id']}", headers=user["headers"]).get_json()["content"] == "my secret"


def test_memories_are_listed_newest_first_in_pages(client, user):
    saved = [save(client, user, content=f"fact {i}")[1] for i in range(5)]
    seen, url = [], "/memories?limit=2"
    while url:
        response = client.get(url, headers=user["headers"])
        assert response.status_code == 200 and len(response.get_json()) <= 2
        seen += response.get_json()
        link = response.headers.get("Link")
        url = link[link.index("<") + 1:link.index(">")] if link else None
    assert [m["id"] for m in seen] == [m["id"] for m in reversed(saved)]


def test_delete_all_removes_every_memory_however_many(client, user, db, database_url):
    own_id = client.get("/auth/me", headers=user["headers"]).get_json()["id"]
    other = register(client)
    save(client, {"headers": bearer(other["access_token"])}, content="someone else's")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "WITH made AS (INSERT INTO memories (user_id, key, content) "
            "  SELECT %(u)s, CASE WHEN n %% 2 = 0 THEN 'k' || n END, 'fact ' || n FROM generate_series(1, 1500) AS n "
            "  RETURNING id, key, content) "
            "INSERT INTO memory_events (memory_id, user_id, event, key, content) "
            "SELECT id, %(u)s, 'created', key, content FROM made", {"u": own_id})

    response = client.delete("/memories", headers=user["headers"])

    assert response.status_code == 200
    assert response.get_json() == {"deleted": 1500}
    assert db.execute("SELECT count(*) FROM memories WHERE user_id = %s", [own_id]).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM memory_events WHERE user_id = %s", [own_id]).fetchone()[0] == 0
    assert count_rows(db, "memories") == 1  # the other user's memory is untouched
    assert client.get("/memories", headers=user["headers"]).get_json() == []
