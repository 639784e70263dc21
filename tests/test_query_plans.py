"""The SQL files' queries read their indexes in order, even for users and chats far bigger than average.

Plans are the generic ones a prepared statement gets (psycopg prepares hot queries), over skewed
data: one user with a 3,000-message chat, 300 chats and 500 memories among 200 small users.
"""


import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import TABLES, explain_generic
from memlayer.memory.recall import recall
from memlayer.storage.db import sql


@pytest.fixture(scope="module")
def skewed(database_url):
    """Skewed data, analyzed; returns the heavy user's id and big chat id."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + " CASCADE")
        conn.execute("""
            INSERT INTO users (email, password_hash)
            SELECT 'user' || n || '@example.com', 'x' FROM generate_series(0, 199) AS n;
            INSERT INTO chats (user_id, title, updated_at)
            SELECT u.id, 'chat', now() - n * interval '1 minute'
            FROM users AS u, generate_series(1, CASE WHEN u.email = 'user0@example.com' THEN 300 ELSE 2 END) AS n;
            INSERT INTO messages (chat_id, user_id, role, content)
            SELECT c.id, c.user_id, CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END,
                   'word' || (n % 97) || ' about the cat number ' || n
            FROM chats AS c, generate_series(1, 10) AS n;
            INSERT INTO messages (chat_id, user_id, role, content)
            SELECT c.id, c.user_id, CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END,
                   'word' || (n % 97) || ' about the garden number ' || n
            FROM (SELECT c.* FROM chats AS c JOIN users AS u ON u.id = c.user_id
                  WHERE u.email = 'user0@example.com' LIMIT 1) AS c, generate_series(1, 3000) AS n;
            INSERT INTO memories (user_id, content)
            SELECT u.id, 'fact ' || n || ' about the cat'
            FROM users AS u, generate_series(1, CASE WHEN u.email = 'user0@example.com' THEN 500 ELSE 3 END) AS n;
            ANALYZE;
        """)
        user_id, chat_id = conn.execute(
            "SELECT user_id, chat_id FROM messages GROUP BY user_id, chat_id ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    yield {"user_id": user_id, "chat_id": chat_id}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + " CASCADE")


def generic_plan(database_url: str, query, **params) -> str:
    """EXPLAIN of the query's generic plan, the one a prepared statement settles on."""
    return explain_generic(database_url, query, params)


def assert_ordered_scan(plan: str, index: str) -> None:
    assert f"using {index}" in plan, plan
    assert "Sort" not in plan and "Bitmap" not in plan, plan


def test_a_page_of_a_big_chat_reads_the_index_in_order(database_url, skewed):
    plan = generic_plan(database_url, sql.messages.list_messages, after_seq=0, limit=51, **skewed)
    assert_ordered_scan(plan, "messages_chat_seq_idx")


def test_the_latest_page_of_a_big_chat_reads_the_index_backwards(database_url, skewed):
    plan = generic_plan(database_url, sql.messages.messages_before, before_seq=2**63 - 1, limit=51, **skewed)
    assert "Index Scan Backward using messages_chat_seq_idx" in plan
    assert_ordered_scan(plan, "messages_chat_seq_idx")


def test_the_recent_window_of_a_big_chat_reads_the_index_backwards(database_url, skewed):
    plan = generic_plan(database_url, sql.chats.chat_for_send, recent_limit=50, default_model="offline",
                        period="2026-11-01", **skewed)
    assert "Index Scan Backward using messages_chat_seq_idx" in plan
    assert_ordered_scan(plan, "messages_chat_seq_idx")


def test_pages_of_chats_and_memories_read_their_indexes_in_order(database_url, skewed):
    user_id = skewed["user_id"]
    for query, index, after in [
        (sql.chats.list_chats, "chats_user_activity_idx", {}),
        (sql.chats.list_chats_after, "chats_user_activity_idx", {"after_updated_at": "2100-01-01", "after_id": user_id}),
        (sql.memories.list_memories, "memories_user_created_idx", {}),
        (sql.memories.list_memories_after, "memories_user_created_idx", {"after_created_at": "2100-01-01", "after_id": user_id}),
    ]:
        assert_ordered_scan(generic_plan(database_url, query, user_id=user_id, limit=51, **after), index)


def test_recall_probes_the_message_index_with_the_user_and_the_words(database_url, skewed):
    """The generic plan, which the service's prepared recall settles on, even for the heaviest user."""
    plan = generic_plan(database_url, sql.memories.recall, user_id=skewed["user_id"], text="what about my cat?",
                        window_chat_id=None, window_start_seq=None, limit=5, model=None, embedding=None)
    section = plan[plan.index("on messages_recall_idx"):]
    condition = section[section.index("Index Cond"):].splitlines()[0]
    assert "user_id" in condition and "search_vector" in condition, plan
    # Memories are few per user; either of their indexes is fine as long as it starts from the user.
    section = plan[plan.index("on memories"):]
    assert "Index Cond: (user_id = " in section or "Index Cond: ((user_id = " in section, plan


def test_recall_is_prepared_once_it_is_hot(database_url, skewed):
    """Planning the recall took 1.8 ms against 0.3 ms to run it: the service prepares it like every query."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row, prepare_threshold=0) as conn:
        for _ in range(10):
            assert recall(conn, user_id=skewed["user_id"], text="cat", limit=5)
        prepared = conn.execute("SELECT statement, generic_plans FROM pg_prepared_statements").fetchall()
    recalls = [row for row in prepared if "recall_bm25" in row["statement"]]
    assert len(recalls) == 1 and recalls[0]["generic_plans"] > 0, prepared


def test_usage_reads_only_its_covering_index(database_url, skewed):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE messages SET model = 'offline', prompt_tokens = 10, completion_tokens = 5, cost = 0 "
                     "WHERE role = 'assistant'")
        conn.execute("VACUUM ANALYZE messages")  # a fresh visibility map, as autovacuum keeps it
    plan = generic_plan(database_url, sql.usage.usage_by_model, user_id=skewed["user_id"],
                        start="2000-01-01", end="2100-01-01")
    assert "Index Only Scan using messages_usage_idx" in plan, plan


def test_recall_indexes_keep_their_pending_lists_small(db):
    # Every search reads a GIN index's whole pending list: at the default 4 MB a recall after 20,000
    # inserts cost 1.3-1.8 ms instead of 0.3 ms (migrations/0005_gin_pending_list.sql).
    options = dict(db.execute(
        "SELECT relname, reloptions FROM pg_class WHERE relname IN ('messages_recall_idx', 'memories_recall_idx')"
    ).fetchall())
    assert options == {name: ["gin_pending_list_limit=256"] for name in ("messages_recall_idx", "memories_recall_idx")}
