"""/chats/{id}/messages: read a chat's messages and send a new one."""

from uuid import UUID

from flask import Blueprint, current_app
from flask_jwt_extended import jwt_required

from memlayer.assistant.conversation import chat_not_found, prepare_turn, store_exchange
from memlayer.assistant.responders import responder_for
from memlayer.assistant.streaming import event_stream, wants_event_stream
from memlayer.auth.tokens import current_user_id
from memlayer.memory.embeddings import embed_quietly
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web import idempotency
from memlayer.web.pagination import cursor_seq, decode_cursor, page_params, page_response
from memlayer.web.schemas import MessageCreateSchema, MessageSchema, load_body

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
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
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
    """Send a message: the model's reply and the message are stored together (JSON, or SSE when asked).

    With an Idempotency-Key, a retry replays the stored reply instead of asking the model again.
    """
    content = load_body(_create)["content"]
    user_id = current_user_id()
    claim, replay = idempotency.claim_request(user_id)
    if replay is not None:
        return replay
    with idempotency.released_on_failure(claim):
        vector = embed_quietly(content)  # before any connection is borrowed: the provider may be slow
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                turn = prepare_turn(conn, user_id=user_id, chat_id=chat_id, content=content,
                                    config=current_app.config, vector=vector)
        # No connection is held while the model answers: that may take many seconds.
        responder = responder_for(turn.model.provider)
        if wants_event_stream():
            return event_stream(turn, responder.stream(turn.model.name, turn.context), _message.dump, claim)
        reply = responder.reply(turn.model.name, turn.context)
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                assistant = store_exchange(conn, turn, reply)
                response = idempotency.respond(conn, claim, _message.dump(assistant), 201)
    return response
