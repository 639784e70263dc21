"""marshmallow schemas: they validate requests, shape responses, and feed the OpenAPI document."""

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_dump, post_load, validate, validates_schema

MAX_TITLE_LENGTH = 200
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


class ChatCreateSchema(Schema):
    """Body of POST /chats."""

    title = Text(validate=validate.Length(max=MAX_TITLE_LENGTH))


class ChatUpdateSchema(Schema):
    """Body of PATCH /chats/{id}."""

    title = Text(required=True, validate=validate.Length(max=MAX_TITLE_LENGTH))


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


class MemoryCreateSchema(Schema):
    """Body of POST /memories: with a key, an existing memory under that key is replaced."""

    content = Text(required=True, validate=validate.Length(max=MAX_MEMORY_LENGTH))
    key = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_MEMORY_KEY_LENGTH))


class MemoryUpdateSchema(Schema):
    """Body of PATCH /memories/{id}: content, key (null removes it), or both."""

    content = Text(validate=validate.Length(max=MAX_MEMORY_LENGTH))
    key = Text(allow_none=True, validate=validate.Length(max=MAX_MEMORY_KEY_LENGTH))

    @validates_schema
    def require_a_change(self, data, **kwargs):
        if not data:
            raise ValidationError("Give content, key, or both.", "_schema")


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


# ---- responses ------------------------------------------------------------


class TokenSchema(Schema):
    """Tokens issued by register and login."""

    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "bearer"})
    refresh_token = fields.String(required=True)


class AccessTokenSchema(Schema):
    """A fresh access token issued by refresh."""

    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "bearer"})


class UserSchema(Schema):
    """The authenticated user."""

    id = fields.UUID(required=True)
    email = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)


class ChatSchema(Schema):
    """A chat."""

    id = fields.UUID(required=True)
    title = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)


class MessageSchema(Schema):
    """One message of a chat."""

    id = fields.UUID(required=True)
    chat_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)


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


def load_body(schema: Schema, *, empty_ok: bool = False) -> dict:
    """Parse the JSON body and validate it (400/415 for bad JSON, 422 for bad fields)."""
    if empty_ok and not request.get_data(cache=True):
        return schema.load({})
    return schema.load(request.get_json())


def load_query(schema: Schema) -> dict:
    """Validate the query string."""
    return schema.load(request.args.to_dict())
