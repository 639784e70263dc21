"""Replies from a real (local, fake) Chat Completions server: what it is sent, what is stored, how failures end."""

import logging
import threading
from decimal import Decimal

import pytest

from conftest import LLM_API_KEY, LLM_MODEL, count_rows, new_chat, new_user, run_together, send
from fake_provider import Drop, Hang, Malformed, Reply, Status
from memlayer.providers.chat_completions import MAX_RETRY_WAIT_SECONDS
from memlayer.storage.db import get_pool


def post_message(client, user, chat_id, content="hello"):
    return client.post(f"/chats/{chat_id}/messages", json={"content": content}, headers=user["headers"])


def test_the_provider_gets_the_assembled_context_and_the_reply_is_stored(llm_app, provider, db):
    llm_app.config["SYSTEM_PROMPT"] = "You are a kind assistant."
    client = llm_app.test_client()
    db.execute("UPDATE models SET input_price_per_million = 1.5, output_price_per_million = 4 WHERE name = %s",
               [LLM_MODEL])
    stranger = new_user(client)
    send(client, stranger, new_chat(client, stranger)["id"], "my cat is called Zorro")
    user = new_user(client)
    send(client, user, new_chat(client, user, "pets")["id"], "my cat is called Ada")
    chat = new_chat(client, user, "today")
    send(client, user, chat["id"], "good morning")
    provider.requests.clear()

    provider.script(Reply("Your cat is called Ada."))
    reply = send(client, user, chat["id"], "what is my cat called?")

    request = provider.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {LLM_API_KEY}"
    body = request["body"]
    assert body["model"] == LLM_MODEL and body["stream"] is False
    messages = body["messages"]
    assert messages[0] == {"role": "system", "content": "You are a kind assistant."}
    assert messages[1]["role"] == "system" and "my cat is called Ada" in messages[1]["content"]
    assert messages[2:] == [
        {"role": "user", "content": "good morning"},
        {"role": "assistant", "content": "Hello from the model."},
        {"role": "user", "content": "what is my cat called?"},
    ]
    assert "Zorro" not in str(body)  # nothing of another user's
    assert reply["content"] == "Your cat is called Ada." and reply["model"] == LLM_MODEL
    assert reply["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "cost": pytest.approx((11 * 1.5 + 7 * 4) / 1e6)}
    stored = db.execute("SELECT model, prompt_tokens, completion_tokens, cost FROM messages WHERE id = %s",
                        [reply["id"]]).fetchone()
    assert stored == (LLM_MODEL, 11, 7, Decimal("0.0000445000"))


def test_without_usage_from_the_provider_tokens_are_estimated(llm_client, provider):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Reply("twelve chars", usage=None))
    reply = send(llm_client, user, chat["id"], "a" * 400)
    assert reply["usage"]["completion_tokens"] == 3  # 12 ASCII characters / 4
    assert reply["usage"]["prompt_tokens"] >= 100  # the 400-character message alone is 100


FAILURES = {
    "error 500 (three times)": ([Status(500)] * 3, 502, 3),
    "error 400 (not retried)": ([Status(400)], 502, 1),
    "hanging past the timeout": ([Hang(5)], 504, 1),
    "malformed JSON": ([Malformed()], 502, 1),
    "JSON without choices": ([Malformed(b'{"choices": []}')], 502, 1),
    "empty reply": ([Reply("   ")], 502, 1),
    "dropped connection": ([Drop()], 502, 1),
}


@pytest.mark.parametrize("behaviours, status, attempts", FAILURES.values(), ids=FAILURES.keys())
def test_each_provider_failure_answers_its_status_and_writes_nothing(llm_client, provider, db, behaviours, status, attempts):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    before = db.execute("SELECT updated_at FROM chats").fetchone()[0]
    provider.script(*behaviours)

    response = post_message(llm_client, user, chat["id"], "this must not be stored")

    assert response.status_code == status
    detail = response.get_json()["detail"]
    assert "model provider" in detail
    assert "PROVIDER-SECRET-DETAIL" not in response.get_data(as_text=True)
    assert LLM_API_KEY not in response.get_data(as_text=True)
    assert len(provider.requests) == attempts
    assert count_rows(db, "messages") == 0 and count_rows(db, "monthly_usage") == 0
    assert db.execute("SELECT updated_at FROM chats").fetchone()[0] == before


