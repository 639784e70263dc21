"""Hostile or careless input: always a 4xx JSON detail, never a 500, and nothing written."""

import time

import jwt as pyjwt
import pytest

from conftest import bearer, count_rows

UNTOUCHED = ("users", "chats", "messages")


@pytest.fixture
def snapshot(db):
    def take():
        return {table: count_rows(db, table) for table in UNTOUCHED}

    return take


def assert_json_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"data": "{not json", "content_type": "application/json"}, 400),
        ({"data": "", "content_type": "application/json"}, 400),
        ({"data": "[" * 100_000 + "]" * 100_000, "content_type": "application/json"}, 400),
        ({"data": "email=a@b.c", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"json": []}, 422),
        ({"json": "just a string"}, 422),
        ({"json": {}}, 422),
        ({"json": {"email": "a@example.com"}}, 422),
        ({"json": {"email": 42, "password": "long enough"}}, 422),
        ({"json": {"email": "not-an-email", "password": "long enough"}}, 422),
        ({"json": {"email": "a@example.com", "password": 12345678}}, 422),
        ({"json": {"email": "a@example.com", "password": "short"}}, 422),
        ({"json": {"email": "a@example.com", "password": ""}}, 422),
        ({"json": {"email": "a@example.com", "password": "nul\x00inside!"}}, 422),
        ({"json": {"email": "a@example.com", "password": "long enough", "admin": True}}, 422),
        ({"data": '{"email": "a@example.com", "password": "lone \\ud800 surrogate"}', "content_type": "application/json"}, 422),
        ({"data": '{"email": "a\\ud800@example.com", "password": "long enough"}', "content_type": "application/json"}, 422),
    ],
)
def test_register_rejects_bad_bodies(client, snapshot, kwargs, status):
    before = snapshot()
    assert_json_error(client.post("/auth/register", **kwargs), status)
    assert snapshot() == before


def test_validation_error_names_the_fields(client):
    body = assert_json_error(client.post("/auth/register", json={"email": "nope", "extra": 1}), 422)
    assert "email" in body["detail"] and "password" in body["detail"] and "extra" in body["detail"]
    assert set(body["errors"]) == {"email", "password", "extra"}


@pytest.mark.parametrize(
    "payload",
    [{"title": ""}, {"title": "   "}, {"title": 7}, {"title": None}, {"title": "x" * 201}, {"title": "a\x00b"}, {"colour": "red"}],
)
def test_chat_create_rejects_bad_titles(client, user, snapshot, payload):
    before = snapshot()
    assert_json_error(client.post("/chats", json=payload, headers=user["headers"]), 422)
    assert snapshot() == before


@pytest.mark.parametrize(
    "payload, status",
    [
        ({}, 422),
        ({"content": ""}, 422),
        ({"content": "  \n "}, 422),
        ({"content": None}, 422),
        ({"content": ["a"]}, 422),
        ({"content": "nul \x00 byte"}, 422),
        ({"content": "lone \ud800 surrogate"}, 422),
        ({"content": "x" * 32_001}, 422),
        ({"content": "hi", "role": "assistant"}, 422),
    ],
)
def test_send_rejects_bad_content(client, user, chat, snapshot, payload, status):
    before = snapshot()
    assert_json_error(client.post(f"/chats/{chat['id']}/messages", json=payload, headers=user["headers"]), status)
    assert snapshot() == before


def test_rename_requires_a_title(client, user, chat):
    assert_json_error(client.patch(f"/chats/{chat['id']}", json={}, headers=user["headers"]), 422)
    assert client.get(f"/chats/{chat['id']}", headers=user["headers"]).get_json()["title"] == chat["title"]


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%00"])
def test_malformed_ids_are_404(client, user, bad_id):
    for method in ("get", "patch", "delete"):
        assert_json_error(getattr(client, method)(f"/chats/{bad_id}", json={"title": "t"}, headers=user["headers"]), 404)
    assert_json_error(client.get(f"/chats/{bad_id}/messages", headers=user["headers"]), 404)
    assert_json_error(client.post(f"/chats/{bad_id}/messages", json={"content": "x"}, headers=user["headers"]), 404)


def test_oversized_body_is_413(client, user, chat, snapshot):
    before = snapshot()
    huge = '{"content": "' + "x" * (1024 * 1024) + '"}'
    response = client.post(f"/chats/{chat['id']}/messages", data=huge, content_type="application/json", headers=user["headers"])
    assert_json_error(response, 413)
    assert snapshot() == before


@pytest.mark.parametrize("query", ["limit=0", "limit=-5", "limit=abc", "cursor=%%%", "cursor=bm90IGpzb24", "cursor=WzEsMl0"])
def test_bad_page_parameters_are_422(client, user, chat, query):
    assert_json_error(client.get(f"/chats?{query}", headers=user["headers"]), 422)
    assert_json_error(client.get(f"/chats/{chat['id']}/messages?{query}", headers=user["headers"]), 422)


