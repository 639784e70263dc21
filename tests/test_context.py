"""What the responder sees: system prompt, recalled memories, the recent window in order, within budget."""

import re
from datetime import datetime, timezone

import pytest

from conftest import RecordingResponder, install_responder, new_chat, new_user, send, settled_stats
from memlayer.assistant.responders import OfflineResponder, TextResponder
from memlayer.config import ConfigError
from memlayer.memory.context import (
    MEMORY_HEADER,
    ContextSettings,
    compose,
    memory_block,
    recalled_items,
)
from memlayer.providers.token_count import estimate_tokens
from memlayer.storage.db import get_pool

WHEN = datetime(2023, 5, 7, 14, 30, tzinfo=timezone.utc)


def item(content: str, chat_title: str | None = "Chat") -> dict:
    """A recalled row as the recall query returns it."""
    return {"content": content, "created_at": WHEN, "chat_title": chat_title}


def said(lines: list[str]) -> list[str]:
    """The texts of memory-block items, without their date and origin."""
    return [re.fullmatch(r'\d{4}-\d{2}-\d{2} \((?:chat ".*"|saved memory)\): (.*)', line).group(1) for line in lines]


@pytest.fixture
def recorder(app):
    recording = RecordingResponder("noted")
    install_responder(app, recording)
    return recording


@pytest.fixture
def prompted_app(app_factory):
    app = app_factory(SYSTEM_PROMPT="You are a helpful assistant.", RECALL_K=3)
    recording = RecordingResponder("noted")
    install_responder(app, recording)
    return app, recording


def test_the_responder_gets_system_prompt_memory_then_the_window_in_order(prompted_app, db):
    app, recorder = prompted_app
    client = app.test_client()
    user = new_user(client)
    old_chat, chat = new_chat(client, user, "old"), new_chat(client, user, "now")
    send(client, user, old_chat["id"], "my cat is called Ada")
    client.post("/memories", json={"key": "vet", "content": "The cat's vet is Dr. Lopes"}, headers=user["headers"])
    send(client, user, chat["id"], "hello")
    send(client, user, chat["id"], "how are you?")

    send(client, user, chat["id"], "what is my cat called?")

    messages = recorder.inputs[-1]
    assert messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert messages[1]["role"] == "system" and messages[1]["content"].startswith(MEMORY_HEADER)
    assert said(recalled_items(messages)) == ["my cat is called Ada", "The cat's vet is Dr. Lopes"]
    assert messages[2:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "what is my cat called?"},
    ]


def test_items_in_the_recent_window_are_not_repeated_as_memories(app, client, user, chat, recorder):
    send(client, user, chat["id"], "my dog is called Rex")
    send(client, user, chat["id"], "what is my dog called?")

    messages = recorder.inputs[-1]
    assert recalled_items(messages) == []
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "my dog is called Rex"


def test_older_messages_of_the_same_chat_are_recalled_once_out_of_the_window(app_factory):
    app = app_factory(RECENT_MESSAGES=2)
    recorder = RecordingResponder()
    install_responder(app, recorder)
    client = app.test_client()
    user = new_user(client)
    chat = new_chat(client, user)
    send(client, user, chat["id"], "my dog is called Rex")
    send(client, user, chat["id"], "nice weather today")

    send(client, user, chat["id"], "what is my dog called?")

    messages = recorder.inputs[-1]
    assert said(recalled_items(messages)) == ["my dog is called Rex"]
    assert [m["content"] for m in messages[1:]] == ["nice weather today", "noted", "what is my dog called?"]


def test_the_window_keeps_the_newest_messages_that_fit_the_budget(app_factory):
    app = app_factory(CONTEXT_TOKENS=300, RECALL_K=0)
    recorder = RecordingResponder("ok")
    install_responder(app, recorder)
    client = app.test_client()
    user = new_user(client)
    chat = new_chat(client, user)
    for i in range(10):
        send(client, user, chat["id"], f"message {i} " + "word " * 40)  # ~55 tokens each

    send(client, user, chat["id"], "last")

    messages = recorder.inputs[-1]
    assert messages[-1] == {"role": "user", "content": "last"}
    assert sum(estimate_tokens(m["content"]) + 4 for m in messages) <= 300
    assert messages[-2] == {"role": "assistant", "content": "ok"}
    assert messages[-3]["content"].startswith("message 9 ")
    assert not any(m["content"].startswith("message 5 ") for m in messages)


