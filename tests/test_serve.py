"""`memlayer serve` for real: migrations, gunicorn workers, the README quickstart over HTTP, clean Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import OPERATOR_TOKEN

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base, method, path, body=None, token=None):
    """One HTTP request; returns (status, headers, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


class Server:
    """A `memlayer serve` process on a free port."""

    def __init__(self, env_overrides: dict, workers: int = 2):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLAYER_")}
        # Extraction off unless a test turns it on: its model calls would take the replies a test scripted.
        env.update({"MEMLAYER_BIND": f"127.0.0.1:{self.port}", "MEMLAYER_PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
                    "MEMLAYER_METRICS_TOKEN": OPERATOR_TOKEN, "MEMLAYER_MEMORY_EXTRACTION": "off"})
        env.update(env_overrides)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "memlayer", "serve", "--workers", str(workers)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        # Drain the output as it comes: a full pipe would block every log write, and so the server.
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def output(self) -> str:
        """Everything the server printed so far."""
        return "".join(self.lines)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.reader.join(5)
                raise AssertionError("server exited early:\n" + self.output())
            try:
                status, _, body = call(self.base, "GET", "/health")
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become healthy")

    def interrupt(self, timeout=40, signum=signal.SIGINT) -> tuple[int, str]:
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Leave nothing behind for later tests, and show what the server was doing.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.reader.join(5)
            raise AssertionError(f"server still running {timeout}s after SIGINT:\n{self.output()[-6000:]}") from None
        self.reader.join(5)
        return self.process.returncode, self.output()


def quickstart(base, email):
    status, _, tokens = call(base, "POST", "/auth/register", {"email": email, "password": "correct horse battery"})
    assert status == 201
    status, _, tokens = call(base, "POST", "/auth/login", {"email": email, "password": "correct horse battery"})
    assert status == 200
    token = tokens["access_token"]
    status, _, chat = call(base, "POST", "/chats", {"title": "First chat"}, token)
    assert status == 201
    status, _, reply = call(base, "POST", f"/chats/{chat['id']}/messages", {"content": "Hello, MemLayer!"}, token)
    assert status == 201 and reply["role"] == "assistant"
    status, _, messages = call(base, "GET", f"/chats/{chat['id']}/messages", token=token)
    assert status == 200 and [m["role"] for m in messages] == ["user", "assistant"]
    return token


def test_serve_with_database_url(database_url):
    server = Server({"MEMLAYER_DATABASE_URL": database_url})
    try:
        assert server.wait_ready()["database"] == "ok"
        quickstart(server.base, "served@example.com")
        status, _, stats = call(server.base, "GET", "/health/db-pool", token=OPERATOR_TOKEN)
        assert status == 200 and stats["pool_available"] == stats["pool_size"]
        status, _, error = call(server.base, "GET", "/no/such/route")
        assert status == 404 and error == {"detail": "Not found"}
    finally:
        code, output = server.interrupt()
    assert code == 0, output
    assert "Booting worker" in output and "migrations applied" in output
    assert "served@example.com" not in output and "correct horse battery" not in output


def test_serve_on_embedded_postgres_keeps_data_between_runs(tmp_path):
    env = {"MEMLAYER_DATA_DIR": str(tmp_path / "data")}
    first = Server(env)
    try:
        first.wait_ready()
        quickstart(first.base, "persisted@example.com")
    finally:
        code, output = first.interrupt()
    assert code == 0, output
    pgdata = tmp_path / "data" / "pgdata"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "embedded PostgreSQL still running after Ctrl-C"

    second = Server(env)
    try:
        second.wait_ready()
        status, _, _ = call(second.base, "POST", "/auth/login",
                            {"email": "persisted@example.com", "password": "correct horse battery"})
        assert status == 200
    finally:
        code, output = second.interrupt()
    assert code == 0, output
    assert not (pgdata / "postmaster.pid").exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
@pytest.mark.parametrize("kind", ["keep-alive", "half-closed", "silent"])
def test_stop_does_not_wait_for_idle_connections(database_url, kind, stop):
    """Ctrl-C ends the server within seconds whatever idle sockets browsers leave: answered and kept alive,
    half-closed by the client after its answer (CLOSE-WAIT on our side), or opened ahead and never used."""
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_LLM_TIMEOUT": "60"}, workers=1)
    sockets = []
    try:
        server.wait_ready()
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if kind != "silent":
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            if kind == "half-closed":
                sock.shutdown(socket.SHUT_WR)
            sockets.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
    finally:
        code, output = server.interrupt(timeout=40, signum=stop)
        for sock in sockets:
            sock.close()
    # The graceful timeout (model timeout + 15 s = 75 s) is for requests in flight, not for idle sockets.
    assert time.monotonic() - started < 8, output
    assert code == 0 and "SIGKILL" not in output, output


def test_a_long_cjk_search_fits_the_request_line(database_url):
    server = Server({"MEMLAYER_DATABASE_URL": database_url}, workers=1)
    try:
        server.wait_ready()
        token = quickstart(server.base, "cjk@example.com")
        query = urllib.parse.quote("猫" * 800)  # 7,200 bytes percent-encoded: over gunicorn's default 4,094
        status, _, items = call(server.base, "GET", f"/memories/search?q={query}", token=token)
        assert status == 200 and items == []
    finally:
        server.interrupt()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a new connection and return the status line and headers of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_chunked_bodies_are_bounded_and_broken_chunks_are_400(database_url):
    server = Server({"MEMLAYER_DATABASE_URL": database_url}, workers=1)
    head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    big = b'{"email": "' + b"a" * 1_100_000 + b'"}'  # over the 1 MiB limit
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 65536]), big[i:i + 65536]) for i in range(0, len(big), 65536))
    try:
        server.wait_ready()
        broken = raw_exchange(server.port, head + b"zz\r\n")
        too_big = raw_exchange(server.port, head + chunks + b"0\r\n\r\n")
    finally:
        code, output = server.interrupt()
    assert broken.startswith(b"HTTP/1.1 400") and b"application/json" in broken, broken
    assert too_big.startswith(b"HTTP/1.1 413"), too_big
    assert "Traceback" not in output and "InvalidChunkSize" not in output, output


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", b"431"),
    (b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400"),
], ids=["request line too long", "header too large", "NUL in the path", "negative length"])
def test_errors_gunicorn_answers_itself_are_json_too(database_url, request_bytes, status):
    server = Server({"MEMLAYER_DATABASE_URL": database_url}, workers=1)
    try:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request_bytes)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        server.interrupt()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b"Content-Type: application/json" in head
    detail = json.loads(body)["detail"]
    assert detail and b"aaaa" not in body and b"bbbb" not in body  # the client's bytes are not echoed
