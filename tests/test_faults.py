"""The fault suite: real gunicorn (`memlayer serve`) against a PostgreSQL this module owns and breaks.

The database is stopped before start, restarted under load, its connections are terminated, a row lock
is held against sends, the pool runs dry, and a worker is SIGKILLed mid-request. Afterwards SQL checks
that every acknowledged write is present and nothing is half-written (user rows = assistant rows per chat).
Each scenario prints its measured recovery time (`pytest -m faults -s` shows them).
"""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from conftest import OPERATOR_TOKEN
from fake_provider import Reply
from memlayer.storage.embedded import embedded_server, ensure_database, pg_ctl
from test_serve import Server

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PASSWORD = "correct horse battery"


class OwnedPostgres:
    """An embedded PostgreSQL only this module uses, so it can be stopped and started at will."""

    def __init__(self, root: Path):
        server = embedded_server(str(root), keep_running=True)
        self.pgdata = root / "pgdata"
        self.socket_dir = server.get_uri().split("host=", 1)[1]
        ensure_database(server.get_uri(), "faults")
        # The password is ignored (trust auth); it is here to prove it never reaches the logs.
        self.url = f"postgresql://postgres:s3cret-db-password@/faults?host={self.socket_dir}"
        self.admin_url = server.get_uri("faults")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: in-flight transactions are rolled back and connections cut)."""
        pg_ctl(["-w", "-m", mode, "stop"], self.pgdata)

    def start(self) -> None:
        """Start it again on the same socket."""
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "restart.log"), "start"],
               self.pgdata)

    def connect(self) -> psycopg.Connection:
        """A direct connection for checks."""
        return psycopg.connect(self.admin_url, autocommit=True)


@pytest.fixture(scope="module")
def owned_pg(tmp_path_factory):
    """The module's PostgreSQL, stopped at the end."""
    postgres = OwnedPostgres(tmp_path_factory.mktemp("faults"))
    yield postgres
    postgres.stop("immediate")


