"""Errors gunicorn answers itself, before the app sees a request (414, 431, a malformed request line), as JSON."""

import json

from gunicorn import util


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error page, as {"detail": <reason>}: never the client's bytes that gunicorn's message quotes."""
    body = json.dumps({"detail": reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Make gunicorn write its own errors with write_json_error (its workers look the function up per error)."""
    util.write_error = write_json_error
