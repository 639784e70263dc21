"""Keyset pagination: opaque cursors, limit+1 fetches, and Link headers (rel="next", rel="prev")."""

import base64
import binascii
import json
from datetime import datetime
from typing import Callable
from uuid import UUID

from flask import jsonify, request, url_for

from memlayer.web.errors import ApiError
from memlayer.web.rendering import Renderer
from memlayer.web.schemas import MessagePageQuerySchema, PageQuerySchema, load_query

_page_query = PageQuerySchema()
_message_page_query = MessagePageQuerySchema()


def encode_cursor(position: list) -> str:
    """Turn a sort position into an opaque URL-safe token."""
    raw = json.dumps(position, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_cursor() -> ApiError:
    """The answer for a cursor this service did not issue."""
    return ApiError("Invalid cursor", status=422)


def decode_cursor(token: str, *parsers: Callable[[object], object]) -> list:
    """Recover a sort position from a token, one parser per value; 422 when it was not ours."""
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_cursor() from None
    if not isinstance(position, list) or len(position) != len(parsers):
        raise invalid_cursor()
    try:
        return [parse(value) for parse, value in zip(parsers, position)]
    except (TypeError, ValueError):
        raise invalid_cursor() from None


def cursor_timestamp(value: object) -> datetime:
    """A timestamp written by encode_cursor (an ISO 8601 string)."""
    if not isinstance(value, str):
        raise TypeError("timestamp must be a string")
    return datetime.fromisoformat(value)


def cursor_uuid(value: object) -> UUID:
    """An id written by encode_cursor (a UUID string)."""
    if not isinstance(value, str):
        raise TypeError("id must be a string")
    return UUID(value)


def cursor_seq(value: object) -> int:
    """A message sequence number (a non-negative bigint)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("seq must be an integer")
    if not 0 <= value < 2**63:
        raise ValueError("seq out of range")
    return value


def page_params() -> dict:
    """The validated ?limit= and ?cursor= of the current request."""
    return load_query(_page_query)


def message_page_params() -> dict:
    """The validated ?limit=, and at most one of ?before=, ?after= (message ids) and ?cursor=, of the request."""
    return load_query(_message_page_query)


def linked_page(page: list[dict], renderer: Renderer, links: dict[str, dict]):
    """Answer a bare JSON array with a Link header: rel -> the query parameters of that page of this endpoint."""
    response = jsonify(renderer.rows(page))
    if links:
        response.headers["Link"] = ", ".join(
            f'<{url_for(request.endpoint, **(request.view_args or {}), **params)}>; rel="{rel}"'
            for rel, params in links.items())
    return response


def page_response(rows: list[dict], limit: int, renderer: Renderer, position_of: Callable[[dict], list]):
    """Answer a bare JSON array of at most `limit` rows, linking the next page when there is one.

    `rows` holds up to limit + 1 rows: the extra one only proves that a next page exists.
    """
    page = rows[:limit]
    links = {"next": {"limit": limit, "cursor": encode_cursor(position_of(page[-1]))}} if len(rows) > limit else {}
    return linked_page(page, renderer, links)
