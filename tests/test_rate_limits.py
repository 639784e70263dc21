"""Brute-force limits on login and register: per client address, per account, shared through Redis."""

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest
from werkzeug import security

from conftest import register
from memlayer.config import ConfigError


def _limited_client(app_factory, **limits):
    settings = {"RATELIMIT_ENABLED": True, "RATELIMIT_LOGIN_PER_ADDRESS": "100 per minute",
                "RATELIMIT_LOGIN_PER_ACCOUNT": "100 per minute", "RATELIMIT_REGISTER_PER_ADDRESS": "100 per minute",
                "RATELIMIT_REGISTER_PER_ACCOUNT": "100 per minute", **limits}
    return app_factory(**settings).test_client()


def _login(client, email, password="wrong password", address="10.0.0.1", **kwargs):
    return client.post("/auth/login", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address}, **kwargs)


def assert_refused(response):
    """A 429 JSON answer with a Retry-After within the limit's window."""
    assert response.status_code == 429, response.get_json()
    assert response.get_json() == {"detail": "Too many attempts, please wait before trying again"}
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_logins_from_one_address_are_limited(app_factory):
    client = _limited_client(app_factory, RATELIMIT_LOGIN_PER_ADDRESS="3 per minute")
    statuses = [_login(client, f"victim{i}@example.com").status_code for i in range(3)]
    assert statuses == [401, 401, 401]
    assert_refused(_login(client, "victim9@example.com"))
    # Another address still has its allowance.
    assert _login(client, "victim9@example.com", address="10.0.0.2").status_code == 401


def test_failed_logins_to_one_account_are_limited_from_any_address(app_factory):
    client = _limited_client(app_factory, RATELIMIT_LOGIN_PER_ACCOUNT="2 per minute")
    victim = register(client)
    assert _login(client, victim["email"], address="10.0.0.1").status_code == 401
    assert _login(client, victim["email"].upper(), address="10.0.0.2").status_code == 401
    # Even the right password waits now: the account is under attack from a botnet.
    assert_refused(_login(client, victim["email"], victim["password"], address="10.0.0.3"))
    bystander = register(client)
    assert _login(client, bystander["email"], bystander["password"], address="10.0.0.3").status_code == 200


def test_successful_logins_do_not_use_up_the_accounts_allowance(app_factory):
    client = _limited_client(app_factory, RATELIMIT_LOGIN_PER_ACCOUNT="2 per minute")
    owner = register(client)
    statuses = [_login(client, owner["email"], owner["password"]).status_code for _ in range(5)]
    assert statuses == [200] * 5


def test_registrations_are_limited_per_address_and_per_account(app_factory, db):
    client = _limited_client(app_factory, RATELIMIT_REGISTER_PER_ADDRESS="2 per minute",
                             RATELIMIT_REGISTER_PER_ACCOUNT="1 per minute")
    body = {"email": "taken@example.com", "password": "long enough password"}
    assert client.post("/auth/register", json=body, environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 201
    assert_refused(client.post("/auth/register", json=body, environ_base={"REMOTE_ADDR": "10.0.0.2"}))
    other = {"email": "other@example.com", "password": "long enough password"}
    assert client.post("/auth/register", json=other, environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 201
    third = {"email": "third@example.com", "password": "long enough password"}
    assert_refused(client.post("/auth/register", json=third, environ_base={"REMOTE_ADDR": "10.0.0.1"}))
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 2


def test_forwarded_for_counts_only_behind_a_trusted_proxy(app_factory):
    direct = _limited_client(app_factory, RATELIMIT_LOGIN_PER_ADDRESS="1 per minute")
    assert _login(direct, "a@example.com", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 401
    # A client cannot buy a fresh allowance by making up a header.
    assert_refused(_login(direct, "a@example.com", headers={"X-Forwarded-For": "2.2.2.2"}))

    proxied = _limited_client(app_factory, RATELIMIT_LOGIN_PER_ADDRESS="1 per minute", PROXY_FIX_X_FOR=1)
    assert _login(proxied, "a@example.com", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 401
    assert _login(proxied, "a@example.com", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 401
    assert_refused(_login(proxied, "a@example.com", headers={"X-Forwarded-For": "2.2.2.2"}))


def test_unknown_email_costs_one_hash_check_like_a_wrong_password(client, user, monkeypatch):
    checked = []
    real_check = security.check_password_hash

    def counting_check(stored_hash, password):
        checked.append(stored_hash.split("$", 1)[0])
        return real_check(stored_hash, password)

    monkeypatch.setattr("memlayer.auth.passwords.check_password_hash", counting_check)
    wrong = _login(client, user["email"])
    unknown = _login(client, "nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401 and wrong.get_json() == unknown.get_json()
    # Both paths ran scrypt once, with the same parameters.
    assert len(checked) == 2 and checked[0] == checked[1]


# CI sets MEMLAYER_TEST_REDIS_URL after making sure Redis runs, so there the test can only pass or fail.
REDIS_URL = os.environ.get("MEMLAYER_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture
def redis_url() -> str:
    """A reachable Redis: required when MEMLAYER_TEST_REDIS_URL is set, else the local one if it runs."""
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 6379), timeout=1).close()
    except OSError:
        if "MEMLAYER_TEST_REDIS_URL" in os.environ:
            pytest.fail(f"MEMLAYER_TEST_REDIS_URL is set but nothing answers at {parts.hostname}:{parts.port}")
        pytest.skip("no Redis at 127.0.0.1:6379 and MEMLAYER_TEST_REDIS_URL unset (.ci/run starts one)")
    return REDIS_URL


def test_workers_share_counts_through_redis(app_factory, redis_url):
    shared = {"RATELIMIT_STORAGE_URI": redis_url, "RATELIMIT_KEY_PREFIX": f"memlayer-test-{uuid.uuid4().hex}",
              "RATELIMIT_LOGIN_PER_ADDRESS": "2 per minute"}
    worker_a = _limited_client(app_factory, **shared)
    worker_b = _limited_client(app_factory, **shared)
    assert _login(worker_a, "x@example.com").status_code == 401
    assert _login(worker_b, "x@example.com").status_code == 401
    assert_refused(_login(worker_a, "x@example.com"))


@pytest.mark.parametrize("setting", ["RATELIMIT_LOGIN_PER_ACCOUNT", "RATELIMIT_REGISTER_PER_ADDRESS"])
def test_unreadable_limits_refuse_to_start(app_factory, setting):
    with pytest.raises(ConfigError, match=setting):
        app_factory(RATELIMIT_ENABLED=True, **{setting: "lots please"})