def test_forged_chat_cursor_with_bad_values_is_422(client, user):
    from memlayer.web.pagination import encode_cursor

    for position in (["yesterday", "not-a-uuid"], [1, 2], ["2026-01-01T00:00:00+00:00", "nope"],
                     ["2026-01-01T00:00:00+00:00", 5], ["2026-01-01T00:00:00+00:00", None], [None, None]):
        assert_json_error(client.get(f"/chats?cursor={encode_cursor(position)}", headers=user["headers"]), 422)
    for position in (["1"], [-1], [True], [2**64]):
        cursor = encode_cursor(position)
        assert_json_error(client.get(f"/chats/00000000-0000-0000-0000-000000000000/messages?cursor={cursor}", headers=user["headers"]), 422)


def _token(app, **claims):
    payload = {"sub": "00000000-0000-0000-0000-000000000000", "type": "access", "jti": "00000000-0000-0000-0000-000000000001",
               "iat": int(time.time()), "nbf": int(time.time()), "exp": int(time.time()) + 60, "fresh": False, **claims}
    return pyjwt.encode(payload, app.config["JWT_SECRET_KEY"], algorithm="HS256")


def test_bad_tokens_are_401(client, app, user, snapshot):
    before = snapshot()
    header, payload, signature = user["access_token"].split(".")
    tampered = ".".join([header, payload, signature[::-1]])
    alg_none = pyjwt.encode({"sub": "x", "type": "access", "jti": "y"}, key=None, algorithm="none")
    expired = _token(app, sub=str(__import__("uuid").uuid4()), exp=int(time.time()) - 10)
    forged = pyjwt.encode({"sub": "x", "type": "access", "jti": "y", "exp": int(time.time()) + 60}, "wrong-secret-" * 4, algorithm="HS256")
    unknown_user = _token(app)
    cases = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {user['access_token']}"},
        "empty": {"Authorization": "Bearer "},
        "garbage": bearer("garbage"),
        "tampered": bearer(tampered),
        "alg none": bearer(alg_none),
        "expired": bearer(expired),
        "forged": bearer(forged),
        "unknown user": bearer(unknown_user),
    }
    for name, headers in cases.items():
        response = client.post("/chats", json={"title": "t"}, headers=headers)
        body = assert_json_error(response, 401)
        assert "WWW-Authenticate" in response.headers, name
        assert "msg" not in body, name
        if name == "expired":  # a frontend showing the detail tells its user what to do
            assert body["detail"] == "Token has expired; log in again or refresh"
    assert snapshot() == before


def test_revoked_token_is_401_and_writes_nothing(client, user, chat, snapshot):
    client.post("/auth/logout", headers=user["headers"])
    before = snapshot()
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=user["headers"])
    assert assert_json_error(response, 401)["detail"] == "Token has been revoked"
    assert snapshot() == before


def test_unknown_route_and_wrong_method_are_json(client, user):
    assert assert_json_error(client.get("/nope"), 404)["detail"] == "Not found"
    response = client.put("/chats", headers=user["headers"])
    assert assert_json_error(response, 405)["detail"] == "Method not allowed"
    assert "GET" in response.headers["Allow"]


def test_unencodable_text_reaching_the_database_is_422(client, user, chat, monkeypatch, snapshot):
    # Validation stops lone surrogates; this proves the safety net behind it answers 422 too.
    from memlayer.web.schemas import MessageCreateSchema

    monkeypatch.setattr(MessageCreateSchema, "load", lambda self, data: {"content": "\ud800"})
    before = snapshot()
    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "x"}, headers=user["headers"])
    assert_json_error(response, 422)
    assert snapshot() == before


def test_a_validation_error_says_why_in_its_detail(client):
    response = client.post("/auth/register", json={"email": "short@example.com", "password": "short"})
    body = assert_json_error(response, 422)
    assert body["detail"] == "Invalid input: password: Length must be between 8 and 1024."
    assert body["errors"] == {"password": ["Length must be between 8 and 1024."]}

    response = client.post("/auth/register", json={"email": "nope", "password": "short", "extra": 1})
    detail = assert_json_error(response, 422)["detail"]
    assert detail.startswith("Invalid input: email: ") and detail.endswith("(also: extra, password)")

    many = {f"key{n:02d}": n for n in range(15)}
    detail = assert_json_error(client.post("/auth/login", json=many), 422)["detail"]
    assert detail.endswith("key09 and 6 more)")  # at most 10 other fields are named


@pytest.mark.parametrize("raw, detail", [
    (b"\xff\xfe{", "Malformed JSON body: the body is not UTF-8 text"),
    (b'{"email": ' + b"1" * 5000 + b"}", "Malformed JSON body: a number has too many digits"),
    (b'{"email": 1', "Malformed JSON body: expecting ',' delimiter at line 1, column 12"),
], ids=["not utf-8", "huge number", "syntax"])
def test_a_body_that_does_not_parse_is_described_in_our_words(client, raw, detail):
    response = client.post("/auth/login", data=raw, headers={"Content-Type": "application/json"})
    assert assert_json_error(response, 400)["detail"] == detail


def test_a_body_of_thousands_of_unknown_keys_is_refused_at_once_and_briefly(client):
    many = {f"k{n}": 0 for n in range(80_000)}  # 0.7 MB, within the body limit
    response = client.post("/auth/login", json=many)
    body = assert_json_error(response, 422)
    assert len(response.get_data()) < 500  # not megabytes naming every key
    assert body["detail"] == "Invalid input: _schema: 80000 fields where at most 2 are known"
