"""Recall by meaning: vectors from an OpenAI-compatible embeddings server, stored in pgvector, fused with BM25.

The fake provider's embedding model gives words of one concept near vectors ("cat", "pet", "Ada"), so a
message that shares no word with a question can still be nearest to it. These tests need pgvector (the
embedded PostgreSQL 18 has it, CI's first run); on a server without it they are skipped, and
test_a_server_without_pgvector_refuses_an_embedding_model checks that side instead.
"""

import logging

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from conftest import new_chat, new_user, search, send, settled_stats
from fake_provider import Drop, Embeddings, Hang, Malformed, Status
from memlayer.cli import main
from memlayer.memory.embeddings import Vector, backfill
from memlayer.memory.recall import recall, similar_memories
from memlayer.providers.embeddings import EmbeddingFailed, EmbeddingsClient
from memlayer.storage.db import get_pool

MODEL = "fake-embedder"


def vectors_available(database_url) -> bool:
    """Whether migration 0007 found pgvector on the test server."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT to_regclass('embeddings') IS NOT NULL").fetchone()[0]


@pytest.fixture
def needs_vectors(database_url):
    """Skip where the server has no pgvector (CI's PostgreSQL 15 runs); the embedded PostgreSQL 18 has it."""
    if not vectors_available(database_url):
        pytest.skip("this PostgreSQL has no pgvector; the embedded PostgreSQL 18 run covers recall by meaning")


@pytest.fixture
def embedding_app(needs_vectors, app_factory, provider):
    """An app that embeds with the fake provider (0.5 s timeout); replies still come from the offline responder."""
    return app_factory(EMBEDDING_MODEL=MODEL, EMBEDDING_BASE_URL=provider.url, EMBEDDING_TIMEOUT=0.5)


@pytest.fixture
def eclient(embedding_app):
    """A test client of embedding_app."""
    return embedding_app.test_client()


def vector_count(db, model: str | None = None) -> int:
    """How many vectors are stored (of one model, when given)."""
    if model is None:
        return db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    return db.execute("SELECT count(*) FROM embeddings WHERE model = %s", [model]).fetchone()[0]


def contents(items):
    return [item["content"] for item in items]


def test_a_paraphrase_is_recalled_by_meaning_and_not_without_it(app_factory, provider, needs_vectors, db):
    plain = app_factory().test_client()
    user = new_user(plain)
    send(plain, user, new_chat(plain, user)["id"], "my cat is called Ada")
    assert search(plain, user, "what pet do I have?") == []  # no word in common

    embedding = app_factory(EMBEDDING_MODEL=MODEL, EMBEDDING_BASE_URL=provider.url).test_client()
    other = new_user(embedding)
    chat = new_chat(embedding, other)
    send(embedding, other, chat["id"], "my cat is called Ada")
    send(embedding, other, chat["id"], "the weather was grey all week")

    assert contents(search(embedding, other, "what pet do I have?"))[0] == "my cat is called Ada"
    reply = send(embedding, other, new_chat(embedding, other)["id"], "what pet do I have?")
    assert "my cat is called Ada" in reply["content"]
    assert provider.requests[0]["body"] == {"model": MODEL, "input": ["my cat is called Ada"]}


def test_every_user_message_and_memory_gets_a_vector_of_the_model(eclient, user, chat, db):
    send(eclient, user, chat["id"], "my cat is called Ada")
    memory = eclient.post("/memories", json={"key": "pet", "content": "User's cat is a tabby"}, headers=user["headers"])
    assert memory.status_code == 201
    rows = db.execute("SELECT message_id IS NOT NULL, memory_id IS NOT NULL, model, vector_dims(embedding) "
                      "FROM embeddings ORDER BY message_id NULLS LAST").fetchall()
    assert rows == [(True, False, MODEL, 5), (False, True, MODEL, 5)]  # assistant replies get none


def test_a_messages_vector_commits_with_it_or_neither_does(eclient, user, chat, db, monkeypatch):
    # The vector is a second write: the store runs in a transaction, and a failure storing it undoes the pair.
    from memlayer.storage.db import sql

    def broken(conn, **params):
        raise RuntimeError("injected while storing the vector")

    monkeypatch.setattr(sql.embeddings, "store_message_embedding", broken)
    response = eclient.post(f"/chats/{chat['id']}/messages", json={"content": "my cat is called Ada"},
                            headers=user["headers"])
    assert response.status_code == 500
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM monthly_usage").fetchone()[0] == 0


def test_a_changed_memory_is_recalled_by_its_new_meaning(eclient, user, db):
    memory = eclient.post("/memories", json={"content": "User lives in Lisbon"}, headers=user["headers"]).get_json()
    assert contents(search(eclient, user, "which town is home?")) == ["User lives in Lisbon"]

    eclient.patch(f"/memories/{memory['id']}", json={"content": "User plays the guitar"}, headers=user["headers"])

    # The old vector went with the old words: the memory is now only as near to "town" as anything unrelated.
    assert all(item["score"] < 0.1 for item in search(eclient, user, "which town is home?"))
    assert search(eclient, user, "any instrument?")[0]["score"] > 0.7
    assert vector_count(db) == 1


class Watching:
    """Run `inner` for the provider, after noting how many pooled connections the app had lent out."""

    def __init__(self, pool, inner):
        self.pool, self.inner, self.seen = pool, inner, {}

    def __call__(self, handler, body):
        self.seen.update(settled_stats(self.pool, timeout=0.3))
        self.inner(handler, body)


@pytest.mark.parametrize("failure", [
    Status(500), Status(429, retry_after=1), Hang(2), Drop(),
    Malformed(), Malformed(b'{"data": [{"embedding": ["x", 1]}]}'), Malformed(b'{"data": []}'),
    Embeddings(dimensions=0),
], ids=["500", "429", "slow", "dropped", "not-json", "not-numbers", "no-vector", "no-dimension"])
def test_a_failing_provider_never_fails_a_send_and_embed_fills_in_later(
        embedding_app, eclient, provider, user, chat, db, failure, caplog):
    watching = Watching(get_pool(embedding_app), failure)
    provider.script(watching)
    with caplog.at_level(logging.INFO):
        reply = send(eclient, user, chat["id"], "my cat is called Ada")

    assert reply["role"] == "assistant"
    assert db.execute("SELECT count(*) FROM messages WHERE chat_id = %s", [chat["id"]]).fetchone()[0] == 2
    assert watching.seen["pool_available"] == watching.seen["pool_size"]  # no connection held during the call
    assert vector_count(db) == 0
    assert "embedding skipped" in caplog.text and "Ada" not in caplog.text

    client = EmbeddingsClient(provider.url, model=MODEL)
    try:
        assert backfill(get_pool(embedding_app), client) == {"embedded": 1, "failed": 0}
    finally:
        client.close()
    assert vector_count(db, MODEL) == 1
    assert contents(search(eclient, user, "what pet do I have?")) == ["my cat is called Ada"]


def test_vectors_of_another_dimension_are_passed_over(eclient, provider, user, chat, db):
    provider.script(Embeddings(dimensions=7))
    send(eclient, user, chat["id"], "my cat is called Ada")  # stored as a 7-dimensional vector
    send(eclient, user, chat["id"], "Ada sleeps on the cat bed")  # 5 dimensions, as the server answers now

    assert contents(search(eclient, user, "what pet do I have?")) == ["Ada sleeps on the cat bed"]


def test_old_model_vectors_are_not_compared_with_a_new_models_query(app_factory, provider, needs_vectors, db):
    old = app_factory(EMBEDDING_MODEL=MODEL, EMBEDDING_BASE_URL=provider.url).test_client()
    user = new_user(old)
    send(old, user, new_chat(old, user)["id"], "my cat is called Ada")

    new_app = app_factory(EMBEDDING_MODEL="other-embedder", EMBEDDING_BASE_URL=provider.url)
    new = new_app.test_client()
    assert search(new, user, "what pet do I have?") == []  # the old vector is not used, and no word is shared

    client = EmbeddingsClient(provider.url, model="other-embedder")
    try:
        assert backfill(get_pool(new_app), client) == {"embedded": 1, "failed": 0}
    finally:
        client.close()
    assert vector_count(db, "other-embedder") == 1 and vector_count(db, MODEL) == 0  # re-embedded in place
    assert contents(search(new, user, "what pet do I have?")) == ["my cat is called Ada"]


def test_vectors_never_cross_users_or_bring_back_what_was_deleted(eclient, db):
    alice, bob = new_user(eclient), new_user(eclient)
    alice_chat = new_chat(eclient, alice)
    send(eclient, alice, alice_chat["id"], "my cat is called Ada")
    memory = eclient.post("/memories", json={"content": "Alice's dog is called Rex"}, headers=alice["headers"]).get_json()
    send(eclient, bob, new_chat(eclient, bob)["id"], "the weather was grey")

    assert contents(search(eclient, bob, "what pet do I have?")) == ["the weather was grey"]  # his own, however far
    assert set(contents(search(eclient, alice, "what pet do I have?"))) == {"my cat is called Ada",
                                                                             "Alice's dog is called Rex"}

    eclient.delete(f"/chats/{alice_chat['id']}", headers=alice["headers"])
    eclient.delete(f"/memories/{memory['id']}", headers=alice["headers"])

    assert search(eclient, alice, "what pet do I have?") == []
    assert vector_count(db) == 2  # the deleted chat's message keeps its vector, unused; the memory's is gone


def test_the_recent_window_is_not_recalled_by_meaning_either(eclient, user, chat):
    send(eclient, user, chat["id"], "my cat is called Ada")
    reply = send(eclient, user, chat["id"], "what pet do I have?")
    assert "I found no memories related to this message." in reply["content"]


def test_embed_command_fills_what_is_missing_and_resumes(app_factory, provider, needs_vectors, database_url, db,
                                                         monkeypatch):
    plain = app_factory().test_client()
    user = new_user(plain)
    chat = new_chat(plain, user)
    for text in ("my cat is called Ada", "my sister is Lucia", "I play the piano"):
        send(plain, user, chat["id"], text)
    plain.post("/memories", json={"key": "city", "content": "Porto"}, headers=user["headers"])
    for name, value in {"DATABASE_URL": database_url, "EMBEDDING_MODEL": MODEL, "EMBEDDING_BASE_URL": provider.url}.items():
        monkeypatch.setenv(f"MEMLAYER_{name}", value)

    provider.script(Status(400))  # the first batch fails: counted, left for the next run
    failed = CliRunner().invoke(main, ["embed", "--batch", "2"])
    assert failed.exit_code == 1 and "embedded 2, failed 2" in failed.output

    again = CliRunner().invoke(main, ["embed", "--batch", "2"])
    assert again.exit_code == 0 and "embedded 2, failed 0" in again.output
    assert vector_count(db, MODEL) == 4
    done = CliRunner().invoke(main, ["embed"])
    assert done.exit_code == 0 and "embedded 0, failed 0" in done.output


def test_the_client_checks_every_answer(needs_vectors, provider):
    client = EmbeddingsClient(provider.url, model=MODEL, api_key="SECRET-KEY", retries=1, sleep=lambda s: None)
    try:
        assert client.embed(["cat", "piano"]) == [[1.0, 0.0, 0.0, 0.0, 0.1], [0.0, 0.0, 0.0, 1.0, 0.1]]
        assert provider.requests[-1]["headers"]["Authorization"] == "Bearer SECRET-KEY"
        provider.script(Status(503), Embeddings())
        assert len(client.embed(["cat"])) == 1  # one retry on a 5xx
        provider.script(Malformed(b'{"data": [{"index": 0, "embedding": [1, 2]}]}'))
        with pytest.raises(EmbeddingFailed, match="1 vectors for 2 texts"):
            client.embed(["a", "b"])
        provider.script(Malformed(b'{"data": [{"embedding": [0, 0]}]}'))
        with pytest.raises(EmbeddingFailed, match="zero vector"):
            client.embed(["a"])
        provider.script(Status(401))
        with pytest.raises(EmbeddingFailed) as failure:
            client.embed(["a"])
        assert "SECRET-KEY" not in str(failure.value) and "PROVIDER-SECRET-DETAIL" not in str(failure.value)
    finally:
        client.close()


def test_a_server_without_pgvector_refuses_an_embedding_model(database_url, monkeypatch, provider):
    monkeypatch.setenv("MEMLAYER_DATABASE_URL", database_url)
    monkeypatch.setenv("MEMLAYER_EMBEDDING_MODEL", MODEL)
    monkeypatch.setenv("MEMLAYER_EMBEDDING_BASE_URL", provider.url)
    result = CliRunner().invoke(main, ["migrate"])
    if vectors_available(database_url):
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1
        assert "this PostgreSQL has no pgvector" in result.output and "unset MEMLAYER_EMBEDDING_MODEL" in result.output
    monkeypatch.delenv("MEMLAYER_EMBEDDING_MODEL")
    assert CliRunner().invoke(main, ["migrate"]).exit_code == 0  # lexical-only runs anywhere


def test_an_exact_word_match_still_leads_with_embeddings_on(eclient, user, chat):
    send(eclient, user, chat["id"], "my dog Rex chews shoes")
    send(eclient, user, chat["id"], "the piano tuner came by")

    assert contents(search(eclient, user, "piano tuner"))[0] == "the piano tuner came by"


def test_nearest_neighbours_read_the_sign_bits_first_and_rank_exactly(needs_vectors, app_factory, db):
    app_factory()  # an empty database
    user_id = db.execute("INSERT INTO users (email, password_hash) VALUES ('many@example.com', 'x') RETURNING id"
                         ).fetchone()[0]
    chat_id = db.execute("INSERT INTO chats (user_id, title) VALUES (%s, 'c') RETURNING id", [user_id]).fetchone()[0]
    db.execute("SELECT setseed(0.42)")  # the same vectors every run
    db.execute("""
        WITH m AS (INSERT INTO messages (chat_id, user_id, role, content)
                   SELECT %(c)s, %(u)s, 'user', 'text ' || n FROM generate_series(1, 3000) AS n RETURNING id, seq)
        INSERT INTO embeddings (user_id, message_id, model, embedding)
        SELECT %(u)s, m.id, 'm', (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384 + 0 * (m.seq %% 1)))::vector
        FROM m
    """, {"c": chat_id, "u": user_id})
    db.execute("VACUUM ANALYZE embeddings")
    query = "[" + ",".join(["0.3", "-0.2", "0.1"] * 128) + "]"

    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")  # one user's table is small enough to make a scan cheapest
        plan = "\n".join(row[0] for row in db.execute(
            "EXPLAIN SELECT * FROM recall_nearest(%s, 'm', %s, 5)", [user_id, query]))
    first_pass = plan[plan.index("Sort Key: (((c.bits)"):]
    assert "Index Only Scan using embeddings_user_model_idx" in first_pass, plan  # bits, not 3,000 full rows

    found = db.execute("SELECT item_id, similarity FROM recall_nearest(%s, 'm', %s, 5)", [user_id, query]).fetchall()
    exact = db.execute("SELECT item_id, 1 - (embedding <=> %s::vector) FROM embeddings WHERE user_id = %s "
                       "ORDER BY embedding <=> %s::vector LIMIT 5", [query, user_id, query]).fetchall()
    assert [round(s, 9) for _, s in found] == sorted((round(s, 9) for _, s in found), reverse=True)  # exact order
    assert len(set(found) & set(exact)) >= 4  # the sign bits keep (nearly) every true neighbour in the first pass


def test_recall_with_a_vector_is_planned_per_run(needs_vectors, database_url, app):
    """Only a per-run plan folds the vector branches away (a generic one made a search 4 times slower)."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row, prepare_threshold=0) as conn:
        user_id = conn.execute("INSERT INTO users (email, password_hash) VALUES ('plans@example.com', 'x') RETURNING id"
                               ).fetchone()["id"]
        vector = Vector.of(MODEL, [0.25] * 8)
        for _ in range(6):
            recall(conn, user_id=user_id, text="my cat", limit=5, vector=vector)
            similar_memories(conn, user_id=user_id, text="my cat", limit=5, vector=vector)
        recall(conn, user_id=user_id, text="my cat", limit=5)
        similar_memories(conn, user_id=user_id, text="my cat", limit=5)
        prepared = conn.execute("SELECT statement, generic_plans + custom_plans AS runs FROM pg_prepared_statements"
                                ).fetchall()

    # Each query's statement is prepared, and ran once: for the call without a vector.
    assert [row["runs"] for row in prepared if "recall_nearest" in row["statement"]] == [1, 1], prepared
