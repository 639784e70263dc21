"""/chats/{id}/messages: read a chat's messages and send a new one."""

from uuid import UUID

from flask import Blueprint, current_app
from flask_jwt_extended import jwt_required

from memlayer.assistant.conversation import chat_not_found, prepare_turn, store_exchange, store_transaction
from memlayer.assistant.responders import responder_for
from memlayer.assistant.streaming import event_stream, wants_event_stream
from memlayer.auth.tokens import current_user_id
from memlayer.memory.embeddings import embed_quietly
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web import idempotency
from memlayer.web.errors import ApiError
from memlayer.web.pagination import cursor_seq, decode_cursor, linked_page, message_page_params
from memlayer.web.rendering import Renderer
from memlayer.web.schemas import MessageCreateSchema, MessageSchema, load_body

bp = Blueprint("messages", __name__, url_prefix="/chats")

_message = MessageSchema()
_message_rows = Renderer(_message)
_create = MessageCreateSchema()


@bp.get("/<uuid:chat_id>/messages")
@jwt_required()
def list_messages(chat_id: UUID):
    """A page of a chat's messages, oldest first within it: the latest by default, or before or after a message."""
    query = message_page_params()
    user_id, limit = current_user_id(), query["limit"]
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            if query["after"] is not None or query["cursor"] is not None:
                after_seq = (position_of(conn, user_id, chat_id, query["after"]) if query["after"] is not None
                             else decode_cursor(query["cursor"], cursor_seq)[0])
                rows = list(sql.messages.list_messages(conn, user_id=user_id, chat_id=chat_id, after_seq=after_seq,
                                                       limit=limit + 1))
                page, more_after, more_before = rows[:limit], len(rows) > limit, after_seq > 0
            else:
                before_seq = (position_of(conn, user_id, chat_id, query["before"]) if query["before"] is not None
                              else LATEST)
                rows = list(sql.messages.messages_before(conn, user_id=user_id, chat_id=chat_id,
                                                         before_seq=before_seq, limit=limit + 1))
                page, more_before, more_after = rows[:limit][::-1], len(rows) > limit, before_seq != LATEST
            # The queries only return rows of the user's live chat; an empty page may still be a 404.
            if not page and sql.chats.get_chat(conn, user_id=user_id, chat_id=chat_id) is None:
                raise chat_not_found()
    links = {}
    if page and more_before:
        links["prev"] = {"limit": limit, "before": page[0]["id"]}
    if page and more_after:
        links["next"] = {"limit": limit, "after": page[-1]["id"]}
    return linked_page(page, _message_rows, links)


LATEST = 2**63 - 1  # before every message: the default page is the chat's latest


def position_of(conn, user_id: UUID, chat_id: UUID, message_id: UUID) -> int:
    """The position of a message named by ?before= or ?after=; 422 when it is not in this chat."""
    seq = sql.messages.message_seq(conn, user_id=user_id, chat_id=chat_id, message_id=message_id)
    if seq is None:
        if sql.chats.get_chat(conn, user_id=user_id, chat_id=chat_id) is None:
            raise chat_not_found()
        raise ApiError("No such message in this chat to page from", status=422)
    return seq


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
            with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
                turn = prepare_turn(conn, user_id=user_id, chat_id=chat_id, content=content,
                                    config=current_app.config, vector=vector)
        # No connection is held while the model answers: that may take many seconds.
        responder = responder_for(turn.model.provider)
        if wants_event_stream():
            return event_stream(turn, responder.stream(turn.model.name, turn.context), _message.dump, claim)
        reply = responder.reply(turn.model.name, turn.context)
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, \
                    store_transaction(conn, turn, records_answer=claim is not None):
                assistant = store_exchange(conn, turn, reply)
                response = idempotency.respond(conn, claim, _message_rows.row(assistant), 201)
    return response
