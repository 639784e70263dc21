"""Recall: the user's past words and memories most relevant to a text (the `recall` query of sql/memories.sql)."""

import time
from uuid import UUID

import psycopg

from memlayer.memory.embeddings import Vector
from memlayer.storage.db import native, sql
from memlayer.web.metrics import RECALL_SECONDS


def recall(
    conn: psycopg.Connection, *, user_id: UUID, text: str, limit: int,
    window_chat_id: UUID | None = None, window_start_seq: int | None = None, vector: Vector | None = None,
) -> list[dict]:
    """The user's best-matching messages and memories for `text`, best first, on the caller's transaction.

    Messages of `window_chat_id` from `window_start_seq` on (the recent window) are left out. With the
    text's `vector`, items near it in meaning are recalled too (only against vectors of the same model).

    Without a vector it is prepared once it is hot, like every query: its generic plan probes the user's
    own GIN entries as a per-run plan does, and planning it (1.8 ms) cost six times running it (0.3 ms);
    on make bench's users of 10 to 200,000 messages the generic plan was the faster for every one. With
    a vector it is planned per run: only then are the vector branches folded away (a generic plan made
    a recall bench search 103 ms instead of 28).
    """
    params = {"user_id": user_id, "text": text, "window_chat_id": window_chat_id,
              "window_start_seq": window_start_seq, "limit": limit,
              "model": vector.model if vector else None, "embedding": vector.literal if vector else None}
    started = time.perf_counter()
    rows = native(sql.memories.recall).fetch_all(conn, params, prepare=False if vector else None)
    RECALL_SECONDS.labels("vector" if vector else "lexical").observe(time.perf_counter() - started)
    return rows



def similar_memories(conn: psycopg.Connection, *, user_id: UUID, text: str, limit: int,
                     vector: Vector | None = None) -> list[dict]:
    """The user's memories most like `text` (by words, and by meaning with its vector), best first.

    Prepared, or planned per run with a vector, for the same reasons as recall.
    """
    params = {"user_id": user_id, "text": text, "limit": limit,
              "model": vector.model if vector else None, "embedding": vector.literal if vector else None}
    return conn.execute(sql.memories.similar_memories.sql, params, prepare=False if vector else None).fetchall()
