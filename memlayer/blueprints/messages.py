"""/chats/{id}/messages: read a chat's messages and send a new one."""

from uuid import UUID

from flask import Blueprint, current_app
from flask_jwt_extended import jwt_required

from memlayer.context import ContextSettings, assemble_context
from memlayer.conversation import chat_not_found, store_exchange
from memlayer.db import get_pool, sql
from memlayer.pagination import cursor_seq, decode_cursor, page_params, page_response
from memlayer.responders import current_responder
from memlayer.schemas import MessageCreateSchema, MessageSchema, load_body
from memlayer.tokens import current_user_id

bp = Blueprint("messages", __name__, url_prefix="/chats")

_message = MessageSchema()
_create = MessageCreateSchema()


def _position(message: dict) -> list:
    return [message["seq"]]


@bp.get("/<uuid:chat_id>/messages")
@jwt_required()
def list_messages(chat_id: UUID):
    """A chat's messages, oldest first, one page at a time."""
    page = page_params()
    after_seq = decode_cursor(page["cursor"], cursor_seq)[0] if page["cursor"] else 0
    user_id = current_user_id()
    with get_pool().connection() as conn, conn.transaction():
        rows = list(sql.messages.list_messages(
            conn, user_id=user_id, chat_id=chat_id, after_seq=after_seq, limit=page["limit"] + 1
        ))
        # The query only returns rows of the user's live chat; an empty page may still be a 404.
        if not rows and sql.chats.get_chat(conn, user_id=user_id, chat_id=chat_id) is None:
            raise chat_not_found()
    return page_response(rows, page["limit"], _message, _position)


@bp.post("/<uuid:chat_id>/messages")
@jwt_required()
def send_message(chat_id: UUID):
    """Store the user's message and the assistant's reply together; answer the reply."""
    content = load_body(_create)["content"]
    user_id, settings = current_user_id(), ContextSettings.from_config(current_app.config)
    with get_pool().connection() as conn, conn.transaction():
        context = assemble_context(conn, user_id=user_id, chat_id=chat_id, content=content, settings=settings)
    # No connection is held while the reply is generated: it may be slow.
    reply = current_responder().reply(context)
    with get_pool().connection() as conn, conn.transaction():
        assistant = store_exchange(conn, user_id=user_id, chat_id=chat_id, content=content, reply=reply)
    return _message.dump(assistant), 201
