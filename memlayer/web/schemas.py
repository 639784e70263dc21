"""marshmallow schemas: they validate requests, shape responses, and feed the OpenAPI document."""

from datetime import datetime, timezone

from flask import request
from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    pre_dump,
    validate,
    validates_schema,
)

MAX_TITLE_LENGTH = 200
MAX_MODEL_NAME_LENGTH = 200
MAX_MESSAGE_LENGTH = 32_000
MAX_MEMORY_LENGTH = 4_000
MAX_MEMORY_KEY_LENGTH = 200
MAX_QUERY_LENGTH = 1_000
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
MAX_SEARCH_RESULTS = 50
DEFAULT_SEARCH_RESULTS = 10


class Text(fields.String):
    """A string PostgreSQL can store (no NUL), optionally trimmed, blank only when allowed."""

    def __init__(self, *args, strip: bool = True, allow_blank: bool = False, **kwargs):
        # The OpenAPI document says the same: no NUL, and (unless blank is allowed) some non-space character.
        pattern = r"^[^\u0000]*$" if allow_blank else r"^[^\u0000]*\S[^\u0000]*$"
        kwargs["metadata"] = {"pattern": pattern, **kwargs.get("metadata", {})}
        super().__init__(*args, **kwargs)
        self.strip = strip
        self.allow_blank = allow_blank

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON allows lone surrogates (\ud800); UTF-8 does not
            raise ValidationError("Must be valid Unicode text.") from None
        if not text.strip() and not self.allow_blank:
            raise ValidationError("Must not be blank.")
        return text.strip() if self.strip else text


# ---- requests -------------------------------------------------------------


class _CredentialsSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))

    @post_load
    def normalize_email(self, data, **kwargs):
        data["email"] = data["email"].strip().lower()
        return data


class RegisterSchema(_CredentialsSchema):
    """Body of POST /auth/register."""

    password = Text(required=True, strip=False, validate=validate.Length(min=8, max=1024))


class LoginSchema(_CredentialsSchema):
    """Body of POST /auth/login."""

    password = Text(required=True, strip=False, validate=validate.Length(max=1024))


class PatchSchema(Schema):
    """A PATCH body: every field optional, at least one given."""

    @validates_schema
    def require_a_change(self, data, **kwargs):
        if not data:
            raise ValidationError(f"Give at least one of: {', '.join(self.fields)}.", "_schema")


class Flag(fields.Boolean):
    """JSON true or false, nothing else (not 0, 1, "yes" or "false")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value


class UserUpdateSchema(PatchSchema):
    """Body of PATCH /auth/me: the user's settings."""

    memory_extraction = Flag(metadata={"description": "false: no memories are extracted from your messages"})


class ChatCreateSchema(Schema):
    """Body of POST /chats: both optional; no model (or null) means the service's default model."""

    title = Text(validate=validate.Length(max=MAX_TITLE_LENGTH))
    model = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_MODEL_NAME_LENGTH))


class ChatUpdateSchema(PatchSchema):
    """Body of PATCH /chats/{id}: a new title, a model (null: the service's default), or both."""

    title = Text(validate=validate.Length(max=MAX_TITLE_LENGTH))
    model = Text(allow_none=True, validate=validate.Length(max=MAX_MODEL_NAME_LENGTH))


class MessageCreateSchema(Schema):
    """Body of POST /chats/{id}/messages."""

    content = Text(required=True, strip=False, validate=validate.Length(max=MAX_MESSAGE_LENGTH))


