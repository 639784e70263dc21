"""A user's data out and in: the export document, streamed from one snapshot, and conversations imported as chats.

The export is written piece by piece from server-side cursors, so an account of any size costs the same
memory; the import writes a conversation in one transaction, with the times it gives, asking no model.
"""

import json
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

import psycopg

from memlayer.storage.db import get_pool, sql

EXPORT_FORMAT = "memlayer-export"
EXPORT_VERSION = 1
CURSOR_BATCH = 500  # rows a server-side cursor fetches at a time
SPOOL_IN_MEMORY_BYTES = 256 * 1024  # a spooled export bigger than this goes to a temporary file


def export_filename(today: date) -> str:
    """The name a download of the export gets."""
    return f"memlayer-export-{today.isoformat()}.json"


def spooled_export(user_id: UUID, exported_at: datetime):
    """The user's export written to a temporary file (rewound), or None when the account is gone.

    The database is read at its own pace and its connection given back before a client downloads the file
    at theirs: a slow or stalled download must not hold a pooled connection.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
    for piece in export_document(user_id, exported_at):
        spool.write(piece.encode())
    if spool.tell() == 0:
        spool.close()
        return None
    spool.seek(0)
    return spool


def export_document(user_id: UUID, exported_at: datetime) -> Iterator[str]:
    """The user's export as JSON text, in pieces: account, chats with messages, memories with history, usage.

    One repeatable-read, read-only transaction makes it a consistent snapshot; it holds one pooled
    connection while the pieces are consumed (and gives it back if the consumer stops early). Nothing
    comes out when the account is gone.
    """
    with get_pool().connection() as conn, conn.transaction():
        sql.archive.read_only_snapshot(conn)
        account = sql.archive.export_account(conn, user_id=user_id)
        if account is None:
            return
        header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported_at": exported_at,
                  "account": {"id": account["id"], "email": account["email"], "created_at": account["created_at"],
                              "settings": {"memory_extraction": account["memory_extraction"]}}}
        yield encode(header)[:-1] + ', "chats": ['
        yield from exported_chats(conn, user_id)
        yield '], "memories": ['
        yield from exported_memories(conn, user_id)
        usage = sql.archive.export_usage(conn, user_id=user_id)
        yield '], "usage": ' + encode({
            "replies": {"messages": usage["replies"], "total_tokens": usage["reply_tokens"], "cost": usage["reply_cost"]},
            "memory": {"extractions": usage["extractions"], "total_tokens": usage["extraction_tokens"],
                       "cost": usage["extraction_cost"]},
        }) + "}\n"


def exported_chats(conn: psycopg.Connection, user_id: UUID) -> Iterator[str]:
    """Each live chat with its messages, one JSON piece per chat opening and per message."""
    current, first = None, True
    for row in cursor_rows(conn, "memlayer_export_messages", sql.archive.export_messages.sql, user_id):
        if row["chat_id"] != current:
            opening = encode({"id": row["chat_id"], "title": row["title"], "model": row["chat_model"],
                              "created_at": row["chat_created_at"], "updated_at": row["chat_updated_at"]})
            yield ("]}, " if current is not None else "") + opening[:-1] + ', "messages": ['
            current, first = row["chat_id"], True
        if row["id"] is None:
            continue  # a chat without messages
        usage = None
        if row["prompt_tokens"] is not None:
            usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
                     "cost": row["cost"] or 0}
        yield ("" if first else ", ") + encode({
            "id": row["id"], "role": row["role"], "content": row["content"], "model": row["model"],
            "usage": usage, "created_at": row["created_at"]})
        first = False
    if current is not None:
        yield "]}"


def exported_memories(conn: psycopg.Connection, user_id: UUID) -> Iterator[str]:
    """Each memory with its history, one JSON piece per memory."""
    memory = None
    for row in cursor_rows(conn, "memlayer_export_memories", sql.archive.export_memories.sql, user_id):
        if memory is not None and row["id"] != memory["id"]:
            yield encode(memory) + ", "
            memory = None
        if memory is None:
            memory = {"id": row["id"], "key": row["key"], "content": row["content"],
                      "created_at": row["created_at"], "updated_at": row["updated_at"], "history": []}
        if row["event"] is not None:
            memory["history"].append({"event": row["event"], "key": row["event_key"], "content": row["event_content"],
                                      "at": row["at"], "source": row["source"], "message_id": row["message_id"]})
    if memory is not None:
        yield encode(memory)


def cursor_rows(conn: psycopg.Connection, name: str, query: str, user_id: UUID) -> Iterator[dict]:
    """The rows of one user's query through a server-side cursor, CURSOR_BATCH at a time."""
    with conn.cursor(name=name) as cursor:
        cursor.itersize = CURSOR_BATCH
        cursor.execute(query, {"user_id": user_id})
        yield from cursor