def request(base: str, method: str, path: str, body=None, token=None, headers=None, timeout=15.0):
    """One HTTP request: (status, headers, parsed JSON or None); status 0 when the connection itself failed."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())
    except (OSError, urllib.error.URLError):
        return 0, {}, None


def wait_for(condition, timeout: float, step: float = 0.1):
    """Poll `condition` until it returns a truthy value (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return None


def sign_up(base: str) -> tuple[str, str]:
    """A new user with one chat: (access token, chat id)."""
    email = f"fault-{uuid.uuid4().hex[:10]}@example.com"
    status, _, tokens = request(base, "POST", "/auth/register", {"email": email, "password": PASSWORD})
    assert status == 201, tokens
    status, _, chat = request(base, "POST", "/chats", {"title": "under fire"}, tokens["access_token"])
    assert status == 201, chat
    return tokens["access_token"], chat["id"]


def sends_as_a_new_user(base: str) -> bool:
    """Whether a new user can register, open a chat and send (each 201); 503 is a worker still reconnecting."""
    email = f"fault-{uuid.uuid4().hex[:10]}@example.com"
    token = chat_id = None
    for method, path, body in (("POST", "/auth/register", {"email": email, "password": PASSWORD}),
                               ("POST", "/chats", {"title": "made it"}),
                               ("POST", "/chats/{chat_id}/messages", {"content": "made it"})):
        status, _, answer = request(base, method, path.format(chat_id=chat_id), body, token)
        assert status in (201, 503), (path, status, answer)
        if status == 503:
            return False
        token, chat_id = answer.get("access_token", token), answer.get("id", chat_id)
    return True


def report(scenario: str, **measured) -> None:
    print(f"\nFAULT {scenario}: " + ", ".join(f"{name}={value}" for name, value in measured.items()))


def assert_no_half_writes(owned_pg, acknowledged: list[str]) -> None:
    """Every chat holds as many user as assistant messages, and every acknowledged message is stored once."""
    with owned_pg.connect() as conn:
        lopsided = conn.execute(
            "SELECT chat_id, count(*) FILTER (WHERE role = 'user') AS users, "
            "count(*) FILTER (WHERE role = 'assistant') AS assistants "
            "FROM messages GROUP BY chat_id HAVING count(*) FILTER (WHERE role = 'user') "
            "<> count(*) FILTER (WHERE role = 'assistant')"
        ).fetchall()
        stored = Counter(row[0] for row in conn.execute("SELECT content FROM messages WHERE role = 'user'"))
    assert lopsided == []
    assert [content for content in acknowledged if stored[content] != 1] == []


class Load:
    """Senders that each post numbered messages to their own chat until stopped, recording every outcome."""

    def __init__(self, base: str, users: list[tuple[str, str]]):
        self.base, self.users = base, users
        self.outcomes: list[tuple[float, int, str]] = []  # (time answered, status, content)
        self.durations: list[float] = []
        self.running = threading.Event()
        self.threads = [threading.Thread(target=self._send_loop, args=(n,)) for n in range(len(users))]

    def _send_loop(self, n: int) -> None:
        token, chat_id = self.users[n]
        number = 0
        while self.running.is_set():
            number += 1
            content = f"sender {n} message {number} {uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            status, _, _ = request(self.base, "POST", f"/chats/{chat_id}/messages", {"content": content}, token)
            self.outcomes.append((time.monotonic(), status, content))
            self.durations.append(time.monotonic() - started)
            if status != 201:
                time.sleep(0.05)

    def __enter__(self) -> "Load":
        self.running.set()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        for thread in self.threads:
            thread.join()

    def statuses(self) -> Counter:
        """How many answers of each status (0: the connection failed)."""
        return Counter(status for _, status, _ in self.outcomes)

    def acknowledged(self) -> list[str]:
        """The contents the service answered 201 for."""
        return [content for _, status, content in self.outcomes if status == 201]

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first 201 after it."""
        times = [at for at, status, _ in self.outcomes if status == 201 and at > moment]
        return min(times) - moment if times else None


def serve(owned_pg, workers: int = 2, **env) -> Server:
    """`memlayer serve` on the owned database, with short timeouts so faults show quickly."""
    settings = {"MEMLAYER_DATABASE_URL": owned_pg.url, "MEMLAYER_POOL_TIMEOUT": "2", "MEMLAYER_LOCK_TIMEOUT_MS": "500",
                "MEMLAYER_RATELIMIT_ENABLED": "false", **env}
    return Server(settings, workers=workers)


def test_database_down_at_start_then_up_recovers_without_a_restart(owned_pg):
    owned_pg.stop()
    server = serve(owned_pg)
    try:
        health = wait_for(lambda: (lambda r: r if r[0] else None)(request(server.base, "GET", "/health")), 60)
        assert health is not None, "the service did not start while the database was down"
        status, headers, body = health
        assert status == 503 and body["database"] == "unreachable" and headers["Retry-After"]
        status, headers, body = request(server.base, "POST", "/auth/register",
                                        {"email": "early@example.com", "password": PASSWORD})
        assert status == 503 and body == {"detail": "Database unavailable or busy, please retry"}
        assert headers["Retry-After"] == "1"

        owned_pg.start()
        up = time.monotonic()
        assert wait_for(lambda: request(server.base, "GET", "/health")[0] == 200, 30)
        healthy_after = time.monotonic() - up
        registered = wait_for(lambda: request(server.base, "POST", "/auth/register",
                                              {"email": "early@example.com", "password": PASSWORD})[0] == 201, 30)
        assert registered
        serving_after = time.monotonic() - up
        # Each gunicorn worker's pool reconnects on its own backoff, so the next request may reach a worker
        # that is still waiting to: within 30 s a new user must sign up, open a chat and send.
        assert wait_for(lambda: sends_as_a_new_user(server.base), 30)
        report("database down at start", health_ok_after_s=round(healthy_after, 2),
               first_write_after_s=round(serving_after, 2))
    finally:
        code, output = server.interrupt()
    assert code == 0, output
    assert "s3cret-db-password" not in output and PASSWORD not in output


@pytest.mark.parametrize("fault", ["restart", "terminate_backends"])
def test_database_faults_under_load_give_503_never_500_and_no_half_writes(owned_pg, fault):
    server = serve(owned_pg)
    try:
        server.wait_ready()
        users = [sign_up(server.base) for _ in range(8)]
        with Load(server.base, users) as load:
            time.sleep(1.5)
            if fault == "restart":
                owned_pg.stop("fast")
                time.sleep(1.0)
                owned_pg.start()
            else:
                with owned_pg.connect() as conn:
                    killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                          "WHERE application_name = 'memlayer'").fetchone()[0]
                assert killed > 0
            back = time.monotonic()
            if not wait_for(lambda: load.first_success_after(back), 20):
                load.running.clear()
                code, output = server.interrupt()
                raise AssertionError(f"no successful send after the fault: {load.statuses()}\n{output[-8000:]}")
            time.sleep(1.0)
        statuses = load.statuses()
        recovered_after = load.first_success_after(back)
        assert set(statuses) <= {201, 503}, statuses
        assert statuses[201] > 0
        status, _, stats = request(server.base, "GET", "/health/db-pool", token=OPERATOR_TOKEN)
        assert status == 200
        report(f"database {fault} under load (8 senders)", answers=dict(statuses),
               first_201_after_s=round(recovered_after, 2), slowest_answer_s=round(max(load.durations), 2))
    finally:
        code, output = server.interrupt()
    assert code == 0, output
    assert_no_half_writes(owned_pg, load.acknowledged())


def test_a_held_row_lock_gives_503_for_that_chat_only_and_an_empty_pool_answers_fast(owned_pg):
    # One connection per worker: a send stuck behind the lock holds it, so other requests find the pool empty.
    server = serve(owned_pg, workers=1, MEMLAYER_POOL_MIN_SIZE="1", MEMLAYER_POOL_MAX_SIZE="1",
                   MEMLAYER_POOL_TIMEOUT="1", MEMLAYER_LOCK_TIMEOUT_MS="1500")
    try:
        server.wait_ready()
        token, chat_id = sign_up(server.base)
        other_token, _ = sign_up(server.base)
        with owned_pg.connect() as holder:
            with holder.transaction():
                holder.execute("SELECT id FROM chats WHERE id = %s FOR UPDATE", [chat_id])
                blocked: dict = {}

                def send_blocked():
                    started = time.monotonic()
                    blocked["answer"] = request(server.base, "POST", f"/chats/{chat_id}/messages",
                                                {"content": "stuck"}, token)
                    blocked["took"] = time.monotonic() - started

                sender = threading.Thread(target=send_blocked)
                sender.start()
                time.sleep(0.5)  # the send now waits on the lock, holding the worker's only connection
                started = time.monotonic()
                status, headers, body = request(server.base, "GET", "/chats", token=other_token)
                empty_pool_took = time.monotonic() - started
                sender.join()
        assert status == 503 and headers["Retry-After"] == "1", body
        assert empty_pool_took < 1.9  # POOL_TIMEOUT=1, not psycopg's 30 s default
        status, headers, body = blocked["answer"]
        assert status == 503 and headers["Retry-After"] == "1", body
        # The lock is gone: the same chat takes messages again, and the worker's connection is healthy.
        status, _, _ = request(server.base, "POST", f"/chats/{chat_id}/messages", {"content": "free"}, token)
        assert status == 201
        status, _, stats = request(server.base, "GET", "/health/db-pool", token=OPERATOR_TOKEN)
        assert stats["pool_available"] == stats["pool_size"] == 1
        report("row lock held on a chat (lock_timeout 1.5 s, 3 attempts)", send_answered_503_after_s=round(blocked["took"], 2),
               empty_pool_503_after_s=round(empty_pool_took, 2))
    finally:
        code, output = server.interrupt()
    assert code == 0, output
    with owned_pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE chat_id = %s", [chat_id]).fetchone()[0] == 2


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_gunicorn(pid: int) -> bool:
    """Whether the process runs gunicorn (serve's other child is its job worker)."""
    try:
        return b"gunicorn" in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


def test_a_worker_killed_mid_request_is_respawned_and_the_retry_with_its_key_writes_once(owned_pg, provider):
    provider.script(Reply("slow answer", delay=3.0))
    server = serve(owned_pg, workers=1, MEMLAYER_LLM_BASE_URL=provider.url, MEMLAYER_LLM_MODEL="fake-model",
                   MEMLAYER_LLM_TIMEOUT="4")
    try:
        server.wait_ready()
        token, chat_id = sign_up(server.base)
        headers = {"Idempotency-Key": "kill-me-once"}
        path = f"/chats/{chat_id}/messages"
        answer: dict = {}
        sender = threading.Thread(target=lambda: answer.update(
            first=request(server.base, "POST", path, {"content": "survive this"}, token, headers)))
        sender.start()
        assert provider.wait_for(lambda: provider.in_flight == 1, timeout=10)
        (master,) = [pid for pid in children_of(server.process.pid) if is_gunicorn(pid)]
        (worker,) = children_of(master)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        sender.join()
        assert answer["first"][0] == 0  # the connection died with the worker

        assert wait_for(lambda: request(server.base, "GET", "/health")[0] == 200, 30)
        respawned_after = time.monotonic() - killed
        assert children_of(master) and worker not in children_of(master)

        provider.script(Reply("second try"))
        status, retry_headers, body = request(server.base, "POST", path, {"content": "survive this"}, token, headers)
        # The dead request's claim holds the key until its lease (LLM_TIMEOUT + 15 s) ends.
        assert status == 409 and int(retry_headers["Retry-After"]) <= 19, body
        time.sleep(int(retry_headers["Retry-After"]))
        status, _, body = request(server.base, "POST", path, {"content": "survive this"}, token, headers)
        assert status == 201 and body["content"] == "second try"
        replay = request(server.base, "POST", path, {"content": "survive this"}, token, headers)
        assert replay[0] == 201 and replay[2] == body and replay[1]["Idempotent-Replayed"] == "true"
        report("worker SIGKILLed during a model call", respawned_after_s=round(respawned_after, 2),
               key_free_after_s=round(time.monotonic() - killed, 1))
    finally:
        code, output = server.interrupt()
    assert code == 0, output
    with owned_pg.connect() as conn:
        roles = [row[0] for row in conn.execute(
            "SELECT role FROM messages WHERE chat_id = %s ORDER BY seq", [chat_id])]
    assert roles == ["user", "assistant"]
