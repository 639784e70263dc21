"""Recall: the user's past words and memories most relevant to a text (the `recall` query of sql/memories.sql)."""

import time
from uuid import UUID

import psycopg

from memlayer.memory.embeddings import Vector
from memlayer.storage.db import sql
from memlayer.web.metrics import RECALL_SECONDS


def recall(
    conn: psycopg.Connection, *, user_id: UUID, text: str, limit: int,
    window_chat_id: UUID | None = None, window_start_seq: int | None = None, vector: Vector | None = None,
) -> list[dict]:
    """The user's best-matching messages and memories for `text`, best first, on the caller's transaction.

    Messages of `window_chat_id` from `window_start_seq` on (the recent window) are left out. With the
    text's `vector`, items near it in meaning are recalled too (only against vectors of the same model).

    Run unprepared on purpose: a prepared statement settles on a generic plan made for an average
    user, which scans the user_id btree; for a user with tens of thousands of messages that is
    far slower than the GIN index the per-run plan picks from the user's own statistics.
    """
    params = {"user_id": user_id, "text": text, "window_chat_id": window_chat_id,
              "window_start_seq": window_start_seq, "limit": limit,
              "model": vector.model if vector else None, "embedding": vector.literal if vector else None}
    started = time.perf_counter()
    rows = conn.execute(sql.memories.recall.sql, params, prepare=False).fetchall()
    RECALL_SECONDS.labels("vector" if vector else "lexical").observe(time.perf_counter() - started)
    return rows



def similar_memories(conn: psycopg.Connection, *, user_id: UUID, text: str, limit: int,
                     vector: Vector | None = None) -> list[dict]:
    """The user's memories most like `text` (by words, and by meaning with its vector), best first.

    Unprepared for the same reason as recall: the plan should fit this user's own statistics.
    """
    params = {"user_id": user_id, "text": text, "limit": limit,
              "model": vector.model if vector else None, "embedding": vector.literal if vector else None}
    return conn.execute(sql.memories.similar_memories.sql, params, prepare=False).fetchall()
