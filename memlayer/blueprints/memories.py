"""/memories: curated memories (save, read, change, forget, history) and recall search."""

from uuid import UUID

from flask import Blueprint, jsonify
from flask_jwt_extended import jwt_required
from psycopg.errors import UniqueViolation

from memlayer.auth.tokens import current_user_id
from memlayer.memory.embeddings import embed_memory, embed_quietly
from memlayer.memory.recall import recall
from memlayer.storage.db import get_pool, retrying, sql
from memlayer.web.errors import Conflict, NotFound
from memlayer.web.pagination import cursor_timestamp, cursor_uuid, decode_cursor, page_params, page_response
from memlayer.web.rendering import Renderer
from memlayer.web.schemas import (
    DeletedSchema,
    MemoryCreateSchema,
    MemoryEventSchema,
    MemorySchema,
    MemoryUpdateSchema,
    RecallItemSchema,
    SearchBodySchema,
    SearchQuerySchema,
    load_body,
    load_query,
)

bp = Blueprint("memories", __name__, url_prefix="/memories")

_memory = MemorySchema()
_memory_rows = Renderer(_memory)
_create = MemoryCreateSchema()
_update = MemoryUpdateSchema()
_events = Renderer(MemoryEventSchema())
_search = SearchQuerySchema()
_search_body = SearchBodySchema()
_recall_items = Renderer(RecallItemSchema())
_deleted = DeletedSchema()


def memory_not_found() -> NotFound:
    """The one answer for a memory that is missing or someone else's."""
    return NotFound("Memory not found")


def _position(memory: dict) -> list:
    return [memory["created_at"].isoformat(), str(memory["id"])]


@bp.get("")
@jwt_required()
def list_memories():
    """The user's memories, newest first, one page at a time."""
    page = page_params()
    user_id, fetch = current_user_id(), page["limit"] + 1
    after = decode_cursor(page["cursor"], cursor_timestamp, cursor_uuid) if page["cursor"] else None
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            if after is None:
                rows = list(sql.memories.list_memories(conn, user_id=user_id, limit=fetch))
            else:
                rows = list(sql.memories.list_memories_after(
                    conn, user_id=user_id, after_created_at=after[0], after_id=after[1], limit=fetch
                ))
    return page_response(rows, page["limit"], _memory_rows, _position)


@bp.post("")
@jwt_required()
def save_memory():
    """Keep a memory; with a key the user already uses, replace that memory's content instead (200)."""
    body = load_body(_create)
    user_id = current_user_id()
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            memory = sql.memories.save_memory(conn, user_id=user_id, key=body["key"], content=body["content"])
    embed_memory(user_id, memory)
    return _memory.dump(memory), 201 if memory["created"] else 200


@bp.delete("")
@jwt_required()
def delete_all_memories():
    """Forget every memory of the user."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            deleted = sql.memories.delete_all_memories(conn, user_id=current_user_id())
    return _deleted.dump({"deleted": deleted})


@bp.get("/search")
@jwt_required()
def search():
    """The user's past messages and memories most relevant to ?q=, best first."""
    return _search_for(load_query(_search))


@bp.post("/search")
@jwt_required()
def search_by_body():
    """The same search with {q, limit} in a JSON body: a URL carries only about 900 CJK characters of q."""
    return _search_for(load_body(_search_body))


def _search_for(query: dict):
    vector = embed_quietly(query["q"]) if query["q"].strip() else None  # no connection held meanwhile
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            items = recall(conn, user_id=current_user_id(), text=query["q"], limit=query["limit"], vector=vector)
    return jsonify(_recall_items.rows(items))


@bp.get("/<uuid:memory_id>")
@jwt_required()
def get_memory(memory_id: UUID):
    """One memory of the user."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            memory = sql.memories.get_memory(conn, user_id=current_user_id(), memory_id=memory_id)
    if memory is None:
        raise memory_not_found()
    return _memory.dump(memory)


@bp.patch("/<uuid:memory_id>")
@jwt_required()
def update_memory(memory_id: UUID):
    """Change a memory's content, key, or both."""
    body = load_body(_update)
    user_id = current_user_id()
    try:
        for attempt in retrying():
            with attempt, get_pool().connection() as conn, conn.transaction():
                memory = sql.memories.update_memory(
                    conn, user_id=user_id, memory_id=memory_id,
                    content=body.get("content"), set_key="key" in body, key=body.get("key"),
                )
    except UniqueViolation:
        raise Conflict("Another of your memories already has this key") from None
    if memory is None:
        raise memory_not_found()
    embed_memory(user_id, memory)
    return _memory.dump(memory)


@bp.delete("/<uuid:memory_id>")
@jwt_required()
def delete_memory(memory_id: UUID):
    """Forget one memory, with its history."""
    for attempt in retrying():
        with attempt, get_pool().connection() as conn, conn.transaction():
            deleted = sql.memories.delete_memory(conn, user_id=current_user_id(), memory_id=memory_id)
    if not deleted:
        raise memory_not_found()
    return "", 204


@bp.get("/<uuid:memory_id>/history")
@jwt_required()
def memory_history(memory_id: UUID):
    """Every version of a memory, oldest first."""
    user_id = current_user_id()
    for attempt in retrying():
        with attempt, get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
            if sql.memories.get_memory(conn, user_id=user_id, memory_id=memory_id) is None:
                raise memory_not_found()
            events = list(sql.memories.memory_history(conn, user_id=user_id, memory_id=memory_id))
    return jsonify(_events.rows(events))