def test_reads_happen_before_the_reply_and_no_connection_is_held_during_it(app, client, user, chat):
    pool = get_pool(app)
    seen = {}

    class Inspecting(TextResponder):
        def answer(self, model, messages):
            seen.update(settled_stats(pool))  # a leaked connection never settles back into the pool
            return "fine"

    install_responder(app, Inspecting())
    send(client, user, chat["id"], "hello")
    assert seen["pool_available"] == seen["pool_size"]  # every connection is back in the pool


def test_compose_orders_and_budgets():
    settings = ContextSettings(system_prompt="sys", recall_k=5, token_budget=1000, recent_limit=50)
    recent_newest_first = [{"role": "assistant", "content": "b"}, {"role": "user", "content": "a"}]
    messages = compose(settings, recalled=[item("fact\nwith   lines", "Trip\nplans")], recent_newest_first=recent_newest_first,
                       content="new")
    assert [m["role"] for m in messages] == ["system", "system", "user", "assistant", "user"]
    assert messages[1]["content"] == MEMORY_HEADER + '\n- 2023-05-07 (chat "Trip plans"): fact with lines'
    assert [m["content"] for m in messages[2:]] == ["a", "b", "new"]


def test_the_memory_block_stays_within_its_share_of_the_budget():
    block = memory_block([item("x" * 400)] * 20, token_budget=500)
    assert estimate_tokens(block["content"]) <= 500
    assert 1 <= len(recalled_items([block])) < 20
    assert memory_block([], 500) is None
    assert len(said(recalled_items([memory_block([item("y" * 5000)], 10_000)]))[0]) == 600  # long items are cut


def test_each_recalled_item_says_when_and_where_it_was_said_in_the_order_given():
    items = [item("we moved to Porto", "Moving " + "day " * 30), item("Sister: Lucia", chat_title=None),
             {**item("I went to a support group"), "created_at": datetime(2021, 1, 2, 23, 59, tzinfo=timezone.utc)}]

    lines = recalled_items([memory_block(items, 1000)])

    assert lines[0].startswith('2023-05-07 (chat "Moving day day') and lines[0].endswith('…"): we moved to Porto')
    assert lines[1:] == ["2023-05-07 (saved memory): Sister: Lucia", '2021-01-02 (chat "Chat"): I went to a support group']


def test_token_estimates():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("a" * 400) == 100
    assert estimate_tokens("猫" * 10) == 10  # non-ASCII text is counted generously


def test_the_offline_responder_lists_what_was_recalled():
    block = memory_block([item("my cat is called Ada", "Pets")], 1000)
    reply = OfflineResponder().answer("offline", [block, {"role": "user", "content": "what is my cat called?"}])
    assert "No language model answers this chat" in reply
    assert "\u201cwhat is my cat called?\u201d" in reply
    assert reply.endswith('Memories I recalled for this message:\n- 2023-05-07 (chat "Pets"): my cat is called Ada')
    assert OfflineResponder().answer("offline", [{"role": "user", "content": "hi"}]).endswith(
        "I found no memories related to this message.")


@pytest.mark.parametrize("setting", [{"RECALL_K": -1}, {"RECALL_K": "5"}, {"CONTEXT_TOKENS": 10}, {"RECENT_MESSAGES": True}])
def test_bad_context_settings_are_refused_at_start(app_factory, setting):
    with pytest.raises(ConfigError):
        app_factory(**setting)


def test_recall_can_be_turned_off(app_factory):
    app = app_factory(RECALL_K=0)
    client = app.test_client()
    user = new_user(client)
    send(client, user, new_chat(client, user)["id"], "my cat is called Ada")
    reply = send(client, user, new_chat(client, user)["id"], "what is my cat called?")
    assert "I found no memories related to this message." in reply["content"]
