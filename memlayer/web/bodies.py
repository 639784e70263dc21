"""Request bodies sent in chunks: bounded by the same size limit as any other, and malformed chunks are a 400."""

import io

from flask import Flask, current_app, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge


def bound_chunked_body() -> None:
    """Read a chunked body (no Content-Length) up to MAX_CONTENT_LENGTH + 1 bytes: over it is a 413.

    Werkzeug stops a chunked stream at the limit without saying so, and the JSON then looked malformed (400).
    """
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    try:
        data = request.environ["wsgi.input"].read(limit + 1)
    except ParseException:
        raise BadRequest("Malformed request body: the chunked encoding is broken") from None
    if len(data) > limit:
        raise RequestEntityTooLarge()
    request.environ["wsgi.input"] = io.BytesIO(data)
    request.environ["CONTENT_LENGTH"] = str(len(data))


def init_app(app: Flask) -> None:
    """Bound chunked bodies before any view reads them."""
    app.before_request(bound_chunked_body)
