"""Lists are bare arrays paginated by limit and an opaque cursor in a Link header."""

import re

from conftest import count_rows


def next_link(response):
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
    return match.group(1) if match else None


def walk(client, url, headers):
    pages = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert isinstance(response.get_json(), list)
        pages.append(response.get_json())
        url = next_link(response)
    return pages


def test_messages_paginate_oldest_first(client, user, chat, db):
    for i in range(7):
        client.post(f"/chats/{chat['id']}/messages", json={"content": f"m{i}"}, headers=user["headers"])
    pages = walk(client, f"/chats/{chat['id']}/messages?limit=4", user["headers"])
    assert [len(p) for p in pages] == [4, 4, 4, 2]
    flat = [m for page in pages for m in page]
    assert [m["content"] for m in flat if m["role"] == "user"] == [f"m{i}" for i in range(7)]
    assert len({m["id"] for m in flat}) == count_rows(db, "messages") == 14


def test_chats_paginate_most_recent_first_across_equal_times(client, user, db):
    for i in range(5):
        client.post("/chats", json={"title": f"c{i}"}, headers=user["headers"])
    # Equal timestamps must not lose or repeat rows: the id breaks ties.
    db.execute("UPDATE chats SET updated_at = '2026-01-01T00:00:00Z'")
    pages = walk(client, "/chats?limit=2", user["headers"])
    assert [len(p) for p in pages] == [2, 2, 1]
    ids = [c["id"] for page in pages for c in page]
    assert len(set(ids)) == 5
    assert ids == sorted(ids, reverse=True)


def test_limit_defaults_to_50_and_is_clamped_to_200(client, user, chat, db):
    db.execute(
        "INSERT INTO messages (user_id, chat_id, role, content) "
        "SELECT %s, %s, 'user', 'bulk ' || g FROM generate_series(1, 250) g",
        [user_id(client, user), chat["id"]],
    )
    default = client.get(f"/chats/{chat['id']}/messages", headers=user["headers"])
    assert len(default.get_json()) == 50 and "limit=50" in next_link(default)
    clamped = client.get(f"/chats/{chat['id']}/messages?limit=100000", headers=user["headers"])
    assert len(clamped.get_json()) == 200 and "limit=200" in next_link(clamped)


def test_last_page_has_no_link(client, user, chat):
    client.post(f"/chats/{chat['id']}/messages", json={"content": "x"}, headers=user["headers"])
    response = client.get(f"/chats/{chat['id']}/messages?limit=2", headers=user["headers"])
    assert len(response.get_json()) == 2 and next_link(response) is None


def user_id(client, user):
    return client.get("/auth/me", headers=user["headers"]).get_json()["id"]
