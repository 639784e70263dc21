"""Reading a chat's context and storing a user message with its reply, on a caller's connection.

The caller owns the transaction; these functions only run SQL on the connection they get.
"""

import uuid

import psycopg

from memlayer.db import sql
from memlayer.errors import NotFound


def chat_not_found() -> NotFound:
    """The one answer for a chat that is missing, deleted or someone else's."""
    return NotFound("Chat not found")


def recent_context(conn: psycopg.Connection, *, user_id: uuid.UUID, chat_id: uuid.UUID, window: int) -> list[dict]:
    """The chat's latest messages, oldest first, as [{role, content}]; 404 if the chat is not the user's."""
    if sql.chats.get_chat(conn, user_id=user_id, chat_id=chat_id) is None:
        raise chat_not_found()
    newest_first = list(sql.messages.recent_messages(conn, user_id=user_id, chat_id=chat_id, limit=window))
    return [{"role": row["role"], "content": row["content"]} for row in reversed(newest_first)]


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
