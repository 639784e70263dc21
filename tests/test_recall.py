"""Recall: the user's own earlier words and memories come back across chats, ranked, and only theirs."""

import pytest

from conftest import RecordingResponder, install_responder, new_chat, new_user, search, send


def test_a_fact_told_in_one_chat_is_recalled_in_another(client, user, chat):
    told = send(client, user, chat["id"], "my cat is called Ada")
    other = new_chat(client, user)

    reply = send(client, user, other["id"], "what is my cat called?")

    assert "No language model answers this chat" in reply["content"]
    day = told["created_at"][:10]
    assert f'Memories I recalled for this message:\n- {day} (chat "{chat["title"]}"): my cat is called Ada' in reply["content"]


def test_search_matches_any_salient_word_and_names_the_chat(client, user, chat):
    told = send(client, user, chat["id"], "my cat is called Ada")

    items = search(client, user, "what was my cat called again?")

    assert len(items) == 1
    (item,) = items
    assert item["source"] == "message"
    assert item["chat_id"] == chat["id"]
    assert item["content"] == "my cat is called Ada"
    assert item["score"] > 0
    assert item["created_at"] <= told["created_at"]


def test_nothing_recalled_says_so(client, user, chat):
    reply = send(client, user, chat["id"], "hello there, how are you?")
    assert "I found no memories related to this message." in reply["content"]


def test_assistant_replies_are_not_recalled(client, user, chat):
    send(client, user, chat["id"], "my cat is called Ada")
    items = search(client, user, "cat Ada")
    assert [item["source"] for item in items] == ["message"]
    assert items[0]["content"] == "my cat is called Ada"  # not the assistant's reply that quotes it


@pytest.mark.parametrize("q", ["", "   ", "the and of", "what was it again?", "!!! ???"])
def test_empty_or_stopword_only_queries_find_nothing(client, user, chat, q):
    send(client, user, chat["id"], "the and of what was it again")
    assert search(client, user, q) == []


@pytest.mark.parametrize("q", [
    "cat's \\ name", "'cat' & | ! ( ) <-> :* : cat", "cat:*A", "O'Brien's cat", "\\\\'", "кошка Ада 猫",
    ("cat dog " * 125).strip(), "<script>cat</script>", "cat -dog OR \"ada\"",
])
def test_hostile_queries_are_plain_words(client, user, chat, q):
    send(client, user, chat["id"], "my cat is called Ada")
    items = search(client, user, q)
    assert all(item["content"] == "my cat is called Ada" for item in items)


def test_query_limits(client, user):
    assert client.get("/memories/search", headers=user["headers"]).status_code == 422
    assert client.get("/memories/search", query_string={"q": "x" * 1001}, headers=user["headers"]).status_code == 422
    assert client.get("/memories/search", query_string={"q": "a\x00b"}, headers=user["headers"]).status_code == 422
    assert client.get("/memories/search", query_string={"q": "cat", "limit": 0}, headers=user["headers"]).status_code == 422
    assert client.get("/memories/search", query_string={"q": "cat"}).status_code == 401


def test_limit_caps_the_results(client, user, chat):
    for i in range(7):
        send(client, user, chat["id"], f"the garden needs water {i}")
    assert len(search(client, user, "garden")) == 7
    assert len(search(client, user, "garden", limit=3)) == 3


def test_a_closer_match_beats_a_weaker_one(client, user, chat, db):
    send(client, user, chat["id"], "I fed the cat this morning")
    send(client, user, chat["id"], "my cat is called Ada")
    send(client, user, chat["id"], "the weather is nice")

    items = search(client, user, "what is my cat called?")

    assert [item["content"] for item in items] == ["my cat is called Ada", "I fed the cat this morning"]
    assert items[0]["score"] > items[1]["score"]


def test_a_newer_item_beats_an_equally_relevant_older_one(client, user, chat, db):
    send(client, user, chat["id"], "we moved to Lisbon")
    send(client, user, chat["id"], "we moved to Porto")
    db.execute("UPDATE messages SET created_at = now() - interval '90 days' WHERE content = 'we moved to Porto'")

    items = search(client, user, "where did we move?")

    assert [item["content"] for item in items] == ["we moved to Lisbon", "we moved to Porto"]


