"""Instructions per request, counted by valgrind: a measure of a request's Python that the VM's noise does not move.

Each tree (this checkout, or a commit's git worktree) builds its app in-process on its own fresh database and
serves N requests straight through the WSGI callable (no gunicorn, no HTTP, no kernel), under
`valgrind --tool=callgrind`; run with N1 and with N2 requests, the difference divided by N2 - N1 is what one
request costs in user-space instructions, start-up and warm-up cancelled out. Two runs agree within 0.1%.

Usage: python bench/instructions.py [--tree PATH ...] [--kind send|page|chats ...]
(installs Debian's valgrind when it is missing)
"""

import argparse
import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from psycopg import sql as pgsql

ROOT = Path(__file__).resolve().parents[1]
SERVER = os.environ.get("MEMLAYER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUNS = (60, 260)


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


def prepare_database(tree: Path) -> str:
    """A fresh database migrated and seeded by the tree's own code; its URL."""
    name = f"bench_instructions_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = SERVER.rsplit("/", 1)[0] + "/" + name
    setup = ("import psycopg\n"
             "try:\n from memlayer.storage.migrate import apply_migrations\n"
             " from memlayer.assistant.catalog import seed_models\n"
             "except ImportError:\n from memlayer.migrate import apply_migrations\n"
             " from memlayer.catalog import seed_models\n"
             f"apply_migrations({url!r})\n"
             f"with psycopg.connect({url!r}, autocommit=True) as c: seed_models(c, {{}})\n")
    subprocess.run([sys.executable, "-S", "-c", setup], env=tree_environment(tree), check=True, capture_output=True)
    return url


def tree_environment(tree: Path) -> dict:
    """Run Python on the tree's code: -S skips this venv's editable install, the venv's packages come by path."""
    packages = next(p for p in sys.path if p.endswith("site-packages"))
    return {**os.environ, "PYTHONPATH": f"{tree}:{packages}", "PYTHONHASHSEED": "0", "MEMLAYER_LOG_LEVEL": "WARNING"}


def instructions(tree: Path, kind: str, requests: int, url: str) -> int:
    """User-space instructions of a whole driver run of `requests` requests."""
    # Imported here, not at the top: the driver (this file with --drive) runs on old trees' memlayer too.
    from harness import ensure_program

    command = [ensure_program("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, "-S", __file__, "--drive", kind, str(requests), url]
    done = subprocess.run(command, env=tree_environment(tree), capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"driver failed on {tree} ({kind}):\n{done.stderr[-3000:]}")
    return int(found.group(1))


def per_request(tree: Path, kind: str) -> int:
    """Instructions one request of `kind` costs on the tree's code."""
    url = prepare_database(tree)
    try:
        low, high = (instructions(tree, kind, n, url) for n in RUNS)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                pgsql.Identifier(url.rsplit("/", 1)[1])))
    return (high - low) // (RUNS[1] - RUNS[0])


def main() -> None:
    """Print instructions per request for each tree and kind, and each tree's ratio to the first."""
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", nargs="+", type=Path, default=[ROOT], help="checkouts to measure, first is the base")
    parser.add_argument("--kind", nargs="+", default=["send", "page", "chats"], choices=["send", "page", "chats"])
    arguments = parser.parse_args()
    for kind in arguments.kind:
        counts = [per_request(tree.resolve(), kind) for tree in arguments.tree]
        cells = ", ".join(f"{tree}: {count:,} ({count / counts[0]:.2f}×)"
                          for tree, count in zip(arguments.tree, counts))
        print(f"{kind}: {cells}", flush=True)


if __name__ == "__main__":
    main()
