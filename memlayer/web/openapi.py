"""The OpenAPI 3 document, built from the app's routes and the marshmallow schemas that validate them."""

import re
from dataclasses import dataclass, field

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

from memlayer.version import __version__
from memlayer.web import schemas


@dataclass(frozen=True)
class Operation:
    """What the document says about one endpoint beyond its path, method and docstring."""

    tag: str
    status: int = 200
    response: type[Schema] | None = None
    many: bool = False
    body: type[Schema] | None = None
    auth: str | None = "access"  # "access", "refresh", "any" or None
    paginated: bool = False
    query: type[Schema] | None = None
    also: tuple[tuple[int, str], ...] = ()  # further success statuses with the same body
    event_stream: bool = False  # also answers Server-Sent Events (200) to `Accept: text/event-stream`
    errors: tuple[int, ...] = field(default_factory=tuple)
    idempotent: bool = False  # honours an Idempotency-Key header
    body_required: bool = True  # False: no body at all means every field's default


# Keyed by Flask endpoint; a test checks that every API route has an entry.
OPERATIONS: dict[str, Operation] = {
    "auth.register": Operation("auth", 201, schemas.TokenSchema, body=schemas.RegisterSchema, auth=None, errors=(409, 422, 429)),
    "auth.login": Operation("auth", 200, schemas.TokenSchema, body=schemas.LoginSchema, auth=None, errors=(401, 422, 429)),
    "auth.refresh": Operation("auth", 200, schemas.TokenSchema, auth="refresh"),
    "auth.logout": Operation("auth", 204, auth="any"),
    "auth.me": Operation("auth", 200, schemas.UserSchema),
    "auth.export_me": Operation("auth", 200, schemas.ExportSchema, errors=(404,)),
    "auth.update_me": Operation("auth", 200, schemas.UserSchema, body=schemas.UserUpdateSchema, errors=(404, 422)),
    "chats.list_chats": Operation("chats", 200, schemas.ChatSchema, many=True, paginated=True),
    "chats.create_chat": Operation("chats", 201, schemas.ChatSchema, body=schemas.ChatCreateSchema, errors=(422,),
                                   idempotent=True, body_required=False),
    "chats.import_chat": Operation("chats", 201, schemas.ChatSchema, body=schemas.ChatImportSchema, errors=(422,),
                                   idempotent=True),
    "chats.get_chat": Operation("chats", 200, schemas.ChatSchema, errors=(404,)),
    "chats.update_chat": Operation("chats", 200, schemas.ChatSchema, body=schemas.ChatUpdateSchema, errors=(404, 422)),
    "chats.delete_chat": Operation("chats", 204, errors=(404,)),
    "messages.list_messages": Operation("messages", 200, schemas.MessageSchema, many=True, paginated=True, errors=(404,),
                                        query=schemas.MessagePageQuerySchema),
    "messages.send_message": Operation("messages", 201, schemas.MessageSchema, body=schemas.MessageCreateSchema,
                                       errors=(404, 409, 429, 502, 504), event_stream=True, idempotent=True),
    "models.list_models": Operation("models", 200, schemas.ModelSchema, many=True),
    "usage.usage": Operation("usage", 200, schemas.UsageSchema, query=schemas.UsageQuerySchema, errors=(422,)),
    "auth.delete_me": Operation("auth", 204, errors=(404,)),
    "memories.list_memories": Operation("memories", 200, schemas.MemorySchema, many=True, paginated=True),
    "memories.save_memory": Operation("memories", 201, schemas.MemorySchema, body=schemas.MemoryCreateSchema,
                                      also=((200, "Replaced the content of the memory with this key"),)),
    "memories.delete_all_memories": Operation("memories", 200, schemas.DeletedSchema),
    "memories.search": Operation("memories", 200, schemas.RecallItemSchema, many=True, query=schemas.SearchQuerySchema,
                                 errors=(422,)),
    "memories.search_by_body": Operation("memories", 200, schemas.RecallItemSchema, many=True,
                                         body=schemas.SearchBodySchema, errors=(422,)),
    "memories.get_memory": Operation("memories", 200, schemas.MemorySchema, errors=(404,)),
    "memories.update_memory": Operation("memories", 200, schemas.MemorySchema, body=schemas.MemoryUpdateSchema,
                                        errors=(404, 409)),
    "memories.delete_memory": Operation("memories", 204, errors=(404,)),
    "memories.memory_history": Operation("memories", 200, schemas.MemoryEventSchema, many=True, errors=(404,)),
    "health.health": Operation("health", 200, schemas.HealthSchema, auth=None, errors=(503,)),
    "health.db_pool": Operation("health", 200, auth=None, errors=(401, 404)),  # the operator token, not a user's
}

