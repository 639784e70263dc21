"""Replies under a real gunicorn: SSE arrives piece by piece, a client that leaves frees its connection slot,
and slow model calls do not hold up other requests."""

import json
import socket
import threading
import time

import pytest

from conftest import OPERATOR_TOKEN
from fake_provider import Reply
from test_serve import Server, call

pytestmark = pytest.mark.slow


def sign_up(base: str, email: str) -> tuple[str, str]:
    """Register and open a chat; return (token, chat id)."""
    status, _, tokens = call(base, "POST", "/auth/register", {"email": email, "password": "correct horse battery"})
    assert status == 201
    token = tokens["access_token"]
    status, _, chat = call(base, "POST", "/chats", {}, token)
    assert status == 201
    return token, chat["id"]


def messages_in(db, chat_id: str) -> int:
    """How many messages a chat holds (the served database is shared with other serve tests)."""
    return db.execute("SELECT count(*) FROM messages WHERE chat_id = %s", [chat_id]).fetchone()[0]


def open_stream(server: Server, token: str, chat_id: str) -> socket.socket:
    """Send an SSE request on a raw socket and return it, positioned after the response headers."""
    body = json.dumps({"content": "tell me a long story"}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"POST /chats/{chat_id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return received


def test_sse_through_gunicorn_and_a_client_that_leaves_frees_its_connection_slot(database_url, provider, db):
    provider.script(
        Reply(pieces=["Once ", "upon ", "a ", "time."], gap=0.2),
        Reply(pieces=[f"word{n} " for n in range(200)], gap=0.05),  # would stream for 10 s
    )
    # One worker serving one connection at a time: if the abandoned stream kept it, /health would wait 10 s.
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_LLM_BASE_URL": provider.url,
                     "MEMLAYER_LLM_MODEL": "fake-model", "MEMLAYER_WORKER_CONNECTIONS": "1"}, workers=1)
    try:
        server.wait_ready()
        token, chat_id = sign_up(server.base, "streamer@example.com")

        sock = open_stream(server, token, chat_id)
        first = read_until(sock, b"event: delta")
        arrived_first = time.monotonic()
        assert b"200 OK" in first and b"text/event-stream" in first and b"Transfer-Encoding: chunked" in first
        rest = read_until(sock, b"event: message")
        assert time.monotonic() - arrived_first >= 0.4  # pieces came as the model produced them, not at the end
        assert b"Once upon a time." in rest
        sock.close()

        sock = open_stream(server, token, chat_id)
        read_until(sock, b"event: delta")
        sock.close()  # the client leaves mid-stream
        left = time.monotonic()
        status, _, _ = call(server.base, "GET", "/health")
        freed_after = time.monotonic() - left
        assert status == 200 and freed_after < 3, f"slot still busy {freed_after:.1f} s after the client left"
        assert provider.wait_for(lambda: provider.disconnects == 1)
        assert messages_in(db, chat_id) == 2  # only the finished exchange
    finally:
        code, output = server.interrupt()
    assert code == 0, output


def test_slow_model_calls_do_not_hold_up_other_requests(database_url, provider, db):
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_LLM_BASE_URL": provider.url,
                     "MEMLAYER_LLM_MODEL": "fake-model"}, workers=1)
    try:
        server.wait_ready()
        token, chat_id = sign_up(server.base, "patient@example.com")
        provider.pause()
        senders = [threading.Thread(target=call, args=(server.base, "POST", f"/chats/{chat_id}/messages",
                                                       {"content": f"question {n}"}, token)) for n in range(16)]
        for sender in senders:
            sender.start()
        assert provider.wait_for(lambda: provider.in_flight == 16, timeout=10)

        started = time.monotonic()
        status, _, chats = call(server.base, "GET", "/chats", token=token)
        took = time.monotonic() - started
        status_pool, _, stats = call(server.base, "GET", "/health/db-pool", token=OPERATOR_TOKEN)
        provider.resume()
        for sender in senders:
            sender.join()

        assert status == 200 and len(chats) == 1 and took < 1.0
        assert status_pool == 200 and stats.get("requests_waiting", 0) == 0
        assert messages_in(db, chat_id) == 32
    finally:
        code, output = server.interrupt()
    assert code == 0, output


def answer_by_kind(handler, body):
    """The fake model: a reply to a chat, one fact to an extraction (whichever job asks)."""
    if "response_format" in body:
        fact = {"op": "add", "id": None, "content": "User's sister is called Lucia"}
        return Reply(json.dumps({"operations": [fact]}))(handler, body)
    return Reply("Nice to know.")(handler, body)


def test_serve_runs_a_job_worker_beside_gunicorn_that_writes_memories(database_url, provider):
    provider.default = answer_by_kind
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_LLM_BASE_URL": provider.url,
                     "MEMLAYER_LLM_MODEL": "fake-model", "MEMLAYER_JOB_POLL_SECONDS": "0.1",
                     "MEMLAYER_MEMORY_EXTRACTION": "auto"}, workers=1)
    try:
        server.wait_ready()
        token, chat_id = sign_up(server.base, "remembered@example.com")
        status, _, _ = call(server.base, "POST", f"/chats/{chat_id}/messages", {"content": "My sister is Lucia."}, token)
        assert status == 201
        deadline, memories = time.monotonic() + 15, []
        while time.monotonic() < deadline and not memories:
            memories = call(server.base, "GET", "/memories", token=token)[2]
            time.sleep(0.1)
        assert [m["content"] for m in memories] == ["User's sister is called Lucia"]
    finally:
        code, output = server.interrupt()
    assert code == 0, output
    assert "job worker started" in output and "job worker stopped" in output