class PageQuerySchema(Schema):
    """Query string of every list endpoint: ?limit=&cursor=."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(min=1))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))

    @post_load
    def clamp_limit(self, data, **kwargs):
        data["limit"] = min(data["limit"], MAX_PAGE_SIZE)
        return data


class MessagePageQuerySchema(PageQuerySchema):
    """Query string of GET /chats/{id}/messages: the latest page by default, or the page before or after a message."""

    before = fields.UUID(load_default=None, metadata={
        "description": "The page of messages just before this message's id (what rel=\"prev\" links to)."})
    after = fields.UUID(load_default=None, metadata={
        "description": "The messages just after this message's id, oldest first: to walk forward or to sync "
                       "the messages sent since the last one a client has."})

    @validates_schema
    def one_position(self, data, **kwargs):
        given = [name for name in ("before", "after", "cursor") if data.get(name) is not None]
        if len(given) > 1:
            raise ValidationError(f"give at most one of before, after and cursor, not {' and '.join(given)}",
                                  field_name="_schema")


class MemoryCreateSchema(Schema):
    """Body of POST /memories: with a key, an existing memory under that key is replaced."""

    content = Text(required=True, validate=validate.Length(max=MAX_MEMORY_LENGTH))
    key = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_MEMORY_KEY_LENGTH))


class MemoryUpdateSchema(PatchSchema):
    """Body of PATCH /memories/{id}: content, key (null removes it), or both."""

    content = Text(validate=validate.Length(max=MAX_MEMORY_LENGTH))
    key = Text(allow_none=True, validate=validate.Length(max=MAX_MEMORY_KEY_LENGTH))


class SearchQuerySchema(Schema):
    """Query string of GET /memories/search: ?q=&limit=."""

    class Meta:
        unknown = EXCLUDE

    q = Text(required=True, allow_blank=True, validate=validate.Length(max=MAX_QUERY_LENGTH))
    limit = fields.Integer(load_default=DEFAULT_SEARCH_RESULTS, validate=validate.Range(min=1))

    @post_load
    def clamp_limit(self, data, **kwargs):
        data["limit"] = min(data["limit"], MAX_SEARCH_RESULTS)
        return data


class SearchBodySchema(SearchQuerySchema):
    """Body of POST /memories/search: {q, limit?}, for a text longer than a URL carries."""

    class Meta:
        unknown = RAISE


class Instant(fields.DateTime):
    """An ISO 8601 date or date-time; without a zone it is UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("Must be an ISO 8601 date or date-time.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("Must be an ISO 8601 date or date-time.") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


MAX_IMPORT_MESSAGES = 10_000
MAX_IMPORT_MEMORIES = 1_000
MAX_IMPORT_HISTORY = 100
FUTURE_TOLERANCE_SECONDS = 300  # clocks differ: a time at most this far ahead is still "now"


class ImportUsageSchema(Schema):
    """What an imported reply used, as an export writes it (kept, never charged again)."""

    prompt_tokens = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10_000_000))
    completion_tokens = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10_000_000))
    cost = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=1_000_000))


class ImportMessageSchema(Schema):
    """One message of an imported conversation: who said it, what, and when (optional)."""

    id = fields.UUID(load_only=True, metadata={"description": "Ignored (the export's id); the chat gets new ids"})
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = Text(required=True, strip=False, validate=validate.Length(max=MAX_MESSAGE_LENGTH))
    created_at = Instant(load_default=None, metadata={"description": "Kept; missing: the previous message's time"})
    model = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_MODEL_NAME_LENGTH))
    usage = fields.Nested(ImportUsageSchema, load_default=None, allow_none=True)


class ImportMemoryEventSchema(Schema):
    """One version in an imported memory's history."""

    event = fields.String(required=True, validate=validate.OneOf(["created", "updated"]))
    key = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_MEMORY_KEY_LENGTH))
    content = Text(required=True, validate=validate.Length(max=MAX_MEMORY_LENGTH))
    at = Instant(required=True)
    source = fields.String(load_default="import", validate=validate.OneOf(["api", "extraction", "import"]))
    message_id = fields.UUID(load_default=None, allow_none=True, load_only=True,
                             metadata={"description": "Ignored: the message ids of the source are not kept"})


class ImportMemorySchema(Schema):
    """A memory to import, optionally keyed, with its times and history as an export writes them."""

    id = fields.UUID(load_only=True, metadata={"description": "Ignored (the export's id)"})
    key = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_MEMORY_KEY_LENGTH))
    content = Text(required=True, validate=validate.Length(max=MAX_MEMORY_LENGTH))
    created_at = Instant(load_default=None)
    updated_at = Instant(load_default=None)
    history = fields.List(fields.Nested(ImportMemoryEventSchema), load_default=list,
                          validate=validate.Length(max=MAX_IMPORT_HISTORY))


class ChatImportSchema(Schema):
    """Body of POST /chats/import: one conversation in the shape an export writes a chat (plus memories)."""

    id = fields.UUID(load_only=True, metadata={"description": "Ignored (the export's id)"})
    title = Text(load_default=None, validate=validate.Length(max=MAX_TITLE_LENGTH))
    model = Text(load_default=None, allow_none=True, load_only=True,
                 metadata={"description": "Ignored: the imported chat answers with the service's default model"})
    created_at = Instant(load_default=None)
    updated_at = Instant(load_default=None, load_only=True, metadata={"description": "Ignored: the last message's"})
    messages = fields.List(fields.Nested(ImportMessageSchema), required=True,
                           validate=validate.Length(max=MAX_IMPORT_MESSAGES))
    memories = fields.List(fields.Nested(ImportMemorySchema), load_default=list,
                           validate=validate.Length(max=MAX_IMPORT_MEMORIES))

    @post_load
    def settle_times(self, data, **kwargs):
        """Give every message a time (the previous one's, else the chat's, else now); refuse times that go
        back or lie ahead."""
        now = datetime.now(timezone.utc)
        if not data["messages"]:
            data["created_at"] = data["created_at"] or now
            if data["created_at"].timestamp() > now.timestamp() + FUTURE_TOLERANCE_SECONDS:
                raise ValidationError("Times must not lie in the future.", "created_at")
            return data
        latest = data["created_at"] or data["messages"][0]["created_at"] or now
        errors = {}
        for index, message in enumerate(data["messages"]):
            given = message["created_at"]
            if given is not None and given < latest and index > 0:
                errors[str(index)] = {"created_at": ["Must not be earlier than the message before it."]}
            latest = given or latest
            message["created_at"] = latest
        if data["created_at"] is not None and data["messages"][0]["created_at"] < data["created_at"]:
            errors.setdefault("0", {})["created_at"] = ["Must not be earlier than the chat's created_at."]
        if latest.timestamp() > now.timestamp() + FUTURE_TOLERANCE_SECONDS:
            raise ValidationError("Times must not lie in the future.", "messages")
        if errors:
            raise ValidationError({"messages": errors})
        data["created_at"] = data["created_at"] or data["messages"][0]["created_at"]
        return data


