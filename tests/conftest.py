"""Fixtures: a real PostgreSQL (MEMLAYER_TEST_DATABASE_URL or the embedded one), a fresh database per run, an app per test."""

import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql as pgsql

from fake_provider import FakeProvider
from memlayer.app import create_app
from memlayer.assistant.catalog import seed_models
from memlayer.assistant.responders import OFFLINE, OPENAI, RESPONDERS_KEY, TextResponder
from memlayer.storage.db import get_pool, native, sql
from memlayer.storage.embedded import embedded_server
from memlayer.storage.migrate import apply_migrations

# Cheap scrypt parameters keep the suite fast; production uses the configured method.
FAST_PASSWORD_HASH = "scrypt:1024:8:1"
OPERATOR_TOKEN = "test-operator-token"  # what apps and servers under test take for MEMLAYER_METRICS_TOKEN
TABLES = ("chat_imports", "memory_jobs", "memory_usage", "idempotency_keys", "revoked_tokens", "monthly_usage", "memory_events", "memories", "messages", "chats", "models", "users")


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(server_url: str, prefix: str) -> str:
    """Create a uniquely named database on the server and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    """Drop the database `url` names, disconnecting whoever still uses it."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> str:
    """An administrative URL of the PostgreSQL server the suite uses."""
    url = os.environ.get("MEMLAYER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = embedded_server(str(tmp_path_factory.mktemp("embedded")))
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_url: str):
    """A database created for this run, migrated, and dropped at the end."""
    url = create_database(server_url, "memlayer_test")
    apply_migrations(url)
    yield url
    drop_database(server_url, url)


def through_pooler(url: str) -> str:
    """The URL apps under test use: via the PgBouncer at MEMLAYER_TEST_POOLER (host:port) when set, else url.

    Only the apps go through the pooler; fixtures that create, truncate and inspect the database connect directly.
    """
    pooler = os.environ.get("MEMLAYER_TEST_POOLER")
    if not pooler:
        return url
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{pooler}" if user else pooler))


@pytest.fixture
def app_factory(database_url):
    """Build apps on the test database; every pool is closed after the test."""
    apps = []

    def build(**overrides):
        settings = {
            "TESTING": True,
            "DATABASE_URL": through_pooler(database_url),
            "PASSWORD_HASH_METHOD": FAST_PASSWORD_HASH,
            "POOL_MIN_SIZE": 1,
            "POOL_MAX_SIZE": 8,
            # The suite registers many users from one address; the rate-limit tests turn limits on.
            "RATELIMIT_ENABLED": False,
            "METRICS_TOKEN": OPERATOR_TOKEN,
            **overrides,
        }
        app = create_app(settings)
        apps.append(app)
        return app

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + " CASCADE")
        seed_models(conn, {})
    yield build
    for app in apps:
        get_pool(app).close()