def test_a_closer_and_newer_item_beats_a_weaker_older_one(client, user, chat, db):
    send(client, user, chat["id"], "my cat likes fish")
    send(client, user, chat["id"], "my cat Ada likes tuna fish")
    db.execute("UPDATE messages SET created_at = now() - interval '1 year' WHERE content = 'my cat likes fish'")

    items = search(client, user, "which fish does Ada the cat like?")

    assert [item["content"] for item in items] == ["my cat Ada likes tuna fish", "my cat likes fish"]


def test_memories_are_recalled_with_messages(client, user, chat):
    send(client, user, chat["id"], "my cat is called Ada")
    saved = client.post("/memories", json={"key": "pet", "content": "The user's cat Ada is a tabby"},
                        headers=user["headers"]).get_json()

    items = search(client, user, "tell me about my cat Ada")

    by_source = {item["source"]: item for item in items}
    assert set(by_source) == {"message", "memory"}
    assert by_source["memory"]["id"] == saved["id"]
    assert "chat_id" not in by_source["memory"]


def test_a_soft_deleted_chat_never_comes_back(client, user, chat):
    send(client, user, chat["id"], "my cat is called Ada")
    assert search(client, user, "cat")
    assert client.delete(f"/chats/{chat['id']}", headers=user["headers"]).status_code == 204

    assert search(client, user, "cat") == []
    other = new_chat(client, user)
    reply = send(client, user, other["id"], "what is my cat called?")
    assert "Ada" not in reply["content"]


def test_a_deleted_memory_is_gone_from_search_at_once(client, user):
    memory = client.post("/memories", json={"content": "my cat is called Ada"}, headers=user["headers"]).get_json()
    assert [item["id"] for item in search(client, user, "cat")] == [memory["id"]]

    assert client.delete(f"/memories/{memory['id']}", headers=user["headers"]).status_code == 204

    assert search(client, user, "cat") == []


def test_two_users_with_the_same_words_never_see_each_other(app, client):
    recorder = RecordingResponder()
    install_responder(app, recorder)
    alice, bob = new_user(client), new_user(client)
    alice_chat, bob_chat = new_chat(client, alice), new_chat(client, bob)
    send(client, alice, alice_chat["id"], "my cat is called Ada")
    client.post("/memories", json={"key": "cat", "content": "Alice's cat is called Ada"}, headers=alice["headers"])
    send(client, bob, bob_chat["id"], "my cat is called Bob")

    assert [item["content"] for item in search(client, bob, "my cat is called Ada")] == ["my cat is called Bob"]
    assert {item["content"] for item in search(client, alice, "my cat is called Bob")} == {
        "my cat is called Ada", "Alice's cat is called Ada"}

    send(client, bob, new_chat(client, bob)["id"], "what is my cat called? Ada?")
    seen_by_bob = "\n".join(message["content"] for message in recorder.inputs[-1])
    assert "my cat is called Bob" in seen_by_bob
    assert "Alice" not in seen_by_bob and "called Ada" not in seen_by_bob


def test_search_takes_a_long_text_in_a_body_too(client, user, chat):
    send(client, user, chat["id"], "猫 " * 10 + "my cat is called Ada")
    long_text = "猫" * 990 + " cat Ada"  # 998 characters: more than a URL carries, within the 1,000 allowed

    response = client.post("/memories/search", json={"q": long_text, "limit": 3}, headers=user["headers"])

    assert response.status_code == 200 and response.get_json()[0]["content"].endswith("my cat is called Ada")
    too_long = client.post("/memories/search", json={"q": "x" * 1001}, headers=user["headers"])
    assert too_long.status_code == 422
    unknown = client.post("/memories/search", json={"q": "cat", "extra": 1}, headers=user["headers"])
    assert unknown.status_code == 422


def test_an_item_dated_centuries_back_is_recalled_and_sends_still_work(client, user):
    """The recency factor's exponent is capped: 0.5 ** (age in months) underflowed for year-1 dates (422 on every recall)."""
    ancient = {"title": "Antiquity", "messages": [
        {"role": "user", "content": "the amphora held olive oil", "created_at": "0001-01-01T00:00:00Z"},
        {"role": "assistant", "content": "noted", "created_at": "0001-01-01T00:00:05Z"}]}
    assert client.post("/chats/import", json=ancient, headers=user["headers"]).status_code == 201

    assert [item["content"] for item in search(client, user, "amphora")] == ["the amphora held olive oil"]
    other = new_chat(client, user)
    assert client.post(f"/chats/{other['id']}/messages", json={"content": "what was in the amphora?"},
                       headers=user["headers"]).status_code == 201
