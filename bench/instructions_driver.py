"""The driver of bench/instructions.py, run under valgrind on one tree's code: python -S this KIND N DATABASE_URL.

It imports nothing of bench/ (whose harness needs today's memlayer), so it runs on old trees as well.
"""

import io
import json
import sys
import uuid

import psycopg


def drive(kind: str, requests: int, url: str) -> None:
    """In this process: build the tree's app, make a user, a chat of 120 messages, then serve `requests` requests."""
    try:
        from memlayer.app import create_app
        from memlayer.storage.db import get_pool
    except ImportError:  # trees from before the layout move
        from memlayer import create_app
        from memlayer.db import get_pool
    app = create_app({"DATABASE_URL": url, "PASSWORD_HASH_METHOD": "scrypt:1024:8:1", "RATELIMIT_ENABLED": False})
    token = None

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        raw = b"" if body is None else json.dumps(body).encode()
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path.partition("?")[0],
            "QUERY_STRING": path.partition("?")[2], "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(raw), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0), "HTTP_HOST": "127.0.0.1",
            "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": "application/json" if body is not None else "",
        }
        if token:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        status = []
        answer = b"".join(app.wsgi_app(environ, lambda line, headers, info=None: status.append(line)))
        return int(status[0][:3]), json.loads(answer or b"{}")

    _, tokens = call("POST", "/auth/register", {"email": f"bench-{uuid.uuid4().hex[:8]}@example.com",
                                                  "password": "correct horse battery"})
    token = tokens["access_token"]
    _, chat = call("POST", "/chats", {"title": "bench"})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO messages (user_id, chat_id, role, content)"
                     " SELECT c.user_id, c.id, CASE WHEN g %% 2 = 1 THEN 'user' ELSE 'assistant' END,"
                     "        'message ' || g || ' about my cat Ada and the weather in Lisbon'"
                     " FROM chats c, generate_series(1, 120) g WHERE c.id = %s ORDER BY g", [chat["id"]])
    requests_of = {
        "send": lambda i: ("POST", f"/chats/{chat['id']}/messages", {"content": str(i * 7919 % 100_000_000)}, 201),
        "page": lambda i: ("GET", f"/chats/{chat['id']}/messages?limit=50", None, 200),
        "chats": lambda i: ("GET", "/chats?limit=20", None, 200),
    }
    for i in range(requests):
        method, path, body, expected = requests_of[kind](i)
        status, answer = call(method, path, body)
        assert status == expected, (status, answer)
    get_pool(app).close()


if __name__ == "__main__":
    drive(sys.argv[1], int(sys.argv[2]), sys.argv[3])
