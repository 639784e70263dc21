"""Vectors for recall by meaning: the app's embeddings client, query vectors, and what gets embedded."""

import logging
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

import psycopg
from flask import Flask, current_app
from psycopg_pool import ConnectionPool

from memlayer import config as settings
from memlayer.providers.embeddings import EmbeddingFailed, EmbeddingsClient
from memlayer.storage.db import get_pool, retrying, sql, transaction

logger = logging.getLogger(__name__)

EMBEDDINGS_KEY = "memlayer.embeddings"


@dataclass(frozen=True)
class Vector:
    """A text's embedding as the database takes it: pgvector's text form, and the model that made it."""

    model: str
    literal: str

    @classmethod
    def of(cls, model: str, values: list[float]) -> "Vector":
        """Wrap the floats a provider returned."""
        return cls(model, "[" + ",".join(repr(value) for value in values) + "]")


def init_app(app: Flask) -> None:
    """Give the app an embeddings client when MEMLAYER_EMBEDDING_MODEL is set (short timeout, no retries)."""
    model = app.config.get("EMBEDDING_MODEL")
    if not model:
        return
    app.extensions[EMBEDDINGS_KEY] = EmbeddingsClient(
        settings.embedding_base_url(app.config), model=str(model), api_key=settings.embedding_api_key(app.config),
        timeout=float(app.config["EMBEDDING_TIMEOUT"]),
    )


def close(app: Flask) -> None:
    """Release the embeddings client's HTTP connections (at worker exit)."""
    client = embedder(app)
    if client is not None:
        client.close()


def embedder(app: Flask | None = None) -> EmbeddingsClient | None:
    """The app's embeddings client, or None when recall is lexical-only."""
    return (app or current_app).extensions.get(EMBEDDINGS_KEY)


def embed_quietly(text: str) -> Vector | None:
    """The text's vector, or None when embeddings are off or the provider failed (logged, never the text).

    Called with no database connection held: the provider may take up to MEMLAYER_EMBEDDING_TIMEOUT.
    """
    client = embedder()
    if client is None:
        return None
    values = client.embed_one(text)
    return Vector.of(client.model, values) if values is not None else None


def memory_text(key: str | None, content: str) -> str:
    """What a memory's vector is made of: its key and its content, as its words are indexed."""
    return f"{key}: {content}" if key else content


def store_message_vector(conn: psycopg.Connection, *, user_id: UUID, message_id: UUID, vector: Vector) -> None:
    """Keep a message's vector, on the caller's transaction (the one that stored the message)."""
    sql.embeddings.store_message_embedding(conn, user_id=user_id, message_id=message_id, model=vector.model,
                                           embedding=vector.literal)


def embed_memory(user_id: UUID, memory: dict) -> None:
    """Give a memory just written its vector: embedded with no connection held, then stored unless it changed.

    Skipped (logged) when the provider fails; `memlayer embed` fills it in later.
    """
    vector = embed_quietly(memory_text(memory["key"], memory["content"]))
    if vector is None:
        return
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            store_memory_vector(conn, user_id=user_id, memory=memory, vector=vector)


def store_memory_vector(conn: psycopg.Connection, *, user_id: UUID, memory: dict, vector: Vector) -> None:
    """Keep the vector of a memory's key and content, unless the memory has changed since (caller's transaction)."""
    sql.embeddings.store_memory_embedding(conn, user_id=user_id, memory_id=memory["id"], key=memory["key"],
                                          content=memory["content"], model=vector.model, embedding=vector.literal)


def backfill(pool: ConnectionPool, client: EmbeddingsClient, *, batch: int = 64,
             on_progress: Callable[[int], None] = lambda done: None) -> dict:
    """Give every user message and memory without a vector of the client's model one, batch by batch.

    Each batch is read in one short transaction, embedded with no connection held, and stored in another,
    so it is safe while the service runs; running it again resumes (what has a vector is skipped). A batch
    the provider refuses is counted as failed and left for the next run. Returns {"embedded", "failed"}.
    """
    counts = {"embedded": 0, "failed": 0}
    for kind in ("message", "memory"):
        after = UUID(int=0)
        while True:
            with transaction(pool) as conn:
                find = sql.embeddings.missing_message_embeddings if kind == "message" \
                    else sql.embeddings.missing_memory_embeddings
                rows = list(find(conn, model=client.model, after_id=after, limit=batch))
            if not rows:
                break
            after = rows[-1]["id"]
            texts = [row["content"] if kind == "message" else memory_text(row["key"], row["content"]) for row in rows]
            try:
                vectors = [Vector.of(client.model, values) for values in client.embed(texts)]
            except EmbeddingFailed as error:
                logger.warning("embedding a batch of %d %ss failed (%s); left for the next run", len(rows), kind, error)
                counts["failed"] += len(rows)
                on_progress(len(rows))
                continue
            with transaction(pool) as conn:
                for row, vector in zip(rows, vectors):
                    if kind == "message":
                        store_message_vector(conn, user_id=row["user_id"], message_id=row["id"], vector=vector)
                    else:
                        store_memory_vector(conn, user_id=row["user_id"], memory=row, vector=vector)
            counts["embedded"] += len(rows)
            on_progress(len(rows))
    return counts