def encode(value) -> str:
    """JSON of an export piece: times in ISO 8601, ids as text, amounts as numbers."""
    return json.dumps(value, default=_plain, ensure_ascii=False)


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot export a {type(value).__name__}")


def import_conversation(conn: psycopg.Connection, user_id: UUID, conversation: dict) -> dict:
    """Write one validated conversation (ChatImportSchema) as a new chat, on the caller's transaction; the chat.

    Messages keep their order and times; no model is asked and nothing is charged. Memories come with
    their history; a key the user already has keeps the user's memory.
    """
    messages = conversation["messages"]
    last_time = messages[-1]["created_at"] if messages else conversation["created_at"]
    chat = sql.archive.import_chat(conn, user_id=user_id, title=conversation["title"] or imported_title(conversation),
                                   created_at=conversation["created_at"], updated_at=last_time)
    # Usage and model belong to replies; given on a user's message, they are left out.
    usages = [(message["usage"] or {}) if message["role"] == "assistant" else {} for message in messages]
    sql.archive.import_messages(
        conn, user_id=user_id, chat_id=chat["id"],
        roles=[m["role"] for m in messages], contents=[m["content"] for m in messages],
        models=[m["model"] if m["role"] == "assistant" else None for m in messages],
        prompt_tokens=[u.get("prompt_tokens") for u in usages],
        completion_tokens=[u.get("completion_tokens") for u in usages],
        costs=[Decimal(str(u["cost"])) if "cost" in u else None for u in usages],
        times=[m["created_at"] for m in messages])
    for memory in conversation["memories"]:
        import_memory(conn, user_id, memory, default_time=conversation["created_at"])
    return chat


def import_memory(conn: psycopg.Connection, user_id: UUID, memory: dict, *, default_time: datetime) -> bool:
    """Write one validated memory (ImportMemorySchema) with its history; False when its key was taken."""
    created_at = memory["created_at"] or default_time
    history = memory["history"] or [{"event": "created", "key": memory["key"], "content": memory["content"],
                                     "at": created_at, "source": "import"}]
    saved = sql.archive.import_memory(
        conn, user_id=user_id, key=memory["key"], content=memory["content"], created_at=created_at,
        updated_at=memory["updated_at"] or created_at,
        events=[e["event"] for e in history], event_keys=[e["key"] for e in history],
        event_contents=[e["content"] for e in history], event_times=[e["at"] for e in history],
        sources=[e["source"] for e in history])
    return saved is not None


def imported_title(conversation: dict) -> str:
    """A title for a conversation that has none: when it began."""
    return f"Imported conversation of {conversation['created_at']:%Y-%m-%d %H:%M} UTC"


def queue_extraction(conn: psycopg.Connection, chat_id: UUID) -> int:
    """Queue memory extraction for every user message of an imported chat; how many."""
    rows = list(sql.archive.imported_user_messages(conn, chat_id=chat_id))
    for row in rows:
        sql.jobs.enqueue_extraction(conn, user_id=row["user_id"], message_id=row["id"])
    return len(rows)