class UsageQuerySchema(Schema):
    """Query string of GET /usage: ?from=&to= (from inclusive, to exclusive; default: this month so far)."""

    class Meta:
        unknown = EXCLUDE

    start = Instant(data_key="from", load_default=None)
    end = Instant(data_key="to", load_default=None)


# ---- responses ------------------------------------------------------------


class TokenSchema(Schema):
    """Tokens issued by register, login and refresh."""

    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "bearer"})
    refresh_token = fields.String(required=True)


class UserSchema(Schema):
    """The authenticated user."""

    id = fields.UUID(required=True)
    email = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    memory_extraction = fields.Boolean(
        required=True, metadata={"description": "Whether memories are extracted from this user's messages"})


class ChatSchema(Schema):
    """A chat."""

    id = fields.UUID(required=True)
    title = fields.String(required=True)
    model = fields.String(required=True, allow_none=True,
                          metadata={"description": "null: the service's default model"})
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)


class MessageSchema(Schema):
    """One message of a chat."""

    id = fields.UUID(required=True)
    chat_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = fields.String(required=True)
    model = fields.String(required=True, allow_none=True, metadata={"description": "The model that wrote a reply"})
    usage = fields.Nested(lambda: MessageUsageSchema(), required=True, allow_none=True,
                          metadata={"description": "What a reply cost; null on the user's messages"})
    created_at = fields.AwareDateTime(required=True)

    @pre_dump
    def gather_usage(self, row, **kwargs):
        usage = None
        if row.get("prompt_tokens") is not None:
            usage = {key: row[key] for key in ("prompt_tokens", "completion_tokens", "cost")}
        return {**row, "usage": usage}


class MessageUsageSchema(Schema):
    """Tokens and cost of one reply (the provider's token counts, or an estimate when it gives none)."""

    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    cost = fields.Float(required=True, metadata={"description": "At the model's prices when it answered"})


class ModelSchema(Schema):
    """A language model a chat can use."""

    id = fields.UUID(required=True)
    name = fields.String(required=True)
    provider = fields.String(required=True, validate=validate.OneOf(["offline", "openai"]))
    context_window = fields.Integer(required=True)
    input_price_per_million = fields.Float(required=True)
    output_price_per_million = fields.Float(required=True)
    is_enabled = fields.Boolean(required=True)
    is_default = fields.Boolean(required=True, metadata={"description": "Used by chats that chose no model"})


class UsageTotalsSchema(Schema):
    """Replies, tokens and cost summed over a time range."""

    messages = fields.Integer(required=True)
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)
    cost = fields.Float(required=True)


class ModelUsageSchema(UsageTotalsSchema):
    """A user's usage of one model over a time range."""

    model = fields.String(required=True)


class QuotaSchema(Schema):
    """The monthly token quota and how much of it is used."""

    monthly_tokens = fields.Integer(required=True)
    used = fields.Integer(required=True)
    renews_at = fields.AwareDateTime(required=True)


class MemoryUsageSchema(Schema):
    """Tokens and cost that memory extraction spent over a time range (counted in the quota too)."""

    extractions = fields.Integer(required=True)
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)
    cost = fields.Float(required=True)


class UsageSchema(Schema):
    """GET /usage: reply totals per model in [from, to), memory extraction's, and the quota when one is set."""

    start = fields.AwareDateTime(data_key="from", required=True)
    end = fields.AwareDateTime(data_key="to", required=True)
    models = fields.List(fields.Nested(ModelUsageSchema), required=True)
    total = fields.Nested(UsageTotalsSchema, required=True)
    memory = fields.Nested(MemoryUsageSchema, required=True)
    quota = fields.Nested(QuotaSchema, required=True, allow_none=True)


