"""Transient database failures: bounded, jittered retries of the whole transaction, then 503; no leaks, no half writes."""

import threading

import psycopg
import pytest
from psycopg import errors as pgerrors

from conftest import count_rows, settled_stats
from memlayer.storage import db as memlayer_db
from memlayer.storage.db import get_pool, retrying

RETRYABLE = ["40001", "40P01", "55P03", "57014"]


def raise_sqlstate(conn, sqlstate: str) -> None:
    """Make PostgreSQL itself fail the current transaction with `sqlstate`."""
    conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$")


def fail_inside_create_chat(monkeypatch, sqlstates: list[str]) -> list[str]:
    """Let the chat insert happen, then fail its transaction with the next sqlstate in the list (once each)."""
    real_create = memlayer_db.sql.chats.create_chat
    seen = []

    def create_then_fail(conn, **kwargs):
        row = real_create(conn, **kwargs)
        if len(seen) < len(sqlstates):
            seen.append(sqlstates[len(seen)])
            raise_sqlstate(conn, seen[-1])
        return row

    monkeypatch.setattr(memlayer_db.sql.chats, "create_chat", create_then_fail)
    return seen


@pytest.mark.parametrize("sqlstate", RETRYABLE)
def test_a_transient_failure_is_retried_and_the_write_happens_once(client, user, db, monkeypatch, sqlstate):
    seen = fail_inside_create_chat(monkeypatch, [sqlstate])
    response = client.post("/chats", json={"title": "retried"}, headers=user["headers"])
    assert response.status_code == 201, response.get_json()
    assert seen == [sqlstate]
    assert count_rows(db, "chats") == 1


@pytest.mark.parametrize("sqlstate", RETRYABLE)
def test_retries_are_bounded_then_503_and_nothing_is_written(app, client, user, db, monkeypatch, sqlstate):
    seen = fail_inside_create_chat(monkeypatch, [sqlstate] * 10)
    response = client.post("/chats", json={"title": "doomed"}, headers=user["headers"])
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json() == {"detail": "Database unavailable, please retry"}
    assert len(seen) == app.config["DB_RETRY_ATTEMPTS"] == 3
    assert count_rows(db, "chats") == 0
    # Every connection is back and healthy: the next request works.
    stats = settled_stats(get_pool(app))
    assert stats["pool_available"] == stats["pool_size"]
    monkeypatch.undo()
    assert client.post("/chats", json={"title": "fine"}, headers=user["headers"]).status_code == 201


def test_other_errors_are_not_retried(client, user, db, monkeypatch):
    seen = fail_inside_create_chat(monkeypatch, ["23514"] * 3)  # check_violation: retrying cannot help
    assert client.post("/chats", json={"title": "x"}, headers=user["headers"]).status_code == 500
    assert len(seen) == 1 and count_rows(db, "chats") == 0


def test_a_real_row_lock_times_out_into_503_and_writes_nothing(app_factory, user, chat, database_url, db):
    app = app_factory(LOCK_TIMEOUT_MS=100)
    url = f"/chats/{chat['id']}/messages"
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT id FROM chats WHERE id = %s FOR UPDATE", [chat["id"]])
        response = app.test_client().post(url, json={"content": "blocked"}, headers=user["headers"])
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert count_rows(db, "messages") == 0
        holder.rollback()
    assert app.test_client().post(url, json={"content": "free"}, headers=user["headers"]).status_code == 201
    assert count_rows(db, "messages") == 2


def test_a_lock_released_during_the_retries_lets_the_send_through(app_factory, user, chat, database_url, db):
    app = app_factory(LOCK_TIMEOUT_MS=300)
    holder = psycopg.connect(database_url)
    holder.execute("SELECT id FROM chats WHERE id = %s FOR UPDATE", [chat["id"]])
    timer = threading.Timer(0.4, holder.rollback)  # after the first attempt's lock_timeout
    timer.start()
    try:
        response = app.test_client().post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=user["headers"])
    finally:
        timer.join()
        holder.close()
    assert response.status_code == 201
    assert count_rows(db, "messages") == 2


def test_an_exhausted_pool_answers_503_with_retry_after(app_factory, user):
    app = app_factory(POOL_MIN_SIZE=1, POOL_MAX_SIZE=1, POOL_TIMEOUT=0.3)
    pool = get_pool(app)
    with pool.connection():
        response = app.test_client().get("/chats", headers=user["headers"])
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json() == {"detail": "Database unavailable or busy, please retry"}
    assert app.test_client().get("/chats", headers=user["headers"]).status_code == 200
    stats = settled_stats(pool)
    assert stats["pool_available"] == stats["pool_size"] == 1


def test_the_shared_retrying_keeps_each_threads_and_each_loops_attempts_apart(app):
    with app.app_context():
        assert retrying() is retrying()  # one per app: making one per transaction cost 12% of a worker's CPU
    both_inside = threading.Barrier(2, timeout=10)
    attempts: dict = {}

    def fail_every_time(name):
        with app.app_context():
            attempts[name] = 0
            try:
                for attempt in retrying():
                    with attempt:
                        attempts[name] += 1
                        both_inside.wait()  # the two loops are inside an attempt at the same moment
                        raise pgerrors.SerializationFailure("injected")
            except pgerrors.SerializationFailure:
                pass

    threads = [threading.Thread(target=fail_every_time, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert attempts == {"a": 3, "b": 3}

    with app.app_context():
        outer_runs, inner_runs = 0, 0
        for outer in retrying():
            with outer:
                outer_runs += 1
                for inner in retrying():
                    with inner:
                        inner_runs += 1
                        if inner_runs < 3:
                            raise pgerrors.DeadlockDetected("injected")
                if outer_runs < 2:
                    raise pgerrors.LockNotAvailable("injected")
    assert (outer_runs, inner_runs) == (2, 4)
