"""Slow clients cannot stop the service: hundreds of dripping and silent sockets while it keeps answering.

Part of the fault suite (`-m faults`): one `memlayer serve` on 127.0.0.1, about 30 s. bench/slow_clients.py
measures the same with 1,000 sockets of each kind beside the gthread design it replaced.
"""

import asyncio
import http.client
import threading
import time

import pytest

from test_serve import Server, quickstart

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SOCKETS_PER_KIND = 300
HOLD_SECONDS = 14.0
BODY_TIMEOUT = 3  # MEMLAYER_BODY_TIMEOUT for this server; a request's head has gunicorn's keepalive (5 s)
OPENINGS = {
    "header drip": b"GET /health HTTP/1.1\r\nHost: x\r\n",
    "body drip": b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 500\r\n\r\n{",
    "idle": b"",
}


async def slow_socket(port: int, kind: str, stop: asyncio.Event, closes: list) -> None:
    """Until `stop`: open a socket, send the kind's opening, drip a byte a second; at the server's close record
    (kind, seconds open, what it answered) and open the next one, as an attacker would."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened = time.monotonic()
        writer.write(OPENINGS[kind])
        answer = asyncio.ensure_future(reader.read())
        try:
            while not stop.is_set() and not answer.done():
                await asyncio.wait([answer], timeout=1.0)
                if kind != "idle" and not answer.done():
                    writer.write(b" " if kind == "body drip" else b"X")
            if answer.done():
                closes.append((kind, time.monotonic() - opened, answer.result()))
        except OSError:
            closes.append((kind, time.monotonic() - opened, b""))
        finally:
            answer.cancel()
            writer.close()


async def hold(port: int, stop_after: float, closes: list) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(slow_socket(port, kind, stop, closes))
             for kind in OPENINGS for _ in range(SOCKETS_PER_KIND)]
    await asyncio.sleep(stop_after)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def timed_get(port: int, path: str, token: str | None = None) -> tuple[int, float]:
    """(status, milliseconds) of one GET on a fresh connection; (0, timeout) when it does not answer."""
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status, (time.perf_counter() - started) * 1000
    except (OSError, http.client.HTTPException):
        return 0, (time.perf_counter() - started) * 1000


def test_hundreds_of_slow_sockets_leave_the_service_answering_and_are_closed_in_bounded_time(database_url):
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_RATELIMIT_ENABLED": "false",
                     "MEMLAYER_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    try:
        server.wait_ready()
        token = quickstart(server.base, "slow-clients@example.com")
        closes: list = []
        siege = threading.Thread(target=asyncio.run, args=(hold(server.port, HOLD_SECONDS, closes),))
        siege.start()
        time.sleep(2)  # every slow socket connected and dripping
        health, chats = [], []
        probing_ends = time.monotonic() + HOLD_SECONDS - 4
        while time.monotonic() < probing_ends:
            health.append(timed_get(server.port, "/health"))
            chats.append(timed_get(server.port, "/chats?limit=20", token))
            time.sleep(0.03)
        siege.join()
    finally:
        code, output = server.interrupt()

    assert len(health) >= 50
    assert {status for status, _ in health} == {200} and {status for status, _ in chats} == {200}
    slowest = max(ms for _, ms in health + chats)
    # gthread workers held a thread per dripping socket: these timed out (10 s) or took 9 s.
    assert slowest < 2000, f"a request took {slowest:.0f} ms beside the slow sockets"

    by_kind = {kind: [(seconds, answer) for k, seconds, answer in closes if k == kind] for kind in OPENINGS}
    # The server closed every slow socket within its deadline (the head's 5 s, the body's 3 s, then the rest of
    # the body's drip within the next head's 5 s), most of them more than once while the test held them.
    for kind in ("header drip", "idle"):
        assert len(by_kind[kind]) >= 2 * SOCKETS_PER_KIND, f"{kind}: {len(by_kind[kind])} closed"
        assert max(seconds for seconds, _ in by_kind[kind]) < 5 + 2
    assert len(by_kind["body drip"]) >= SOCKETS_PER_KIND
    assert max(seconds for seconds, _ in by_kind["body drip"]) < BODY_TIMEOUT + 5 + 2
    # What the client could read: the 408 (unless the close after it came as a reset, which loses it).
    answered = [answer for _, answer in by_kind["body drip"] if answer]
    assert len(answered) >= SOCKETS_PER_KIND / 2
    assert {answer.split(b"\r\n", 1)[0] for answer in answered} == {b"HTTP/1.1 408 REQUEST TIMEOUT"}
    assert all(b'{"detail":"The request body did not arrive within 3 s"}' in answer for answer in answered)
    assert code == 0, output[-3000:]
