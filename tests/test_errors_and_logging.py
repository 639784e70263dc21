"""One JSON error shape, request ids, access lines, secrets kept out of logs, and settings checks."""

import io
import json
import logging

import pytest

from memlayer import config
from memlayer.config import ConfigError
from memlayer.web.logs import JsonFormatter, RequestIdFilter


@pytest.fixture
def log_stream():
    """Everything logged during the test, formatted as the service formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_request_id_is_echoed_or_generated(client):
    sent = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert sent.headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health")
    assert len(generated.headers["X-Request-ID"]) == 32
    for hostile in ("spaces and ] brackets", "x" * 200):
        assert client.get("/health", headers={"X-Request-ID": hostile}).headers["X-Request-ID"] != hostile


def test_access_line_carries_request_id(client, log_stream):
    client.get("/chats", headers={"X-Request-ID": "trace-42"})
    lines = [line for line in log_stream.getvalue().splitlines() if "memlayer.web.logs" in line]
    assert len(lines) == 1
    assert lines[0].startswith("INFO [trace-42] memlayer.web.logs: GET /chats 401 ")
    assert lines[0].endswith("ms")


def test_secrets_and_message_text_never_reach_logs(client, log_stream, monkeypatch):
    from memlayer.storage.db import sql

    password, content = "hunter2-very-secret", "my private diary entry"
    tokens = client.post("/auth/register", json={"email": "quiet@example.com", "password": password}).get_json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    client.post("/auth/login", json={"email": "quiet@example.com", "password": "wrong-" + password})
    chat = client.post("/chats", json={"title": "t"}, headers=headers).get_json()
    client.post(f"/chats/{chat['id']}/messages", json={"content": content}, headers=headers)
    client.post(f"/chats/{chat['id']}/messages", json={"content": content + "\x00"}, headers=headers)
    client.get(f"/chats?cursor={content}", headers=headers)

    def explode(conn, **params):
        raise RuntimeError("storage failed")

    monkeypatch.setattr(sql.messages, "store_exchange", explode)
    failed = client.post(f"/chats/{chat['id']}/messages", json={"content": content}, headers=headers)
    assert failed.status_code == 500

    logged = log_stream.getvalue()
    assert "Traceback" in logged  # the 500 was logged with its traceback ...
    for secret in (password, content, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in logged  # ... and nothing private was
    assert content not in failed.get_data(as_text=True)


def test_json_log_lines(log_stream):
    record = logging.LogRecord("memlayer.test", logging.ERROR, __file__, 1, "hello %s", ("world",), None)
    RequestIdFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello world" and entry["level"] == "ERROR" and entry["request_id"] == "-"


def test_production_refuses_missing_or_default_secret(app_factory):
    with pytest.raises(ConfigError):
        app_factory(ENV="production")
    with pytest.raises(ConfigError):
        app_factory(ENV="production", JWT_SECRET_KEY="short")
    app = app_factory(ENV="production", JWT_SECRET_KEY="x" * 48)
    assert app.config["ENV"] == "production"


def test_cors_only_for_configured_origins(app_factory):
    closed = app_factory().test_client()
    assert "Access-Control-Allow-Origin" not in closed.get("/health", headers={"Origin": "https://evil.example"}).headers

    client = app_factory(CORS_ORIGINS="https://app.example, https://admin.example").test_client()
    allowed = client.options("/chats", headers={
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    })
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    exposed = client.get("/health", headers={"Origin": "https://app.example"}).headers
    assert "Link" in exposed["Access-Control-Expose-Headers"]
    denied = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_body_limit_is_configurable(app_factory):
    client = app_factory(MAX_CONTENT_LENGTH=100).test_client()
    response = client.post("/auth/login", json={"email": "a@example.com", "password": "p" * 200})
    assert response.status_code == 413
    assert response.get_json() == {"detail": "Request body too large"}


def test_environment_settings_use_the_memlayer_prefix(monkeypatch):
    monkeypatch.setenv("MEMLAYER_POOL_MAX_SIZE", "3")
    monkeypatch.setenv("MEMLAYER_CORS_ORIGINS", "https://x.example")
    settings = config.load()
    assert settings["POOL_MAX_SIZE"] == 3
    assert config.cors_origins(settings) == ["https://x.example"]
