"""Request bodies: read whole before any view runs, within the size limit and a deadline; bad chunks are a 400."""

import io

from flask import Flask, current_app, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from memlayer.web.cooperative import DeadlinePassed, deadline
from memlayer.web.errors import ApiError


def read_body_in_time() -> None:
    """Read the body (at most MAX_CONTENT_LENGTH + 1 bytes) within BODY_TIMEOUT seconds, before the view runs.

    A client that sends its body a byte at a time gets a 408 instead of holding the request open for as long
    as it likes. Werkzeug stops a chunked stream at the size limit without saying so (the JSON then looked
    malformed), so a chunked body is measured here: over the limit is a 413.
    """
    length = request.content_length
    chunked = length is None and request.environ.get("wsgi.input_terminated")
    if not chunked and not length:
        return
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    seconds = float(current_app.config["BODY_TIMEOUT"])
    try:
        with deadline(seconds):
            data = request.environ["wsgi.input"].read(limit + 1 if chunked else length)
    except DeadlinePassed:
        raise ApiError(f"The request body did not arrive within {seconds:g} s", status=408) from None
    except ParseException:
        raise BadRequest("Malformed request body: the chunked encoding is broken") from None
    if len(data) > limit:
        raise RequestEntityTooLarge()
    request.environ["wsgi.input"] = io.BytesIO(data)
    request.environ["CONTENT_LENGTH"] = str(len(data))


def init_app(app: Flask) -> None:
    """Read bodies before any view does."""
    app.before_request(read_body_in_time)
