"""All-or-nothing writes and connections that always go back to the pool."""

import psycopg
import pytest

from conftest import OPERATOR_TOKEN, count_rows, send, settled_stats
from memlayer.storage.db import get_pool, sql, transaction


def fail_after_storing(monkeypatch):
    """Make a send fail after its store statement ran, inside the transaction, before the commit."""
    real_store = sql.messages.store_exchange
    seen_in_transaction = []

    def store_then_fail(conn, **params):
        stored = real_store(conn, **params)
        # The pair really is written, as the transaction itself sees it ...
        seen_in_transaction.append(conn.execute(
            "SELECT count(*) AS n FROM messages WHERE chat_id = %s", [params["chat_id"]]).fetchone()["n"])
        assert stored["charged"]
        raise RuntimeError("injected failure after the writes, before the commit")

    monkeypatch.setattr(sql.messages, "store_exchange", store_then_fail)
    return seen_in_transaction


def test_failure_before_commit_leaves_no_row(client, user, chat, db, monkeypatch):
    # With an Idempotency-Key the answer is recorded beside the pair, so the store is a transaction of its own.
    seen_in_transaction = fail_after_storing(monkeypatch)
    before = db.execute("SELECT updated_at FROM chats").fetchone()[0]

    response = client.post(f"/chats/{chat['id']}/messages", json={"content": "remember this"},
                           headers={**user["headers"], "Idempotency-Key": "send-1"})

    assert seen_in_transaction == [2]
    assert response.status_code == 500
    body = response.get_json()
    assert body["detail"] == "Internal server error"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "injected" not in response.get_data(as_text=True)
    # ... and none of it survives: no message, no charge, the chat not touched.
    assert count_rows(db, "messages") == 0
    assert count_rows(db, "monthly_usage") == 0
    assert db.execute("SELECT updated_at FROM chats").fetchone()[0] == before


def test_a_lone_store_statement_is_all_or_nothing_without_begin(client, user, chat, db, statements):
    # A send without an Idempotency-Key or a vector stores with one statement in autocommit (no BEGIN):
    # a real PostgreSQL error raised while inserting the assistant's row, after the user's, undoes it all.
    db.execute("""
        CREATE FUNCTION fail_assistant_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected by test'; END $$;
        CREATE TRIGGER fail_assistant_insert BEFORE INSERT ON messages
        FOR EACH ROW WHEN (NEW.role = 'assistant') EXECUTE FUNCTION fail_assistant_insert();
    """)
    try:
        response = client.post(f"/chats/{chat['id']}/messages", json={"content": "hello"}, headers=user["headers"])
        assert "BEGIN" not in statements and statements[-1] == "messages.store_exchange"
        assert response.status_code == 500
        assert response.get_json()["detail"] == "Internal server error"
        assert "injected" not in response.get_data(as_text=True)
        assert count_rows(db, "messages") == 0
        assert count_rows(db, "monthly_usage") == 0
    finally:
        db.execute("DROP TRIGGER fail_assistant_insert ON messages; DROP FUNCTION fail_assistant_insert()")
    # The pool's connection survived the error and serves the next send.
    ok = client.post(f"/chats/{chat['id']}/messages", json={"content": "hello"}, headers=user["headers"])
    assert ok.status_code == 201
    assert count_rows(db, "messages") == 2


def test_transaction_helper_rolls_back_and_returns_the_connection(app, db):
    pool = get_pool(app)
    with pytest.raises(RuntimeError):
        with transaction(pool) as conn:
            conn.execute("INSERT INTO users (email, password_hash) VALUES ('x@example.com', 'h')")
            raise RuntimeError("boom")
    assert count_rows(db, "users") == 0
    with transaction(pool) as conn:
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    stats = settled_stats(pool)
    assert stats["pool_available"] == stats["pool_size"]


def test_pooled_connections_are_autocommit_with_timeouts(app):
    with get_pool(app).connection() as conn:
        assert conn.autocommit is True
        assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == "10s"
        assert conn.execute("SHOW lock_timeout").fetchone()["lock_timeout"] == "3s"
        with conn.transaction():
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_no_connection_leaks_after_failing_and_succeeding_requests(client, user, chat, app, monkeypatch):
    headers = user["headers"]
    for _ in range(3):
        assert client.post(f"/chats/{chat['id']}/messages", json={"content": "ok"}, headers=headers).status_code == 201
        assert client.get(f"/chats/{chat['id']}/messages", headers=headers).status_code == 200
        assert client.get("/chats/00000000-0000-0000-0000-000000000000", headers=headers).status_code == 404
        assert client.post("/chats", data="{broken", headers={**headers, "Content-Type": "application/json"}).status_code == 400
        assert client.post("/auth/register", json={"email": user["email"], "password": "x" * 12}).status_code == 409
    with monkeypatch.context() as patch:
        fail_after_storing(patch)
        assert client.post(f"/chats/{chat['id']}/messages", json={"content": "x"}, headers=headers).status_code == 500
    with monkeypatch.context() as patch:
        patch.setattr(sql.memories, "recall", lambda *a, **k: (_ for _ in ()).throw(ValueError("read failed")))
        assert client.post(f"/chats/{chat['id']}/messages", json={"content": "x"}, headers=headers).status_code == 500

    assert client.get("/health/db-pool", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 200
    stats = settled_stats(get_pool(app))
    assert stats["pool_size"] >= 1
    assert stats["pool_available"] == stats["pool_size"]
    assert stats.get("requests_waiting", 0) == 0
    assert get_pool(app).get_stats()["requests_num"] >= 30


def test_pages_and_searches_read_in_autocommit_one_statement_after_the_token_check(client, user, chat, statements):
    """At READ COMMITTED a transaction around reads adds BEGIN and COMMIT round trips and no consistency."""
    send(client, user, chat["id"], "a trip to lisbon")
    for path in ("/chats?limit=20", f"/chats/{chat['id']}/messages?limit=50", "/memories?limit=20",
                 "/memories/search?q=lisbon"):
        statements.clear()
        assert client.get(path, headers=user["headers"]).status_code == 200
        assert len(statements) == 2 and "BEGIN" not in statements, (path, statements)
        assert statements[0] == "tokens.token_is_usable", (path, statements)