class MemorySchema(Schema):
    """A curated memory: a fact the user or a client wants kept."""

    id = fields.UUID(required=True)
    key = fields.String(required=True, allow_none=True)
    content = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)


class MemoryEventSchema(Schema):
    """One change in a memory's history."""

    event = fields.String(required=True, validate=validate.OneOf(["created", "updated"]))
    key = fields.String(required=True, allow_none=True)
    content = fields.String(required=True)
    at = fields.AwareDateTime(required=True)
    source = fields.String(required=True, validate=validate.OneOf(["api", "extraction", "import"]),
                           metadata={"description": "Who wrote this version: a client, or extraction from a message"})
    message_id = fields.UUID(required=True, allow_none=True,
                             metadata={"description": "For extraction: the user message it was learned from"})


class ExportSettingsSchema(Schema):
    """An account's settings in an export."""

    memory_extraction = fields.Boolean(required=True)


class ExportAccountSchema(Schema):
    """The account in an export."""

    id = fields.UUID(required=True)
    email = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    settings = fields.Nested(ExportSettingsSchema, required=True)


class ExportMessageUsageSchema(Schema):
    """What one reply used."""

    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    cost = fields.Float(required=True)


class ExportMessageSchema(Schema):
    """A message in an export."""

    id = fields.UUID(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = fields.String(required=True)
    model = fields.String(required=True, allow_none=True)
    usage = fields.Nested(ExportMessageUsageSchema, required=True, allow_none=True)
    created_at = fields.AwareDateTime(required=True)


class ExportChatSchema(ChatSchema):
    """A live chat in an export, with every message in order."""

    messages = fields.List(fields.Nested(ExportMessageSchema), required=True)


class ExportMemorySchema(MemorySchema):
    """A memory in an export, with its whole history."""

    history = fields.List(fields.Nested(MemoryEventSchema), required=True)


class ExportTotalsSchema(Schema):
    """Tokens and cost of one kind of model use, all time."""

    messages = fields.Integer(metadata={"description": "Replies (under replies)"})
    extractions = fields.Integer(metadata={"description": "Extractions (under memory)"})
    total_tokens = fields.Integer(required=True)
    cost = fields.Float(required=True)


class ExportUsageSchema(Schema):
    """All-time usage in an export."""

    replies = fields.Nested(ExportTotalsSchema, required=True)
    memory = fields.Nested(ExportTotalsSchema, required=True)


class ExportSchema(Schema):
    """GET /auth/me/export: everything of the user, as one document (streamed)."""

    format = fields.String(required=True, validate=validate.OneOf(["memlayer-export"]))
    version = fields.Integer(required=True)
    exported_at = fields.AwareDateTime(required=True)
    account = fields.Nested(ExportAccountSchema, required=True)
    chats = fields.List(fields.Nested(ExportChatSchema), required=True)
    memories = fields.List(fields.Nested(ExportMemorySchema), required=True)
    usage = fields.Nested(ExportUsageSchema, required=True)


class RecallItemSchema(Schema):
    """One search result: a past message of the user's (with its chat) or a curated memory."""

    source = fields.String(required=True, validate=validate.OneOf(["message", "memory"]))
    id = fields.UUID(required=True)
    chat_id = fields.UUID(metadata={"description": "Only for messages"})
    content = fields.String(required=True)
    score = fields.Float(required=True)
    created_at = fields.AwareDateTime(required=True)

    @post_dump
    def drop_chat_of_memories(self, data, **kwargs):
        if data.get("chat_id") is None:
            data.pop("chat_id", None)
        return data


class DeletedSchema(Schema):
    """How many rows a bulk delete removed."""

    deleted = fields.Integer(required=True)


class HealthSchema(Schema):
    """Liveness and database reachability."""

    status = fields.String(required=True)
    version = fields.String(required=True)
    database = fields.String(required=True)


class ErrorSchema(Schema):
    """Every error answer."""

    detail = fields.String(required=True)
    errors = fields.Dict()
    request_id = fields.String()


MAX_UNKNOWN_FIELDS = 20  # a body with more keys than a schema has, beyond this, is refused before validation


def load_body(schema: Schema, *, empty_ok: bool = False) -> dict:
    """Parse the JSON body and validate it (400/415 for bad JSON, 422 for bad fields)."""
    if empty_ok and not request.get_data(cache=True):
        return schema.load({})
    body = request.get_json()
    if isinstance(body, dict) and len(body) > len(schema.fields) + MAX_UNKNOWN_FIELDS:
        # Validating 95,000 unknown keys took 0.8 s and answered 3.2 MB naming each: stop at once instead.
        raise ValidationError(f"{len(body)} fields where at most {len(schema.fields)} are known",
                              field_name="_schema")
    return schema.load(body)


def load_query(schema: Schema) -> dict:
    """Validate the query string."""
    return schema.load(request.args.to_dict())
