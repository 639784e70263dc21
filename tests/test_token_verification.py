"""A token is verified once per app, and what that saves changes nothing a client can see."""

import time
from datetime import timedelta

import jwt as pyjwt

from conftest import bearer, register


def test_a_token_seen_again_is_not_decoded_again(app, client, monkeypatch):
    headers = bearer(register(client)["access_token"])
    assert client.get("/chats", headers=headers).status_code == 200
    decodes = []
    real_decode = pyjwt.decode
    monkeypatch.setattr(pyjwt, "decode", lambda *args, **kwargs: decodes.append(1) or real_decode(*args, **kwargs))

    for _ in range(3):
        assert client.get("/chats", headers=headers).status_code == 200

    assert decodes == []


def test_a_token_seen_again_has_its_header_read_once(app, client, monkeypatch):
    headers = bearer(register(client)["access_token"])
    assert client.get("/chats", headers=headers).status_code == 200
    reads = []
    real_load = pyjwt.api_jws.PyJWS._load
    monkeypatch.setattr(pyjwt.api_jws.PyJWS, "_load", lambda *args: reads.append(1) or real_load(*args))

    for _ in range(3):
        assert client.get("/chats", headers=headers).status_code == 200

    assert reads == []


def test_a_forged_or_malformed_token_is_refused_with_a_cached_header_beside_it(client):
    token = register(client)["access_token"]
    assert client.get("/chats", headers=bearer(token)).status_code == 200
    head, payload, signature = token.split(".")
    forgeries = (f"{head}.{payload}.{signature[:-2]}AA", f"{head}.{payload}", "not-a-token", f"{head}.e30.{signature}")
    for forged in forgeries:
        response = client.get("/chats", headers=bearer(forged))
        assert (response.status_code, response.get_json()) == (401, {"detail": "Invalid token"}), forged


def test_a_kept_token_still_expires(app_factory):
    app = app_factory(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=2))
    client = app.test_client()
    headers = bearer(register(client)["access_token"])
    assert client.get("/chats", headers=headers).status_code == 200

    time.sleep(2.2)
    response = client.get("/chats", headers=headers)

    assert response.status_code == 401
    assert response.get_json() == {"detail": "Token has expired; log in again or refresh"}


def test_a_token_one_app_verified_is_refused_by_an_app_with_another_secret(app_factory):
    first = app_factory(JWT_SECRET_KEY="a" * 40).test_client()
    second = app_factory(JWT_SECRET_KEY="b" * 40).test_client()
    headers = bearer(register(first)["access_token"])
    assert first.get("/chats", headers=headers).status_code == 200

    assert second.get("/chats", headers=headers).status_code == 401


def test_a_kept_token_is_refused_once_it_is_revoked(client):
    headers = bearer(register(client)["access_token"])
    assert client.get("/chats", headers=headers).status_code == 200

    assert client.post("/auth/logout", headers=headers).status_code == 204

    assert client.get("/chats", headers=headers).status_code == 401