@pytest.fixture
def app(app_factory):
    """The app under test."""
    return app_factory()


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def db(database_url):
    """A direct autocommit connection for checking what was (not) written."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def count_rows(conn, table: str) -> int:
    """How many rows a table holds."""
    return conn.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))).fetchone()[0]


def explain_generic(database_url: str, query, params: dict, *, analyze: bool = False) -> str:
    """EXPLAIN (optionally ANALYZE) of a query's generic plan, the one its prepared statement settles on."""
    names: list[str] = []

    def placeholder(match):
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    statement = re.sub(r"%\((\w+)\)s", placeholder, query.sql)
    options = "ANALYZE, COSTS OFF, TIMING OFF" if analyze else "COSTS ON"
    with psycopg.connect(database_url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE planned AS {statement}")
        arguments = ", ".join(["%s"] * len(names))
        rows = conn.execute(f"EXPLAIN ({options}) EXECUTE planned({arguments})", [params[name] for name in names])
        return "\n".join(row[0] for row in rows.fetchall())


@pytest.fixture
def statements(monkeypatch):
    """Records what the app runs from here on: each SQL statement by its "<file>.<query name>", "BEGIN" for a transaction."""
    names, executed = {}, []
    for resource, queries in vars(sql).items():
        for name in queries.available_queries:
            names.setdefault(getattr(queries, name).sql, f"{resource}.{name}")
            names.setdefault(native(getattr(queries, name)).sql, f"{resource}.{name}")  # run by a RawCursor
    real_execute, real_transaction = psycopg.Cursor.execute, psycopg.Connection.transaction

    def execute(self, query, *args, **kwargs):
        if query:  # the pool's probe of an idle connection is an empty query
            executed.append(names.get(query, query) if isinstance(query, str) else query)
        return real_execute(self, query, *args, **kwargs)

    def transaction(self, *args, **kwargs):
        executed.append("BEGIN")
        return real_transaction(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    monkeypatch.setattr(psycopg.Connection, "transaction", transaction)
    yield executed
    monkeypatch.undo()


def register(client, email: str | None = None, password: str = "correct horse battery") -> dict:
    """Register a user and return its token response."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.get_json()
    return {"email": email, "password": password, **response.get_json()}


def bearer(token: str) -> dict:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def new_user(client) -> dict:
    """Register a user: email, password, tokens and ready-made headers."""
    tokens = register(client)
    return {**tokens, "headers": bearer(tokens["access_token"])}


@pytest.fixture
def user(client) -> dict:
    """A registered user: email, password, tokens and ready-made headers."""
    return new_user(client)


@pytest.fixture
def chat(client, user) -> dict:
    """A chat of `user`."""
    response = client.post("/chats", json={"title": "Test chat"}, headers=user["headers"])
    assert response.status_code == 201
    return response.get_json()


def settled_stats(pool, timeout: float = 3.0) -> dict:
    """The pool's statistics once every connection is idle in it (or after `timeout`, for the assert to fail).

    A connection the pool is still opening in the background (it grows when requests had to wait) counts
    in pool_size before it is available; a leaked one never becomes available.
    """
    deadline = time.monotonic() + timeout
    stats = pool.get_stats()
    while stats["pool_available"] != stats["pool_size"] and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = pool.get_stats()
    return stats


def run_together(count, action):
    """Run action(i) on `count` threads released at the same instant; return the results in order."""
    barrier = threading.Barrier(count)

    def start(i):
        barrier.wait()
        return action(i)

    with ThreadPoolExecutor(max_workers=count) as executor:
        return list(executor.map(start, range(count)))


class RecordingResponder(TextResponder):
    """A responder that remembers every input it was given and answers a fixed text."""

    def __init__(self, text: str = "noted"):
        self.text = text
        self.inputs: list[list[dict]] = []

    def answer(self, model: str, messages: list[dict]) -> str:
        """Record the messages and answer."""
        self.inputs.append(messages)
        return self.text


def install_responder(app, responder, provider: str = OFFLINE):
    """Make `responder` answer for `provider` in `app`; return it."""
    app.extensions[RESPONDERS_KEY][provider] = responder
    return responder


def send(client, user: dict, chat_id: str, content: str) -> dict:
    """Send a message and return the stored reply."""
    response = client.post(f"/chats/{chat_id}/messages", json={"content": content}, headers=user["headers"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def new_chat(client, user: dict, title: str = "Another chat") -> dict:
    """Open one more chat for `user`."""
    response = client.post("/chats", json={"title": title}, headers=user["headers"])
    assert response.status_code == 201
    return response.get_json()


def search(client, user: dict, q: str, **params) -> list[dict]:
    """GET /memories/search and return the items (asserting a 200)."""
    response = client.get("/memories/search", query_string={"q": q, **params}, headers=user["headers"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


LLM_MODEL = "fake-model"
LLM_API_KEY = "sk-test-KEY-that-must-never-leak"


@pytest.fixture
def provider():
    """A local fake Chat Completions server."""
    fake = FakeProvider().start()
    yield fake
    fake.stop()


@pytest.fixture
def llm_app(app_factory, provider, database_url):
    """An app whose default model is answered by the fake provider (1 s timeout); retry pauses are recorded, not slept."""
    app = app_factory(LLM_BASE_URL=provider.url, LLM_MODEL=LLM_MODEL, LLM_API_KEY=LLM_API_KEY, LLM_TIMEOUT=1.0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed_models(conn, app.config)
    responder = app.extensions[RESPONDERS_KEY][OPENAI]
    responder.waits = []
    responder.sleep = responder.waits.append
    return app


@pytest.fixture
def llm_client(llm_app):
    """A test client of llm_app."""
    return llm_app.test_client()
