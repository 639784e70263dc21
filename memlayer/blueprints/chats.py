"""/chats: list, open, import, read, change (title, model) and (soft) delete a user's chats."""

from datetime import datetime, timezone
from uuid import UUID

from flask import Blueprint
from flask_jwt_extended import jwt_required

from memlayer.assistant.archive import import_conversation
from memlayer.assistant.catalog import check_choice
from memlayer.assistant.conversation import chat_not_found
from memlayer.auth.tokens import current_user_id
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web import idempotency
from memlayer.web.pagination import cursor_timestamp, cursor_uuid, decode_cursor, page_params, page_response
from memlayer.web.rendering import Renderer
from memlayer.web.schemas import ChatCreateSchema, ChatImportSchema, ChatSchema, ChatUpdateSchema, load_body

bp = Blueprint("chats", __name__, url_prefix="/chats")

_chat = ChatSchema()
_chat_rows = Renderer(_chat)
_create = ChatCreateSchema()
_update = ChatUpdateSchema()
_import = ChatImportSchema()


def default_title() -> str:
    """The title of a chat opened without one: 'Chat YYYY-MM-DD HH:MM' in UTC."""
    return datetime.now(timezone.utc).strftime("Chat %Y-%m-%d %H:%M")


def _position(chat: dict) -> list:
    return [chat["updated_at"].isoformat(), str(chat["id"])]


@bp.get("")
@jwt_required()
def list_chats():
    """The user's live chats, most recently active first, one page at a time."""
    page = page_params()
    user_id, fetch = current_user_id(), page["limit"] + 1
    after = decode_cursor(page["cursor"], cursor_timestamp, cursor_uuid) if page["cursor"] else None
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            if after is None:
                rows = list(sql.chats.list_chats(conn, user_id=user_id, limit=fetch))
            else:
                rows = list(sql.chats.list_chats_after(
                    conn, user_id=user_id, after_updated_at=after[0], after_id=after[1], limit=fetch
                ))
    return page_response(rows, page["limit"], _chat_rows, _position)


@bp.post("")
@jwt_required()
def create_chat():
    """Open a new chat (default title: the current UTC time; default model: the service's); Idempotency-Key honoured."""
    body = load_body(_create, empty_ok=True)
    user_id = current_user_id()
    claim, replay = idempotency.claim_request(user_id)
    if replay is not None:
        return replay
    with idempotency.released_on_failure(claim):
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                check_choice(conn, body["model"])
                chat = sql.chats.create_chat(
                    conn, user_id=user_id, title=body.get("title") or default_title(), model=body["model"]
                )
                response = idempotency.respond(conn, claim, _chat.dump(chat), 201)
    return response


@bp.post("/import")
@jwt_required()
def import_chat():
    """Import one conversation with its times (and memories) in one transaction, asking no model; Idempotency-Key honoured."""
    body = load_body(_import)
    user_id = current_user_id()
    claim, replay = idempotency.claim_request(user_id)
    if replay is not None:
        return replay
    with idempotency.released_on_failure(claim):
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                chat = import_conversation(conn, user_id, body)
                response = idempotency.respond(conn, claim, _chat.dump(chat), 201)
    return response


@bp.get("/<uuid:chat_id>")
@jwt_required()
def get_chat(chat_id: UUID):
    """One chat of the user."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            chat = sql.chats.get_chat(conn, user_id=current_user_id(), chat_id=chat_id)
    if chat is None:
        raise chat_not_found()
    return _chat.dump(chat)


@bp.patch("/<uuid:chat_id>")
@jwt_required()
def update_chat(chat_id: UUID):
    """Change a chat's title, its model (null: the service's default), or both."""
    body = load_body(_update)
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            check_choice(conn, body.get("model"))
            chat = sql.chats.update_chat(conn, user_id=current_user_id(), chat_id=chat_id, title=body.get("title"),
                                         set_model="model" in body, model=body.get("model"))
    if chat is None:
        raise chat_not_found()
    return _chat.dump(chat)


@bp.delete("/<uuid:chat_id>")
@jwt_required()
def delete_chat(chat_id: UUID):
    """Soft-delete a chat: it and its messages vanish from every read."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            deleted = sql.chats.soft_delete_chat(conn, user_id=current_user_id(), chat_id=chat_id)
    if not deleted:
        raise chat_not_found()
    return "", 204
