"""The SQL steps of a send: the reads before the model answers, and storing the pair with its usage after.

The caller owns the connection, and the transaction of the writes (store_transaction says which it needs);
these functions only run SQL on it.
"""

import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import psycopg

from memlayer import config as settings
from memlayer.assistant import quota
from memlayer.assistant.catalog import ChatModel, chat_model
from memlayer.assistant.responders import OFFLINE
from memlayer.memory.context import ContextSettings, assemble_context
from memlayer.memory.embeddings import Vector, store_message_vector
from memlayer.providers.replies import Reply
from memlayer.storage.db import sql
from memlayer.web.errors import NotFound


def chat_not_found() -> NotFound:
    """The one answer for a chat that is missing, deleted or someone else's."""
    return NotFound("Chat not found")


@dataclass(frozen=True)
class Turn:
    """A send that passed its checks: who, where, what, the model to ask and everything it will see."""

    user_id: uuid.UUID
    chat_id: uuid.UUID
    content: str
    model: ChatModel
    context: list[dict]
    quota: int | None
    vector: Vector | None = None  # the message's embedding, stored with it when there is one
    extract: bool = False  # queue memory extraction for the message when it is stored (same statement)


def prepare_turn(conn: psycopg.Connection, *, user_id: uuid.UUID, chat_id: uuid.UUID, content: str, config,
                 vector: Vector | None = None) -> Turn:
    """The reads before the model is asked: chat and recent window (404), model (409), quota (429), context.

    `vector` is the message's embedding (made before this transaction), the query of recall by meaning.
    """
    now, monthly_quota = quota.utc_now(), config["MONTHLY_TOKEN_QUOTA"]
    context_settings = ContextSettings.from_config(config)
    row = sql.chats.chat_for_send(conn, user_id=user_id, chat_id=chat_id,
                                  default_model=settings.default_model(config), period=quota.period_of(now),
                                  recent_limit=context_settings.recent_limit)
    if row is None:
        raise chat_not_found()
    model = chat_model(row, config)
    quota.check(row["tokens_used"], monthly_quota, now)
    context = assemble_context(conn, user_id=user_id, chat_id=chat_id, content=content,
                               settings=context_settings.within(model.context_window),
                               recent_newest_first=row["recent"], vector=vector)
    # A real model answers, extraction is on here and the user has not turned it off.
    extract = model.provider != OFFLINE and settings.extraction_enabled(config) and row["memory_extraction"]
    return Turn(user_id, chat_id, content, model, context, monthly_quota, vector, extract)


def store_transaction(conn: psycopg.Connection, turn: Turn, *, records_answer: bool) -> AbstractContextManager:
    """The transaction that storing `turn` needs: none when it is one statement, else BEGIN/COMMIT around it.

    The pair, its charge and its extraction job are one statement, all-or-nothing on its own in autocommit
    (BEGIN and COMMIT would add two round trips to every send). The message's vector, and an Idempotency-Key's
    answer recorded beside the pair (`records_answer`), are further writes that must commit with it.
    """
    return conn.transaction() if turn.vector is not None or records_answer else nullcontext()


def store_exchange(conn: psycopg.Connection, turn: Turn, reply: Reply) -> dict:
    """Store the user's message and the assistant's reply next to each other, charge the tokens; return the reply row.

    One statement (sql/messages.sql store_exchange): the chat's row lock keeps each pair adjacent, and the
    usage counter's row lock keeps the quota under concurrency (429, nothing stored, when it was reached).
    The message's extraction job is queued by the same statement: a send that stores nothing queues nothing.
    """
    now = quota.utc_now()
    row = sql.messages.store_exchange(
        conn, user_id=turn.user_id, chat_id=turn.chat_id, content=turn.content, reply=reply.content,
        model=turn.model.name, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
        cost=turn.model.cost(reply), period=quota.period_of(now), quota=turn.quota, extract=turn.extract,
    )
    if not row.pop("chat_found"):
        raise chat_not_found()
    if not row.pop("charged"):
        raise quota.exceeded(turn.quota, now)
    user_message_id = row.pop("user_message_id")
    if turn.vector is not None:
        store_message_vector(conn, user_id=turn.user_id, message_id=user_message_id, vector=turn.vector)
    return row
