"""OWASP API Security Top 10 (2023), the items that apply: each promise asserted where it can break.

API1 broken object level authorization: every route that takes an id, with another user's ids.
API2 broken authentication: see also test_bad_input (alg none, tampered, forged, expired, revoked),
     test_flow (rotation, type confusion, fresh-only deletion) and test_rate_limits (brute force).
API3 broken object property level authorization: mass assignment of id, user_id, created_at.
API4 unrestricted resource consumption: body size, text lengths, page size, JSON depth.
API8 security misconfiguration: CORS only for configured origins, no-store and nosniff, no stack traces.
"""

import json

import pytest
from psycopg import sql as pgsql

from conftest import count_rows, new_chat, new_user, send

# A valid body for every writing method of an id route: a foreign id must be a 404, not a validation error.
BODIES = {("POST", "chats"): {"content": "let me in"}, ("PATCH", "chats"): {"title": "mine now"},
          ("PATCH", "memories"): {"content": "mine now"}}
ID_ROUTE_ARGUMENTS = {"chat_id", "memory_id"}


def id_routes(app) -> list[tuple[str, str]]:
    """(method, rule) for every route that names a resource by id."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.arguments & ID_ROUTE_ARGUMENTS:
            routes += [(method, rule.rule) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


def everything(db) -> dict:
    """Every row of the user-data tables, to prove nothing changed."""
    tables = ("chats", "messages", "memories", "memory_events", "idempotency_keys")
    return {table: db.execute(pgsql.SQL("SELECT * FROM {} ORDER BY 1").format(pgsql.Identifier(table))).fetchall()
            for table in tables}


@pytest.fixture
def victim(client):
    """A user with a chat, a message pair and a memory."""
    user = new_user(client)
    user["chat"] = new_chat(client, user, "private plans")
    send(client, user, user["chat"]["id"], "my secret plan")
    memory = client.post("/memories", json={"key": "pin", "content": "pin is 7Q9X"}, headers=user["headers"])
    user["memory"] = memory.get_json()
    return user


def test_every_id_route_is_covered(app):
    routes = id_routes(app)
    # A new id route must be looked at here: it joins the walk below, and may need a body in BODIES.
    assert len(routes) == 9, routes


def test_another_users_ids_are_404_on_every_id_route_and_change_nothing(app, client, victim, db):
    intruder = new_user(client)
    before = everything(db)
    ids = {"chat_id": victim["chat"]["id"], "memory_id": victim["memory"]["id"]}
    for method, rule in id_routes(app):
        path = rule.replace("<uuid:chat_id>", ids["chat_id"]).replace("<uuid:memory_id>", ids["memory_id"])
        body = BODIES.get((method, rule.split("/")[1]))
        response = client.open(path, method=method, json=body, headers=intruder["headers"])
        assert response.status_code == 404, (method, rule, response.get_json())
        assert "secret" not in response.get_data(as_text=True) and "7Q9X" not in response.get_data(as_text=True)
    assert everything(db) == before
    # The owner still reaches all of it.
    assert client.get(f"/chats/{ids['chat_id']}/messages", headers=victim["headers"]).status_code == 200
    assert client.get(f"/memories/{ids['memory_id']}", headers=victim["headers"]).status_code == 200


def test_foreign_and_unknown_ids_answer_alike(app, client, victim):
    intruder = new_user(client)
    foreign = client.get(f"/memories/{victim['memory']['id']}", headers=intruder["headers"])
    unknown = client.get("/memories/00000000-0000-4000-8000-000000000000", headers=intruder["headers"])
    assert foreign.status_code == unknown.status_code == 404 and foreign.get_json() == unknown.get_json()


def test_lists_and_searches_never_show_another_users_data(client, victim):
    intruder = new_user(client)
    new_chat(client, intruder, "mine")
    for path in ("/chats", "/memories", "/memories/search?q=secret+plan+pin", "/usage"):
        body = client.get(path, headers=intruder["headers"]).get_data(as_text=True)
        assert victim["chat"]["id"] not in body and "secret" not in body and "7Q9X" not in body, path


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/auth/register", {"email": "new@example.com", "password": "long enough pw", "id": "x"}),
    ("POST", "/chats", {"title": "t", "user_id": "00000000-0000-4000-8000-000000000000"}),
    ("POST", "/chats", {"title": "t", "id": "00000000-0000-4000-8000-000000000000"}),
    ("POST", "/chats", {"title": "t", "created_at": "2000-01-01T00:00:00Z"}),
    ("PATCH", "/chats/{chat}", {"title": "t", "user_id": "00000000-0000-4000-8000-000000000000"}),
    ("PATCH", "/chats/{chat}", {"title": "t", "deleted_at": None}),
    ("POST", "/chats/{chat}/messages", {"content": "hi", "role": "assistant"}),
    ("POST", "/chats/{chat}/messages", {"content": "hi", "user_id": "00000000-0000-4000-8000-000000000000"}),
    ("POST", "/memories", {"content": "x", "user_id": "00000000-0000-4000-8000-000000000000"}),
    ("PATCH", "/memories/{memory}", {"content": "x", "id": "00000000-0000-4000-8000-000000000000"}),
])
def test_mass_assignment_of_server_owned_fields_is_422_and_writes_nothing(client, victim, db, method, path, body):
    path = path.format(chat=victim["chat"]["id"], memory=victim["memory"]["id"])
    before, users = everything(db), count_rows(db, "users")
    response = client.open(path, method=method, json=body, headers=victim["headers"])
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["detail"].startswith("Invalid input:")
    assert everything(db) == before and count_rows(db, "users") == users


def test_resource_limits_are_4xx_json_and_write_nothing(app, client, victim, db):
    chat_url = f"/chats/{victim['chat']['id']}/messages"
    before = everything(db)
    too_large = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    cases = [
        (client.post(chat_url, data=json.dumps({"content": too_large}), content_type="application/json",
                     headers=victim["headers"]), 413),
        (client.post(chat_url, json={"content": "x" * 32_001}, headers=victim["headers"]), 422),
        (client.post("/chats", json={"title": "t" * 201}, headers=victim["headers"]), 422),
        (client.post("/memories", json={"content": "m" * 4_001}, headers=victim["headers"]), 422),
        (client.get("/memories/search", query_string={"q": "q" * 1_001}, headers=victim["headers"]), 422),
    ]
    for response, status in cases:
        assert response.status_code == status and isinstance(response.get_json()["detail"], str)
    assert everything(db) == before


def test_json_nested_deeper_than_the_limit_is_400(app, client, victim, db):
    limit = app.config["MAX_JSON_DEPTH"]
    at_limit = {"content": "ok", "x": json.loads("[" * (limit - 1) + "]" * (limit - 1))}
    too_deep = "[" * (limit + 1) + "]" * (limit + 1)
    response = client.post("/chats", data=json.dumps({"title": json.loads(too_deep)}),
                           content_type="application/json", headers=victim["headers"])
    assert response.status_code == 400 and "nested too deeply" in response.get_json()["detail"]
    # At the limit the JSON parses; the schema then refuses the unknown field.
    fine = client.post(f"/chats/{victim['chat']['id']}/messages", json=at_limit, headers=victim["headers"])
    assert fine.status_code == 422
    huge = "[" * 100_000 + "]" * 100_000
    response = client.post("/chats", data=huge, content_type="application/json", headers=victim["headers"])
    assert response.status_code == 400
    assert count_rows(db, "chats") == 1


def test_page_size_is_clamped(client, victim):
    for n in range(3):
        new_chat(client, victim, f"chat {n}")
    response = client.get("/chats", query_string={"limit": 10**9}, headers=victim["headers"])
    assert response.status_code == 200 and len(response.get_json()) == 4
    found = client.get("/memories/search", query_string={"q": "pin", "limit": 10**6}, headers=victim["headers"])
    assert found.status_code == 200


def test_cors_answers_only_configured_origins(app_factory):
    closed = app_factory().test_client()
    assert "Access-Control-Allow-Origin" not in closed.get("/health", headers={"Origin": "https://evil.example"}).headers
    opened = app_factory(CORS_ORIGINS="https://app.example").test_client()
    assert opened.get("/health", headers={"Origin": "https://app.example"}).headers["Access-Control-Allow-Origin"] \
        == "https://app.example"
    assert "Access-Control-Allow-Origin" not in opened.get("/health", headers={"Origin": "https://evil.example"}).headers


def test_an_internal_error_reveals_nothing(app, client, victim, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr("memlayer.blueprints.chats.sql.chats.get_chat", explode)
    response = client.get(f"/chats/{victim['chat']['id']}", headers=victim["headers"])
    assert response.status_code == 500
    body = response.get_json()
    assert body["detail"] == "Internal server error" and body["request_id"]
    assert "hunter2" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)
