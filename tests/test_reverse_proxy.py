"""docs/nginx.conf, run as written in front of `memlayer serve`: requests buffered whole, replies streamed as they come.

Needs Debian's nginx (CI installs it and sets MEMLAYER_TEST_REQUIRE_NGINX=1, so there it fails instead of skipping).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fake_provider import Reply
from test_serve import Server, call, free_port, quickstart
from test_serve_assistants import read_until

pytestmark = pytest.mark.slow

NGINX_CONF = Path(__file__).resolve().parent.parent / "docs" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
if NGINX is None and os.environ.get("MEMLAYER_TEST_REQUIRE_NGINX") != "1":
    pytest.skip("nginx is not installed (apt-get install nginx)", allow_module_level=True)


class Nginx:
    """nginx with docs/nginx.conf's server block, listening on a free port and proxying to `upstream_port`."""

    def __init__(self, directory: Path, upstream_port: int):
        self.port = free_port()
        site = NGINX_CONF.read_text()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
        (directory / "memlayer.conf").write_text(site)
        temp_paths = "".join(f"{name}_temp_path {directory}/{name};\n"
                             for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # A main configuration as hosts have it, pointed at this directory, compressing JSON and event streams
        # for every site (which would hold a stream back until the compressor's buffer fills); root keeps its
        # own workers.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"{user}worker_processes 1;\ndaemon off;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\naccess_log off;\ngzip on;\ngzip_min_length 0;\ngzip_types application/json text/event-stream;\n"
            f"{temp_paths}include {directory}/memlayer.conf;\n}}\n"
        )
        self.log = directory / "error.log"
        self.process = subprocess.Popen([NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.1)
        raise AssertionError("nginx did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def proxied(database_url, provider, tmp_path):
    """(nginx, memlayer serve) with the fake model, the service's body deadline shortened to 2 s."""
    server = Server({"MEMLAYER_DATABASE_URL": database_url, "MEMLAYER_LLM_BASE_URL": provider.url,
                     "MEMLAYER_LLM_MODEL": "fake-model", "MEMLAYER_PROXY_FIX_X_FOR": "1",
                     "MEMLAYER_BODY_TIMEOUT": "2", "MEMLAYER_RATELIMIT_ENABLED": "false"})
    server.wait_ready()
    nginx = Nginx(tmp_path, server.port)
    yield nginx, server
    nginx.stop()
    code, output = server.interrupt()
    assert code == 0, output


def dripped_login(port: int, seconds: float) -> bytes:
    """A login whose body takes `seconds` to arrive (a byte at a time); returns the response."""
    body = json.dumps({"email": "nobody@example.com", "password": "not the password"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /auth/login HTTP/1.1\r\nHost: memlayer\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        try:
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(seconds / len(body))
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before the body was through: the answer is still there to read
        return read_until(sock, b"}")


def test_the_documented_nginx_buffers_request_bodies_so_a_slow_body_never_reaches_a_worker(proxied):
    nginx, server = proxied
    assert quickstart(nginx.base, "proxied@example.com")
    # Sent straight to MemLayer, a body that takes 3 s runs into the 2 s body deadline: 408.
    assert dripped_login(server.port, 3).startswith(b"HTTP/1.1 408")
    # Through nginx, MemLayer receives it whole and at once: a plain wrong-password 401.
    answer = dripped_login(nginx.port, 3)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"Incorrect email or password" in answer


def test_the_documented_nginx_passes_a_streamed_reply_on_event_by_event(proxied, provider):
    nginx, _ = proxied
    provider.script(Reply(pieces=["Once ", "upon ", "a ", "time."], gap=0.4))
    _, _, tokens = call(nginx.base, "POST", "/auth/register", {"email": "stream-proxied@example.com",
                                                                 "password": "correct horse battery"})
    _, _, chat = call(nginx.base, "POST", "/chats", {}, tokens["access_token"])
    body = json.dumps({"content": "tell me a story"}).encode()
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as sock:
        sock.sendall(f"POST /chats/{chat['id']}/messages HTTP/1.1\r\nHost: memlayer\r\n"
                     f"Authorization: Bearer {tokens['access_token']}\r\nAccept: text/event-stream\r\n"
                     f"Accept-Encoding: gzip\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        first = read_until(sock, b"event: delta")
        first_arrived = time.monotonic()
        rest = read_until(sock, b"event: message")
        finished = time.monotonic()
    assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
    # The first piece came 1.2 s before the last (three gaps of 0.4 s): nginx did not hold the stream back.
    assert finished - first_arrived >= 0.9
    assert re.search(rb'"content": ?"Once upon a time\."', rest)
