"""The one place that turns every failure into a JSON {"detail": ...} answer."""

import logging

import psycopg
from flask import Flask, g, jsonify
from marshmallow import ValidationError
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"

# Short messages for Werkzeug's own errors (its defaults are long paragraphs).
HTTP_DETAILS = {
    400: "Bad request",
    401: "Not authenticated",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type: send Content-Type: application/json",
}


class ApiError(Exception):
    """An error answered with its status and detail; raise it from any layer."""

    status = 400

    def __init__(self, detail: str, *, status: int | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = headers or {}


class NotFound(ApiError):
    """The resource does not exist, is deleted, or belongs to someone else."""

    status = 404


class Conflict(ApiError):
    """The request clashes with the current state (e.g. an email already registered)."""

    status = 409


class Unauthorized(ApiError):
    """Credentials are missing or wrong."""

    status = 401


class ServiceUnavailable(ApiError):
    """A dependency is down or busy; the client should retry later."""

    status = 503

    def __init__(self, detail: str):
        super().__init__(detail, headers={"Retry-After": RETRY_AFTER_SECONDS})


class TooManyRequests(ApiError):
    """The client used up an allowance; Retry-After says when it renews."""

    status = 429

    def __init__(self, detail: str, *, retry_after_seconds: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after_seconds)))})


class ProviderFailed(ApiError):
    """The language model provider failed (error, refused connection, malformed answer); nothing was written."""

    status = 502


class ProviderTimedOut(ApiError):
    """The language model provider did not answer in time; nothing was written."""

    status = 504


def error_response(status: int, detail: str, headers: dict | None = None, **extra):
    """Build the JSON error answer used by every handler."""
    body = {"detail": detail, **extra}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_api_error(error: ApiError):
    """Answer our own errors."""
    return error_response(error.status, error.detail, error.headers)


def handle_http_exception(error: HTTPException):
    """Answer Werkzeug's errors (routing, JSON parsing, body size, ...) as JSON."""
    status = error.code or 500
    default = type(error).description
    if error.description and error.description != default:
        detail = error.description
    else:
        detail = HTTP_DETAILS.get(status, error.name)
    headers = {k: v for k, v in error.get_headers() if k.lower() in ("allow", "retry-after")}
    return error_response(status, detail, headers)


MAX_FIELDS_NAMED = 10  # a body of thousands of unknown keys gets a detail of bounded length


def handle_validation_error(error: ValidationError):
    """Answer marshmallow failures with 422: the first field's reason, then the other fields' names."""
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    fields = sorted(messages)
    detail = f"Invalid input: {fields[0]}: {first_reason(messages[fields[0]])}"
    others = fields[1:]
    if others:
        named = ", ".join(others[:MAX_FIELDS_NAMED])
        more = f" and {len(others) - MAX_FIELDS_NAMED} more" if len(others) > MAX_FIELDS_NAMED else ""
        detail += f" (also: {named}{more})"
    return error_response(422, detail, errors=messages)


def first_reason(message) -> str:
    """The first human-readable reason in a marshmallow message (a string, or lists and dicts of them)."""
    while not isinstance(message, str):
        if isinstance(message, dict) and message:
            key = sorted(message, key=str)[0]
            message = message[key]
        elif isinstance(message, (list, tuple)) and message:
            message = message[0]
        else:
            return "invalid"
    return message


def handle_pool_timeout(error: PoolTimeout):
    """No connection became free in time: tell the client to retry."""
    logger.warning("database pool exhausted: %s", type(error).__name__)
    return handle_api_error(ServiceUnavailable("Database unavailable or busy, please retry"))


def handle_operational_error(error: psycopg.OperationalError):
    """The database is unreachable, timed out, or gave up on a lock or serialization."""
    logger.warning("database unavailable (%s)", getattr(error, "sqlstate", None) or type(error).__name__, exc_info=error)
    return handle_api_error(ServiceUnavailable("Database unavailable, please retry"))


def handle_foreign_key_violation(error: pgerrors.ForeignKeyViolation):
    """A write lost a race with a delete: its user's account (401) or a row it points at (409) just went."""
    constraint = error.diag.constraint_name or ""
    logger.info("foreign key violation on %s", constraint)
    if constraint.endswith("_user_id_fkey"):
        return error_response(401, "Your account no longer exists")
    return error_response(409, "Something this request refers to was deleted meanwhile")


def handle_unique_violation(error: pgerrors.UniqueViolation):
    """A concurrent write won the race for a unique value."""
    logger.info("unique violation on %s", error.diag.constraint_name)
    return error_response(409, "Conflict with an existing resource")


def handle_data_error(error: psycopg.DataError):
    """A value PostgreSQL cannot store (e.g. a NUL byte) came from the client."""
    logger.info("data error: %s", type(error).__name__)
    return error_response(422, "Invalid input: a value cannot be stored")


def handle_unicode_error(error: UnicodeError):
    """Text that cannot be encoded (e.g. a lone surrogate from JSON) came from the client."""
    logger.info("unencodable text: %s", type(error).__name__)
    return error_response(422, "Invalid input: text is not valid Unicode")


def handle_unexpected(error: Exception):
    """Anything else is our bug: log the traceback, reveal nothing."""
    logger.exception("unhandled error")
    return error_response(500, "Internal server error", request_id=g.get("request_id"))


def init_app(app: Flask) -> None:
    """Register the handlers; Flask picks the most specific class for each error."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(PoolTimeout, handle_pool_timeout)
    app.register_error_handler(psycopg.OperationalError, handle_operational_error)
    app.register_error_handler(pgerrors.UniqueViolation, handle_unique_violation)
    app.register_error_handler(pgerrors.ForeignKeyViolation, handle_foreign_key_violation)
    app.register_error_handler(psycopg.DataError, handle_data_error)
    app.register_error_handler(UnicodeError, handle_unicode_error)
    app.register_error_handler(Exception, handle_unexpected)
