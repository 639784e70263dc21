"""Idempotency-Key on POST /chats and POST /chats/{id}/messages: replay, mismatch, in-progress, recovery."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from conftest import RecordingResponder, count_rows, install_responder, new_user
from memlayer.storage.db import sql
from memlayer.web.errors import ProviderFailed


def keyed(user, key="retry-me-1"):
    return {**user["headers"], "Idempotency-Key": key}


def test_a_retried_chat_creation_replays_the_first_answer_byte_for_byte(client, user, db):
    first = client.post("/chats", json={"title": "Trip"}, headers=keyed(user))
    again = client.post("/chats", data=' { "title" : "Trip" } ', content_type="application/json", headers=keyed(user))
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert count_rows(db, "chats") == 1


def test_a_retried_send_replays_the_reply_without_asking_the_model_again(app, client, user, chat, db):
    responder = install_responder(app, RecordingResponder("one answer"))
    url = f"/chats/{chat['id']}/messages"
    first = client.post(url, json={"content": "hello"}, headers=keyed(user))
    again = client.post(url, json={"content": "hello"}, headers=keyed(user))
    assert first.status_code == again.status_code == 201 and again.get_data() == first.get_data()
    assert len(responder.inputs) == 1
    assert count_rows(db, "messages") == 2
    # Without a key, the same body is a new message.
    assert client.post(url, json={"content": "hello"}, headers=user["headers"]).status_code == 201
    assert count_rows(db, "messages") == 4


def test_the_same_key_with_another_body_or_path_is_422_and_writes_nothing(client, user, chat, db):
    assert client.post("/chats", json={"title": "A"}, headers=keyed(user)).status_code == 201
    other_body = client.post("/chats", json={"title": "B"}, headers=keyed(user))
    other_path = client.post(f"/chats/{chat['id']}/messages", json={"title": "A"}, headers=keyed(user))
    assert other_body.status_code == 422
    assert other_body.get_json() == {"detail": "This Idempotency-Key was used for a different request"}
    assert other_path.status_code == 422
    assert count_rows(db, "chats") == 2 and count_rows(db, "messages") == 0


def test_keys_belong_to_one_user(client, user, db):
    intruder = new_user(client)
    mine = client.post("/chats", json={"title": "mine"}, headers=keyed(user))
    theirs = client.post("/chats", json={"title": "mine"}, headers=keyed(intruder))
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["id"] != mine.get_json()["id"]
    assert count_rows(db, "chats") == 2


class BlockingResponder(RecordingResponder):
    """Answers only once released, to keep a send in flight."""

    def __init__(self):
        super().__init__("finally")
        self.started, self.release = threading.Event(), threading.Event()

    def answer(self, model, messages):
        """Wait for the test to release the answer."""
        self.started.set()
        assert self.release.wait(10)
        return super().answer(model, messages)


def test_a_retry_while_the_first_runs_is_409_then_replays(app, user, chat, db):
    responder = install_responder(app, BlockingResponder())
    url = f"/chats/{chat['id']}/messages"
    with ThreadPoolExecutor(1) as executor:
        first = executor.submit(lambda: app.test_client().post(url, json={"content": "hi"}, headers=keyed(user)))
        assert responder.started.wait(10)
        during = app.test_client().post(url, json={"content": "hi"}, headers=keyed(user))
        responder.release.set()
        first = first.result()
    assert during.status_code == 409 and int(during.headers["Retry-After"]) >= 1
    assert during.get_json() == {"detail": "A request with this Idempotency-Key is still in progress"}
    after = app.test_client().post(url, json={"content": "hi"}, headers=keyed(user))
    assert first.status_code == after.status_code == 201 and after.get_data() == first.get_data()
    assert len(responder.inputs) == 1 and count_rows(db, "messages") == 2


class FailingOnceResponder(RecordingResponder):
    """Fails like a provider would the first time, then answers."""

    def answer(self, model, messages):
        """Fail once, then answer."""
        if not self.inputs:
            self.inputs.append(messages)
            raise ProviderFailed("The model provider failed (HTTP 503). Nothing was saved; please retry.")
        return super().answer(model, messages)


def test_a_failed_request_gives_its_key_back_for_the_retry(app, client, user, chat, db):
    responder = install_responder(app, FailingOnceResponder())
    url = f"/chats/{chat['id']}/messages"
    assert client.post(url, json={"content": "hi"}, headers=keyed(user)).status_code == 502
    assert count_rows(db, "idempotency_keys") == 0
    assert client.post(url, json={"content": "hi"}, headers=keyed(user)).status_code == 201
    assert len(responder.inputs) == 2 and count_rows(db, "messages") == 2


def test_a_key_is_given_back_even_when_the_pool_lends_a_dead_connection(app, client, user, chat, db, monkeypatch):
    install_responder(app, FailingOnceResponder())
    original, calls = sql.idempotency.release_key, []

    def dead_then_working(conn, **params):
        calls.append(conn)
        if len(calls) == 1:  # the pooled connection died in the database fault that failed the request
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return original(conn, **params)

    monkeypatch.setattr(sql.idempotency, "release_key", dead_then_working)
    url = f"/chats/{chat['id']}/messages"
    assert client.post(url, json={"content": "hi"}, headers=keyed(user)).status_code == 502

    assert len(calls) == 2 and count_rows(db, "idempotency_keys") == 0  # released on a fresh connection
    assert client.post(url, json={"content": "hi"}, headers=keyed(user)).status_code == 201  # not a 409


def test_the_key_is_recorded_in_the_same_transaction_as_the_writes(app, client, user, chat, db, monkeypatch):
    import memlayer.web.idempotency as idempotency

    def fail_after_the_inserts(conn, claim, body, status):
        assert conn.execute("SELECT count(*) FROM messages").fetchone()["count"] == 2  # the pair is in this transaction
        raise RuntimeError("injected failure while recording the key")

    monkeypatch.setattr(idempotency, "record", fail_after_the_inserts)
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=keyed(user))
    assert response.status_code == 500
    assert count_rows(db, "messages") == 0 and count_rows(db, "idempotency_keys") == 0


def test_a_request_that_lost_its_claim_writes_nothing(app, client, user, chat, db):
    class Usurped(RecordingResponder):
        def answer(self, model, messages):
            """Let another request take the key over while the model answers."""
            db.execute("UPDATE idempotency_keys SET claim_token = gen_random_uuid()")
            return super().answer(model, messages)

    install_responder(app, Usurped())
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=keyed(user))
    assert response.status_code == 409
    assert response.get_json() == {"detail": "Another request took over this Idempotency-Key"}
    assert count_rows(db, "messages") == 0


def test_a_key_held_by_a_dead_request_frees_itself_when_its_lease_ends(client, user, db):
    assert client.post("/chats", json={"title": "x"}, headers=keyed(user)).status_code == 201
    # Pretend the request died mid-way (a killed worker): claimed, never recorded.
    db.execute("UPDATE idempotency_keys SET status_code = NULL, response_body = NULL, "
               "locked_until = now() + interval '30 seconds'")
    held = client.post("/chats", json={"title": "x"}, headers=keyed(user))
    assert held.status_code == 409 and 29 <= int(held.headers["Retry-After"]) <= 30
    db.execute("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
    assert client.post("/chats", json={"title": "x"}, headers=keyed(user)).status_code == 201
    assert count_rows(db, "chats") == 2


def test_keys_are_kept_24_hours(client, user, db):
    assert client.post("/chats", json={"title": "x"}, headers=keyed(user, "old")).status_code == 201
    assert client.post("/chats", json={"title": "x"}, headers=keyed(user, "older")).status_code == 201
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    reused = client.post("/chats", json={"title": "another"}, headers=keyed(user, "old"))
    assert reused.status_code == 201 and reused.get_json()["title"] == "another"
    # Expired keys are purged as new ones are claimed.
    assert [row[0] for row in db.execute("SELECT key FROM idempotency_keys").fetchall()] == ["old"]


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_bad_keys_are_400_and_write_nothing(client, user, db, key):
    response = client.post("/chats", json={"title": "x"}, headers={**user["headers"], "Idempotency-Key": key})
    assert response.status_code == 400
    assert response.get_json() == {"detail": "Idempotency-Key must be 1 to 255 printable ASCII characters"}
    assert count_rows(db, "chats") == 0


def test_the_longest_key_is_fine(client, user):
    assert client.post("/chats", json={"title": "x"}, headers=keyed(user, "k" * 255)).status_code == 201


def test_a_streamed_send_is_replayed_as_its_stored_message(client, user, chat, db):
    url = f"/chats/{chat['id']}/messages"
    streamed = client.post(url, json={"content": "hi"}, headers={**keyed(user), "Accept": "text/event-stream"})
    events = streamed.get_data(as_text=True).split("\n\n")
    message_event = next(event for event in events if event.startswith("event: message"))
    replay = client.post(url, json={"content": "hi"}, headers=keyed(user))
    assert replay.status_code == 201
    assert replay.get_json() == json.loads(message_event.split("data: ", 1)[1])
    assert count_rows(db, "messages") == 2