def test_a_refused_connection_is_a_502_and_writes_nothing(app_factory, db):
    app = app_factory(LLM_BASE_URL="http://127.0.0.1:9/v1", LLM_MODEL=LLM_MODEL)  # port 9: nothing listens
    client = app.test_client()
    user = new_user(client)
    response = post_message(client, user, new_chat(client, user)["id"])
    assert response.status_code == 502 and "model provider" in response.get_json()["detail"]
    assert count_rows(db, "messages") == 0


def test_429_and_5xx_are_retried_honouring_retry_after(llm_app, llm_client, provider):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Status(429, retry_after=3), Status(503), Reply("third time lucky"))

    reply = send(llm_client, user, chat["id"], "hello")

    assert reply["content"] == "third time lucky" and len(provider.requests) == 3
    waits = llm_app.extensions["memlayer.assistant.responders"]["openai"].waits
    assert waits[0] == 3.0  # the provider's Retry-After
    assert 0.25 <= waits[1] <= 3.0  # jittered backoff: 0.5 s x 2 x [0.5, 1.5]


def test_retries_stop_after_two(llm_app, llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Status(500), Status(502), Status(503), Reply("too late"))

    response = post_message(llm_client, user, chat["id"])

    assert response.status_code == 502 and "HTTP 503" in response.get_json()["detail"]
    assert len(provider.requests) == 3
    assert count_rows(db, "messages") == 0


def test_a_retry_after_too_long_to_wait_is_passed_on_not_waited(llm_app, llm_client, provider):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Status(429, retry_after=int(MAX_RETRY_WAIT_SECONDS) + 50))

    response = post_message(llm_client, user, chat["id"])

    assert response.status_code == 502
    assert response.headers["Retry-After"] == str(int(MAX_RETRY_WAIT_SECONDS) + 50)
    assert len(provider.requests) == 1 and llm_app.extensions["memlayer.assistant.responders"]["openai"].waits == []


def test_no_database_connection_is_held_while_the_provider_thinks(app_factory, provider, db):
    app = app_factory(LLM_BASE_URL=provider.url, LLM_MODEL=LLM_MODEL, LLM_TIMEOUT=10.0,
                      POOL_MIN_SIZE=2, POOL_MAX_SIZE=2, POOL_TIMEOUT=2.0)
    client = app.test_client()
    users = [new_user(client) for _ in range(20)]
    chats = [new_chat(client, user) for user in users]
    pool = get_pool(app)
    provider.pause()
    seen = {}

    def watch():
        # All 20 sends are inside the provider at once: none may hold one of the pool's 2 connections.
        if provider.wait_for(lambda: provider.in_flight == 20, timeout=15):
            seen.update(pool.get_stats())
        provider.resume()

    watcher = threading.Thread(target=watch)
    watcher.start()
    responses = run_together(20, lambda i: post_message(app.test_client(), users[i], chats[i]["id"]))
    watcher.join()

    assert [r.status_code for r in responses] == [201] * 20
    assert provider.peak_in_flight == 20
    assert seen["pool_size"] <= 2
    assert seen["pool_available"] == seen["pool_size"]  # every connection idle in the pool
    assert seen.get("requests_waiting", 0) == 0
    assert count_rows(db, "messages") == 40


def test_no_key_provider_text_or_message_reaches_the_logs(llm_client, provider, caplog):
    caplog.set_level(logging.DEBUG)
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Status(500), Status(500), Status(500), Malformed(), Hang(5), Reply("PRIVATE-REPLY"))
    for _ in range(4):
        post_message(llm_client, user, chat["id"], "PRIVATE-MESSAGE")
    assert "model provider" in caplog.text  # the failures were logged ...
    for secret in (LLM_API_KEY, "PROVIDER-SECRET-DETAIL", "PRIVATE-MESSAGE", "PRIVATE-REPLY"):
        assert secret not in caplog.text  # ... without secrets or anybody's words
