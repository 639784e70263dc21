"""Migrations apply to an empty database, are idempotent, roll back, and create the indexes lists need."""


import psycopg
import pytest

from conftest import create_database, drop_database
from memlayer.storage.migrate import apply_migrations, rollback_migrations, yoyo_url


@pytest.fixture
def empty_database(server_url):
    url = create_database(server_url, "memlayer_migrate")
    yield url
    drop_database(server_url, url)


def tables(url):
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'"
        ).fetchall()
    return {row[0] for row in rows}


ALL_MIGRATIONS = ["0001_initial", "0002_memory", "0003_models_usage", "0004_idempotency", "0005_gin_pending_list",
                  "0006_recall_statistics", "0007_embeddings", "0008_revoked_tokens_of_deleted_users",
                  "0009_memory_extraction", "0010_imports"]
ALL_TABLES = {"users", "chats", "messages", "revoked_tokens", "memories", "memory_events", "models", "monthly_usage", "idempotency_keys",
              "recall_terms", "recall_totals", "memory_jobs", "memory_usage", "chat_imports"}


def has_pgvector(url) -> bool:
    """Whether the server offers the vector extension (the embedded PostgreSQL 18 does, Debian's 15 does not)."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector')").fetchone()[0]


def test_apply_is_idempotent_and_reversible(empty_database):
    assert tables(empty_database) == set()
    assert apply_migrations(empty_database) == ALL_MIGRATIONS
    # The vector table only where pgvector is; the recall query's vector functions everywhere.
    assert tables(empty_database) == ALL_TABLES | ({"embeddings"} if has_pgvector(empty_database) else set())
    with psycopg.connect(empty_database) as conn:
        functions = {row[0] for row in conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'recall_%'")}
    assert {"recall_nearest", "recall_similarity", "recall_bm25"} <= functions
    assert apply_migrations(empty_database) == []
    assert rollback_migrations(empty_database) == ALL_MIGRATIONS[::-1]
    assert tables(empty_database) == set()
    assert apply_migrations(empty_database) == ALL_MIGRATIONS


def test_list_queries_have_their_indexes(database_url):
    with psycopg.connect(database_url) as conn:
        indexes = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall())
    assert "(user_id, updated_at DESC, id DESC) WHERE (deleted_at IS NULL)" in indexes["chats_user_activity_idx"]
    assert "UNIQUE INDEX" in indexes["messages_chat_seq_idx"] and "(chat_id, seq)" in indexes["messages_chat_seq_idx"]
    assert "(email)" in indexes["users_email_key"]


def test_yoyo_url_names_the_psycopg_driver():
    assert yoyo_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert yoyo_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError):
        yoyo_url("mysql://u@h/db")

