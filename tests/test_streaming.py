"""POST /chats/{id}/messages with `Accept: text/event-stream`: deltas, then the stored message, or an error."""

import json

from conftest import count_rows, new_chat, new_user
from fake_provider import Reply, Status

SSE = {"Accept": "text/event-stream"}


def parse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of an SSE body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def stream(client, user, chat_id, content="hello", **kwargs):
    return client.post(f"/chats/{chat_id}/messages", json={"content": content},
                       headers={**user["headers"], **SSE}, **kwargs)


def test_deltas_from_the_provider_then_the_stored_message(llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Reply(pieces=["Your ", "cat ", "is ", "Ada."]))

    response = stream(llm_client, user, chat["id"], "what is my cat called?")

    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    events = parse_events(response.get_data(as_text=True))
    assert [name for name, _ in events] == ["delta"] * 4 + ["message"]
    assert [data["content"] for _, data in events[:4]] == ["Your ", "cat ", "is ", "Ada."]
    message = events[-1][1]
    assert message["content"] == "Your cat is Ada." and message["role"] == "assistant"
    assert message["usage"]["prompt_tokens"] == 11 and message["usage"]["completion_tokens"] == 7
    request = provider.requests[-1]["body"]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    listed = llm_client.get(f"/chats/{chat['id']}/messages", headers=user["headers"]).get_json()
    assert [m["content"] for m in listed] == ["what is my cat called?", "Your cat is Ada."]
    assert listed[1] == message


def test_a_stream_that_breaks_off_ends_with_an_error_event_and_writes_nothing(llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Reply(pieces=["one ", "two ", "three ", "four"], drop_after=2))

    events = parse_events(stream(llm_client, user, chat["id"]).get_data(as_text=True))

    assert [name for name, _ in events] == ["delta", "delta", "error"]
    assert events[-1][1]["status"] == 502 and "model provider" in events[-1][1]["detail"]
    assert count_rows(db, "messages") == 0 and count_rows(db, "monthly_usage") == 0


def test_a_stream_without_an_end_is_an_error(llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Reply(pieces=["half an answer"], done=False))

    events = parse_events(stream(llm_client, user, chat["id"]).get_data(as_text=True))

    assert [name for name, _ in events] == ["delta", "error"]
    assert count_rows(db, "messages") == 0


def test_a_provider_that_falls_silent_mid_stream_is_a_504_event(llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Reply(pieces=["one ", "two"], gap=3))  # the app's read timeout is 1 s

    events = parse_events(stream(llm_client, user, chat["id"]).get_data(as_text=True))

    assert [name for name, _ in events] == ["delta", "error"]
    assert events[-1][1]["status"] == 504
    assert count_rows(db, "messages") == 0


def test_a_provider_that_refuses_before_streaming_gets_a_plain_json_error(llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Status(500), Status(500), Status(500))

    response = stream(llm_client, user, chat["id"])

    assert response.status_code == 502 and response.mimetype == "application/json"
    assert "model provider" in response.get_json()["detail"]
    assert count_rows(db, "messages") == 0


def test_checks_before_the_stream_are_plain_json_errors(llm_client, provider):
    user, other = new_user(llm_client), new_user(llm_client)
    chat = new_chat(llm_client, other)
    assert stream(llm_client, user, chat["id"]).status_code == 404
    response = llm_client.post(f"/chats/{chat['id']}/messages", json={"content": ""}, headers={**other["headers"], **SSE})
    assert response.status_code == 422 and response.mimetype == "application/json"
    assert provider.requests == []


def test_a_client_that_leaves_mid_stream_stops_the_provider_and_nothing_is_written(llm_client, provider, db):
    user = new_user(llm_client)
    chat = new_chat(llm_client, user)
    provider.script(Reply(pieces=[f"piece {n} " for n in range(50)], gap=0.05))

    response = stream(llm_client, user, chat["id"], buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    assert first.startswith(b"event: delta")
    response.close()  # what the server does when the client's socket is gone

    assert provider.wait_for(lambda: provider.disconnects == 1)  # the provider's stream was dropped
    assert provider.wait_for(lambda: provider.in_flight == 0)
    assert count_rows(db, "messages") == 0 and count_rows(db, "monthly_usage") == 0


def test_the_offline_responder_streams_too(client, user, chat):
    events = parse_events(stream(client, user, chat["id"], "my cat is called Ada").get_data(as_text=True))
    names = [name for name, _ in events]
    assert names[-1] == "message" and 2 <= names.count("delta") <= 4 and set(names[:-1]) == {"delta"}
    assert "".join(data["content"] for _, data in events[:-1]) == events[-1][1]["content"]
    assert events[-1][1]["model"] == "offline"


def test_without_the_accept_header_the_answer_is_json(client, user, chat):
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"},
                           headers={**user["headers"], "Accept": "*/*"})
    assert response.status_code == 201 and response.mimetype == "application/json"
