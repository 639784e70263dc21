"""Memory extraction, one job per user message: ask a model what to add, update or delete, then apply it.

Three short transactions around two slow calls, never holding a connection across them: read what the job
needs, embed the message and recall the memories most like it, ask the model (no connection held), then
apply the valid operations, record the usage and finish the job in one transaction.
"""

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from memlayer import config as settings
from memlayer.assistant import quota
from memlayer.assistant.catalog import ChatModel, chat_model, is_usable
from memlayer.assistant.responders import OPENAI, available_providers, responder_for
from memlayer.memory.embeddings import embed_memory, embed_quietly, embedder
from memlayer.memory.recall import similar_memories
from memlayer.providers.replies import Reply
from memlayer.storage.db import get_pool, sql
from memlayer.web.schemas import MAX_MEMORY_LENGTH

logger = logging.getLogger(__name__)

MAX_OPERATIONS = 20  # more than a message can teach; the rest of a longer answer is dropped

OPERATIONS_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "operations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": ["add", "update", "delete"]},
                    "id": {"type": ["string", "null"], "description": "for update and delete: an id from the list"},
                    "content": {"type": ["string", "null"], "description": "for add and update: the fact"},
                },
                "required": ["op", "id", "content"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["operations"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema",
                   "json_schema": {"name": "memory_operations", "strict": True, "schema": OPERATIONS_JSON_SCHEMA}}

INSTRUCTIONS = """You keep a short list of facts about a user, so that an assistant knows them in later chats.
Read the user's new message, with the conversation before it for context, and the memories already kept
that look related (each with an id). Then answer with the changes the new message calls for:
- "add" a fact the user states about themselves, their life, people, plans or preferences that is worth
  knowing later and is not in the list yet;
- "update" a listed memory (give its id) when the message changes or refines it: the content replaces it;
- "delete" a listed memory (give its id) when the message shows it is no longer true.
Write each fact as one short sentence in the third person ("User's sister is called Lucia"), with dates
spelled out when the message gives them. Learn only from what the user says, not from the assistant;
skip questions, greetings and small talk. When nothing is worth keeping, answer with no operations."""


class OperationSchema(Schema):
    """One operation of the model's answer."""

    op = fields.String(required=True, validate=validate.OneOf(["add", "update", "delete"]))
    id = fields.String(load_default=None, allow_none=True)
    content = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def complete(self, data, **kwargs):
        """add needs content, update needs an id and content, delete an id; content fits a memory."""
        if data["op"] in ("update", "delete") and not data["id"]:
            raise ValidationError("needs the id of a memory shown", "id")
        if data["op"] in ("add", "update"):
            content = (data["content"] or "").strip()
            if not content:
                raise ValidationError("needs content", "content")
            if len(content) > MAX_MEMORY_LENGTH:
                raise ValidationError("content over the memory size limit", "content")


_operation = OperationSchema()


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds: which message, whose, and which attempt (a lapsed claim applies nothing)."""

    id: int
    user_id: UUID
    message_id: UUID
    attempts: int


@dataclass(frozen=True)
class Operation:
    """A valid operation, with the shown id resolved to the memory's real id."""

    op: str
    memory_id: UUID | None
    content: str | None


def run_extraction(job: ClaimedJob) -> str:
    """Extract memories from the job's message and apply them; returns how it ended, in a few words.

    Raises what the model provider raises (the worker retries those later).
    """
    config = current_app.config
    now = quota.utc_now()
    with get_pool().connection() as conn, conn.transaction():
        source = sql.jobs.extraction_input(conn, job_id=job.id, period=quota.period_of(now))
        model = extraction_model(conn, source["chat_model"], config) if source else None
        skipped = reason_to_skip(source, model, config)
        if skipped:  # ended on this transaction: no model is asked
            sql.jobs.finish_job(conn, job_id=job.id, attempt=job.attempts, outcome=skipped)
            return skipped
        turns = list(sql.messages.messages_before(
            conn, user_id=job.user_id, chat_id=source["chat_id"], before_seq=source["seq"],
            limit=int(config["MEMORY_EXTRACTION_TURNS"])))[::-1]
    vector = embed_quietly(source["content"])  # no connection held: the provider may be slow
    with get_pool().connection() as conn:  # reads only: autocommit (storage/db.py)
        memories = similar_memories(conn, user_id=job.user_id, text=source["content"], vector=vector,
                                    limit=int(config["MEMORY_EXTRACTION_MEMORIES"]))
    shown = {f"m{n}": memory["id"] for n, memory in enumerate(memories, start=1)}
    prompt = extraction_prompt(source, turns, memories)

    reply = responder_for(OPENAI).reply(model.name, prompt, response_format=RESPONSE_FORMAT)  # no connection held

    operations = parse_operations(reply.content, shown, job.id)
    outcome, written = apply(job, operations, model, reply)
    if embedder() is not None:
        for memory in written:  # recall by meaning finds them at once (no connection held while embedding)
            embed_memory(job.user_id, memory)
    return outcome


def extraction_model(conn, chat_model_name: str, config) -> ChatModel | None:
    """The model extraction asks: MEMLAYER_MEMORY_MODEL, else the chat's own; None when none can be asked."""
    if OPENAI not in available_providers():
        return None
    name = config["MEMORY_MODEL"] or chat_model_name or settings.default_model(config)
    row = sql.models.get_model(conn, name=name)
    if row is None:
        if config["MEMORY_MODEL"] or name == settings.default_model(config):
            return ChatModel(name, OPENAI, int(config["LLM_CONTEXT_WINDOW"]), Decimal(0), Decimal(0))
        return None
    if row["provider"] != OPENAI or not is_usable(row):
        return None
    return chat_model(row, config)


def extraction_prompt(source: dict, turns: list[dict], memories: list[dict]) -> list[dict]:
    """The messages shown to the model: the instructions, then the turns, the memories and the new message."""
    earlier = "\n".join(f"{turn['role']}: {turn['content']}" for turn in turns) or "(none)"
    kept = "\n".join(f"{short_id}: {memory['content']}"
                     for short_id, memory in zip((f"m{n}" for n in range(1, len(memories) + 1)), memories)) or "(none)"
    said = (f"Conversation before the new message:\n{earlier}\n\nMemories kept (id: fact):\n{kept}\n\n"
            f"New message from the user ({source['created_at']:%Y-%m-%d}):\n{source['content']}")
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": said}]


def parse_operations(answer: str, shown: dict[str, UUID], job_id: int) -> list[Operation]:
    """The valid operations of the model's answer; anything else is dropped with a log line (never its text)."""
    try:
        body = json.loads(answer)
        raw = body["operations"]
        if not isinstance(raw, list):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        logger.warning("extraction job %s: the model's answer is not {\"operations\": [...]}; nothing applied", job_id)
        return []
    operations, touched = [], set()
    for index, item in enumerate(raw[:MAX_OPERATIONS]):
        try:
            data = _operation.load(item if isinstance(item, dict) else {})
        except ValidationError as error:
            logger.warning("extraction job %s: dropped operation %d (%s)", job_id, index, ", ".join(error.messages))
            continue
        memory_id = None
        if data["op"] != "add":
            memory_id = shown.get(data["id"])
            if memory_id is None:
                logger.warning("extraction job %s: dropped operation %d (an id that was not shown)", job_id, index)
                continue
            if memory_id in touched:
                logger.warning("extraction job %s: dropped operation %d (a memory already changed)", job_id, index)
                continue
            touched.add(memory_id)
        content = data["content"].strip() if data["op"] != "delete" else None
        operations.append(Operation(data["op"], memory_id, content))
    if len(raw) > MAX_OPERATIONS:
        logger.warning("extraction job %s: dropped %d operations over %d", job_id, len(raw) - MAX_OPERATIONS,
                       MAX_OPERATIONS)
    return operations


def apply(job: ClaimedJob, operations: list[Operation], model: ChatModel, reply: Reply) -> tuple[str, list[dict]]:
    """Apply the operations, bill the tokens and finish the job, in one transaction; a lapsed claim does nothing.

    Returns the outcome and the memories written (id, key, content).
    """
    now = quota.utc_now()
    written: list[dict] = []
    with get_pool().connection() as conn, conn.transaction():
        held = sql.jobs.lock_claimed_job(conn, job_id=job.id, attempt=job.attempts)
        if held is None:
            return "claim lapsed", []  # another worker has it now; it applies its own answer
        sql.usage.record_memory_usage(
            conn, user_id=job.user_id, message_id=job.message_id, model=model.name,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, cost=model.cost(reply),
            period=quota.period_of(now))
        if not held["chat_live"] or not held["memory_extraction"]:
            outcome = "turned off" if held["chat_live"] else "gone"
        else:
            outcome = apply_operations(conn, job, operations, written, adds_allowed=not held["forgotten_since"])
        sql.jobs.finish_job(conn, job_id=job.id, attempt=job.attempts, outcome=outcome)
    return outcome, written


def apply_operations(conn, job: ClaimedJob, operations: list[Operation], written: list[dict], *,
                     adds_allowed: bool) -> str:
    """Run the operations on the job's transaction, adding what they wrote to `written`; how many changed."""
    applied = skipped = 0
    for operation in operations:
        if operation.op == "add":
            if not adds_allowed:  # the user deleted memories after writing this message: do not write back
                skipped += 1
                continue
            changed = sql.memories.add_extracted_memory(conn, user_id=job.user_id, content=operation.content,
                                                        message_id=job.message_id)
        elif operation.op == "update":
            changed = sql.memories.update_extracted_memory(conn, user_id=job.user_id, memory_id=operation.memory_id,
                                                           content=operation.content, message_id=job.message_id)
        else:
            changed = sql.memories.delete_extracted_memory(conn, user_id=job.user_id, memory_id=operation.memory_id)
        if isinstance(changed, dict):
            written.append(changed)
        applied += 1 if changed else 0
    return f"applied {applied}" + (f", {skipped} adds skipped (memories deleted since)" if skipped else "")


def reason_to_skip(source: dict | None, model: ChatModel | None, config) -> str | None:
    """Why a job should end without asking a model (its message gone, extraction off, no model, over quota)."""
    if source is None:
        return "gone"  # message, chat or account deleted since
    if not settings.extraction_enabled(config) or not source["memory_extraction"]:
        return "turned off"
    if model is None:
        return "no model"
    monthly_quota = config["MONTHLY_TOKEN_QUOTA"]
    if monthly_quota is not None and source["tokens_used"] >= monthly_quota:
        return "over quota"
    return None