SSE_DESCRIPTION = (
    "With `Accept: text/event-stream`: Server-Sent Events. `event: delta` with {\"content\"} per piece of the "
    "reply, then `event: message` with the stored assistant Message, or `event: error` with {\"detail\", "
    "\"status\"} when it failed (nothing is stored then)."
)

IDEMPOTENCY = (
    "Makes a retry safe: the same key with the same body within 24 hours replays the first success byte for "
    "byte (header Idempotent-Replayed: true) and writes nothing; another body is 422; while the first request "
    "still runs, 409 with Retry-After. A failed request frees its key."
)

# /metrics answers Prometheus's text format to the operator token (README, "Operating it").
DOCUMENTED_ELSEWHERE = {"static", "docs.openapi_json", "docs.docs_page", "docs.docs_asset", "metrics.metrics"}

_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """Flask's /chats/<uuid:chat_id> becomes OpenAPI's /chats/{chat_id}."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def build_spec(app: Flask) -> dict:
    """The whole OpenAPI document as a dict."""
    spec = APISpec(
        title="MemLayer",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Chat and memory backend for LLM assistants. Errors are always {\"detail\": ...}."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            continue
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        view = app.view_functions[rule.endpoint]
        spec.path(
            path=openapi_path(rule.rule),
            operations={method.lower(): _describe(rule, view, operation) for method in methods},
        )
    return spec.to_dict()


def _describe(rule, view, operation: Operation) -> dict:
    described: dict = {
        "tags": [operation.tag],
        "summary": (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else rule.endpoint,
        "operationId": rule.endpoint.replace(".", "_"),
        "responses": {},
    }
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string", "format": "uuid"}}
        for name in rule.arguments
    ]
    if operation.paginated and operation.query is None:
        parameters.append({"in": "query", "schema": schemas.PageQuerySchema})
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    if operation.idempotent:
        parameters.append({"in": "header", "name": "Idempotency-Key", "required": False, "description": IDEMPOTENCY,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}})
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        body = operation.body
        if issubclass(body, schemas.PatchSchema):
            body = {"allOf": [body], "minProperties": 1}  # a PATCH must change something
        described["requestBody"] = {"required": operation.body_required,
                                    "content": {"application/json": {"schema": body}}}
    success: dict = {"description": "Success"}
    if operation.response is not None:
        body_schema = {"type": "array", "items": operation.response} if operation.many else operation.response
        success["content"] = {"application/json": {"schema": body_schema}}
    elif operation.status != 204:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    if operation.paginated:
        success["headers"] = {
            "Link": {"description": 'URLs of the neighbouring pages: <...>; rel="next" (newer messages, or the '
                                    'next page of a list), and on message pages <...>; rel="prev" (older '
                                    'messages); each absent when there is no such page',
                     "schema": {"type": "string"}}
        }
    described["responses"][str(operation.status)] = success
    for status, description in operation.also:
        described["responses"][str(status)] = {**success, "description": description}
    if operation.event_stream:
        described["responses"]["200"] = {
            "description": SSE_DESCRIPTION,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    # Every endpoint reads the database (tokens are checked against revocations): it may be down or busy.
    error_statuses = set(operation.errors) | {503}
    if operation.idempotent:
        error_statuses.update({400, 409, 422})
    if operation.auth:
        described["security"] = [{"bearer": []}]
        error_statuses.add(401)
    if operation.body is not None:
        error_statuses.update({400, 413, 415, 422})
    if operation.paginated or operation.query is not None:
        error_statuses.add(422)
    for status in sorted(error_statuses):
        described["responses"][str(status)] = {
            "description": "Error",
            "content": {"application/json": {"schema": "Error"}},
        }
    if operation.paginated or operation.query is not None:
        # gunicorn refuses a request line over 8190 bytes before the app sees it (in JSON: web/server_errors.py).
        described["responses"]["414"] = {"description": "URI too long (answered by gunicorn)",
                                         "content": {"application/json": {"schema": "Error"}}}
    return described
