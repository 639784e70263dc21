"""The OpenAPI document, the offline docs page, and the health endpoints."""

import time

import pytest

from conftest import OPERATOR_TOKEN
from memlayer.storage import db as memlayer_db
from memlayer.storage.db import get_pool
from memlayer.web.openapi import DOCUMENTED_ELSEWHERE, OPERATIONS, openapi_path


def test_every_route_is_documented(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - DOCUMENTED_ELSEWHERE == set(OPERATIONS)


def test_openapi_document_comes_from_the_schemas(client, app):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPERATIONS:
            assert openapi_path(rule.rule) in spec["paths"]
    register = spec["paths"]["/auth/register"]["post"]
    body_ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    register_schema = spec["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert register_schema["properties"]["password"]["minLength"] == 8
    assert set(register_schema["required"]) == {"email", "password"}
    send = spec["paths"]["/chats/{chat_id}/messages"]["post"]
    assert send["security"] == [{"bearer": []}]
    assert {"201", "401", "404", "413", "422"} <= set(send["responses"])
    listing = spec["paths"]["/chats"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor"}
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "Link" in listing["responses"]["200"]["headers"]


def test_docs_page_and_assets_are_served_locally(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # nothing fetched from the internet
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs/init.js"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200 and len(response.get_data()) > 100
    assert client.get("/docs/assets/../../etc/passwd").status_code == 404


def test_health_reports_database_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["version"]


def test_pool_statistics_are_for_operators_only(client, app_factory):
    stats = client.get("/health/db-pool", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).get_json()
    for key in ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting"):
        assert key in stats
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": OPERATOR_TOKEN}):
        response = client.get("/health/db-pool", headers=headers)
        assert response.status_code == 401 and "requests_num" not in response.get_data(as_text=True)
    closed = app_factory(METRICS_TOKEN=None).test_client()
    assert closed.get("/health/db-pool", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 404


def _kill_the_pooled_connection(app, db) -> None:
    with get_pool(app).connection() as conn:
        pid = conn.info.backend_pid
    assert db.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]


@pytest.mark.parametrize("idle_seconds, expected", [(0.05, 200), (3600, 503)])
def test_only_idle_connections_are_probed_before_reuse(app_factory, database_url, db, monkeypatch,
                                                        idle_seconds, expected):
    # Direct, not through a pooler: killing the server connection must kill the pooled one.
    app = app_factory(DATABASE_URL=database_url, POOL_MIN_SIZE=1, POOL_MAX_SIZE=1, POOL_TIMEOUT=2)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    monkeypatch.setattr(memlayer_db, "CHECK_IDLE_SECONDS", idle_seconds)
    _kill_the_pooled_connection(app, db)
    time.sleep(0.1)
    # Idle longer than CHECK_IDLE_SECONDS: the probe finds it dead and the pool lends a new one.
    # Returned just now: no probe (no round trip per checkout under load), so this request fails as a 503.
    assert client.get("/health").status_code == expected
    assert client.get("/health").status_code == 200


def test_unreachable_database_is_503_json(app_factory):
    # Nothing listens on port 1: the app still starts, and answers 503 instead of hanging or 500.
    app = app_factory(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", POOL_TIMEOUT=0.5)
    client = app.test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["database"] == "unreachable" and health.headers["Retry-After"]
    register = client.post("/auth/register", json={"email": "a@example.com", "password": "long enough"})
    assert register.status_code == 503
    assert register.get_json() == {"detail": "Database unavailable or busy, please retry"}
    assert register.headers["Retry-After"] == "1"
