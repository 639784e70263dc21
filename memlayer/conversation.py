"""The chat-side SQL steps of a send: the shared not-found answer and storing a message with its reply.

The caller owns the transaction; these functions only run SQL on the connection they get.
"""

import uuid

import psycopg

from memlayer.db import sql
from memlayer.errors import NotFound


def chat_not_found() -> NotFound:
    """The one answer for a chat that is missing, deleted or someone else's."""
    return NotFound("Chat not found")


def store_exchange(
    conn: psycopg.Connection, *, user_id: uuid.UUID, chat_id: uuid.UUID, content: str, reply: str
) -> dict:
    """Store the user's message and the assistant's reply next to each other; return the reply row.

    The chat row lock serializes concurrent sends to one chat, so each pair stays adjacent.
    """
    if sql.chats.lock_chat(conn, user_id=user_id, chat_id=chat_id) is None:
        raise chat_not_found()
    sql.messages.insert_message(conn, user_id=user_id, chat_id=chat_id, role="user", content=content)
    assistant = sql.messages.insert_message(conn, user_id=user_id, chat_id=chat_id, role="assistant", content=reply)
    sql.chats.touch_chat(conn, user_id=user_id, chat_id=chat_id)
    return assistant
