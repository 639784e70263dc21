"""Lists are bare arrays paginated by limit and keyset positions in a Link header (rel="next", rel="prev")."""

import re

import pytest


def link(response, rel: str = "next"):
    for url, found in re.findall(r'<([^>]+)>; rel="(\w+)"', response.headers.get("Link", "")):
        if found == rel:
            return url
    return None


def next_link(response):
    return link(response, "next")


def walk(client, url, headers, rel: str = "next"):
    pages = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert isinstance(response.get_json(), list)
        pages.append(response.get_json())
        url = link(response, rel)
    return pages


def fill(db, client, user, chat, count: int) -> None:
    """`count` messages "message 1" .. "message <count>" in the chat, in that order."""
    db.execute("INSERT INTO messages (user_id, chat_id, role, content) "
               "SELECT %s, %s, 'user', 'message ' || g FROM generate_series(1, %s) g ORDER BY g",
               [user_id(client, user), chat["id"], count])


def numbers(page) -> list[int]:
    return [int(m["content"].split()[1]) for m in page]


def test_the_default_page_is_the_latest_and_prev_walks_back_to_the_first_once(client, user, chat, db):
    fill(db, client, user, chat, 120)

    latest = client.get(f"/chats/{chat['id']}/messages", headers=user["headers"])
    assert numbers(latest.get_json()) == list(range(71, 121))  # the newest 50, oldest first within the page
    assert next_link(latest) is None  # nothing newer yet

    pages = walk(client, f"/chats/{chat['id']}/messages", user["headers"], rel="prev")
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [n for page in reversed(pages) for n in numbers(page)]
    assert seen == list(range(1, 121))  # every message exactly once


def test_after_a_message_walks_forward_and_syncs_new_ones(client, user, chat, db):
    fill(db, client, user, chat, 9)
    page = client.get(f"/chats/{chat['id']}/messages?limit=4", headers=user["headers"]).get_json()
    first = client.get(f"/chats/{chat['id']}/messages?limit=4&before={page[0]['id']}", headers=user["headers"])

    pages = walk(client, link(first, "next"), user["headers"])
    assert [numbers(p) for p in pages] == [[6, 7, 8, 9]]  # forward from message 5 to the end, no more links

    last = page[-1]["id"]
    assert client.get(f"/chats/{chat['id']}/messages?after={last}", headers=user["headers"]).get_json() == []
    client.post(f"/chats/{chat['id']}/messages", json={"content": "message 10"}, headers=user["headers"])
    synced = client.get(f"/chats/{chat['id']}/messages?after={last}", headers=user["headers"]).get_json()
    assert [m["content"] for m in synced][0] == "message 10" and len(synced) == 2  # and the reply


@pytest.mark.parametrize("query", ["after=not-a-uuid", "before=00000000-0000-0000-0000-000000000000",
                                   "after=00000000-0000-0000-0000-000000000000&before=00000000-0000-0000-0000-000000000000"])
def test_a_position_that_is_not_a_message_of_this_chat_is_422(client, user, chat, db, query):
    fill(db, client, user, chat, 3)
    response = client.get(f"/chats/{chat['id']}/messages?{query}", headers=user["headers"])
    assert response.status_code == 422 and response.get_json()["detail"]


def test_another_users_message_is_not_a_position_in_my_chat(client, user, chat, db):
    fill(db, client, user, chat, 3)
    mine = client.get(f"/chats/{chat['id']}/messages", headers=user["headers"]).get_json()
    other = client.post("/auth/register", json={"email": "other-pages@example.com", "password": "correct horse battery"})
    headers = {"Authorization": f"Bearer {other.get_json()['access_token']}"}
    theirs = client.post("/chats", json={"title": "t"}, headers=headers).get_json()
    response = client.get(f"/chats/{theirs['id']}/messages?after={mine[0]['id']}", headers=headers)
    assert response.status_code == 422
    assert client.get(f"/chats/{chat['id']}/messages?after={mine[0]['id']}", headers=headers).status_code == 404


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
    assert len(default.get_json()) == 50 and "limit=50" in link(default, "prev")
    clamped = client.get(f"/chats/{chat['id']}/messages?limit=100000", headers=user["headers"])
    assert len(clamped.get_json()) == 200 and "limit=200" in link(clamped, "prev")


def test_a_page_that_holds_everything_has_no_link(client, user, chat):
    client.post(f"/chats/{chat['id']}/messages", json={"content": "x"}, headers=user["headers"])
    response = client.get(f"/chats/{chat['id']}/messages?limit=2", headers=user["headers"])
    assert len(response.get_json()) == 2 and "Link" not in response.headers


def user_id(client, user):
    return client.get("/auth/me", headers=user["headers"]).get_json()["id"]
